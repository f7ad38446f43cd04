"""One driver session over a run directory: GA replay, the jobs still to run, and recording.

A resumed session re-runs only what is missing: each GA is rebuilt from the schedule and seed
(individuals depend only on seed, optimizer, generation, index and mean) and the recorded
fitness values are told back to it generation by generation. Another searcher (the schedule's
`search.searcher`: random, tpe, cmaes; `tuner.search.optuna`) has the same ask/tell interface, a round
of trials standing for a generation, and is replayed the same way.

Fitness is the schedule's `objective` (`_fitness`): the trial's final training loss (the paper's), or
a metric of the task's `evaluate()` after the trial, negated when maximised. A trial that raised is an
error (recorded with its traceback, ranked last), never a divergence. An optimizer most of whose
trials of one generation raised stops there (`_fail`): it is not tuned, tuned.json holds it under
"failed" with the first error, and a resumed session runs that generation's errored trials again
(a generation that was told never had most of its trials raise, so replay stays exact). A full
run that raised runs again on resume too; most of an optimizer's full runs raising fails it likewise.
After each generation the noise check (`tuner.driver.noise`) re-runs its best on another seed.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Callable, Mapping

from tuner.driver import noise
from tuner.trial.loop import BatchJob, Job, batchable
from tuner.search import Searcher
from tuner.search.ga import GeneticAlgorithm
from tuner.report.results import summarise_full
from tuner.driver.rundir import RunDir, RunDirError
from tuner.driver.schedule import Schedule, space_for, trial_hparams
from tuner.search.optuna import SamplerSearch, budget, rounds
from tuner.search.space import bounded_space, ga_keywords
from tuner.trial.prune import points, thresholds

ProgressFn = Callable[[dict], None]
logger = logging.getLogger(__name__)


def full_run_seed(seed: int, index: int) -> int:
    """Trial seed of full run `index`: seeds 0..7 for the default tuner seed 0."""
    return 1000 * seed + index


def scale_lr(hparams: Mapping[str, float], lr_scale: float) -> dict[str, float]:
    """Post-tuning learning-rate scaling (×0.5 for image_generation, docs/paper.md §3)."""
    return {k: (v * lr_scale if k == "lr" else v) for k, v in hparams.items()}


class Session:
    """`start` gives the first jobs; `on_result` records a result and returns the jobs it unlocks
    (the next generation; with `full_runs`, an optimizer's full runs once it is tuned).

    Batching (`batch` True, set by `tuner.driver.api.run_plan` with the executor's `workers`): the jobs of
    a generation, and an optimizer's full runs, are made in one place (`_batched`), which groups
    the `batchable` ones into `BatchJob`s, one batched trial each (see `_batched` for the rule)."""

    workers = 1      # the executor's worker slots (the chunking rule's budget)
    batch = False    # group batchable jobs into BatchJobs (api: Resources.batch, default on)

    def __init__(self, rd: RunDir, schedule: Schedule, seed: int = 0, *, full_runs: bool = True,
                 progress: ProgressFn | None = None, task=None):
        self.rd, self.schedule, self.seed, self.full_runs = rd, schedule, seed, full_runs
        self.task = schedule.task if task is None else task  # what jobs carry: a TaskSpec's `ref`
        self.progress = progress or (lambda event: None)
        self.gas: dict[str, Searcher] = {}  # each optimizer's searcher (GeneticAlgorithm or SamplerSearch)
        self.partial: dict[str, dict[int, float]] = {}   # fitness of the current generation so far
        self.hyperparameters: dict[str, dict[str, float]] = {}
        self.raw: dict[str, dict[str, float]] = {}
        self.reused = self.ran = self.errors = 0
        self.retried = 0                                # jobs the environment failed before they finished
        self.full_reused = self.full_ran = 0
        self.full_left: dict[str, int] = {}             # optimizer -> full runs still to finish
        self.generation_started: dict[str, float] = {}  # optimizer -> when its jobs were issued (run log)
        self.errored: dict[str, dict[int, dict]] = {}   # the current generation's records that raised
        self.failed: dict[str, dict] = {}               # optimizer -> why it stopped (`_fail`)
        self.noise_ran = 0                              # noise checks run (tuner.driver.noise; not in `ran`)
        self._marks: dict[tuple, list] = {}             # (optimizer, generation) -> prune thresholds

    def start(self, optimizers, given: Mapping[str, Mapping[str, float]] | None = None) -> list[Job]:
        """The first jobs: each optimizer's GA, or (with `given` hyperparameters) its full runs."""
        if given is None:
            if self.schedule.search.searcher != "ga":  # what the searcher gets, before it starts
                logger.info("searcher %s", budget(self.schedule))
            if not self.schedule.objective.is_train_loss:
                logger.info("objective: %s of the task's evaluate() after each trial",
                            self.schedule.objective.describe())
            return [job for o in optimizers for job in self.start_ga(o)]
        return [job for o in optimizers for job in self.start_full(o, given[o])] if self.full_runs else []

    def on_result(self, job: Job, result: dict) -> list[Job]:
        if isinstance(job, BatchJob):
            return self._batch_result(job, result)
        return self._tuning_result(job, result) if job.kind == "tuning" else self._full_result(job, result)

    def report(self, optimizers) -> dict:
        return {o: summarise_full(self.rd.full_runs(o)) for o in optimizers}

    def _job(self, key: tuple, optimizer: str, hparams, steps: int, seed: int, **kw) -> Job:
        objective, recipe = self.schedule.objective, self.schedule.recipe.get(optimizer)
        return Job(key=key, task=self.task, optimizer=optimizer, hparams=dict(hparams), steps=steps,
                   seed=seed, task_options=dict(self.schedule.task_options),
                   metric=None if objective.is_train_loss else objective.metric,
                   **({"recipe": recipe} if recipe else {}), **kw)

    def _fitness(self, result: dict) -> float:
        """What the searchers minimise: the final training loss (the paper's objective), or the
        objective's metric of `evaluate()` (negated for mode max); +inf for an error or divergence."""
        if "error" in result or result.get("pruned"):  # a pruned trial ranks below every finished one
            return math.inf
        objective = self.schedule.objective
        if objective.is_train_loss:
            return float(result["final_loss"])
        value = (result.get("held_out") or {}).get(objective.metric)
        if result.get("diverged") or value is None or not math.isfinite(value):
            return math.inf
        return -float(value) if objective.mode == "max" else float(value)

    def _record_retries(self, result: dict, record: dict) -> None:
        """The environmental failures before this result (`Executor.run`), never part of its fitness."""
        if result.get("retries"):
            self.retried += 1
            record["retries"] = list(result["retries"])

    def _record_error(self, optimizer: str, name: str, result: dict, record: dict) -> None:
        self.errors += 1
        path = self.rd.write_error(optimizer, name, result["error"])
        record.update(error=result["error"].strip().splitlines()[-1], traceback=str(path.relative_to(self.rd.path)))
        self.rd.log.write("trial_error", optimizer=optimizer, trial=name, error=record["error"],
                          traceback=record["traceback"])
        logger.warning("%s %s raised %s (traceback: %s)", optimizer, name, record["error"], path)

    # -- tuning --------------------------------------------------------------------------------
    def start_ga(self, optimizer: str) -> list[Job]:
        space = space_for(self.schedule, optimizer)
        if not space:  # meta-trained offline (L2LBGDBGD): nothing for the GA to tune
            return self._record_tuned(optimizer, {})
        searcher = self.schedule.search.searcher
        if searcher == "ga":
            self.gas[optimizer] = GeneticAlgorithm(space, list(self.schedule.generations), self.schedule.population,
                                                   seed=self.seed, name=optimizer,
                                                   **ga_keywords(self.schedule, optimizer))
        else:
            self.gas[optimizer] = SamplerSearch(searcher, bounded_space(self.schedule, optimizer),
                                               rounds(self.schedule), seed=self.seed, name=optimizer)
        return self._advance(optimizer)

    def _advance(self, optimizer: str) -> list[Job]:
        """Replay recorded generations; return the jobs of the first incomplete one (or full runs)."""
        ga = self.gas[optimizer]
        checks: list[Job] = []  # noise checks of the generations replayed without one
        while not ga.done:
            fitness, missing, errored = {}, [], {}
            for ind in ga.ask():
                rec = self.rd.read_individual(optimizer, ind.generation, ind.index)
                if rec is None:
                    missing.append(ind)
                    continue
                path = self.rd.individual_path(optimizer, ind.generation, ind.index)
                if (rec["seed"], rec["hparams"], rec["steps"]) != (ind.seed, ind.hparams, ind.steps):
                    raise RunDirError(f"{path} does not match this run's {self.schedule.search.searcher} searcher "
                                      "(another seed or schedule?)")
                if isinstance(rec["fitness"], bool) or not isinstance(rec["fitness"], (int, float)) \
                        or math.isnan(rec["fitness"]):
                    raise RunDirError(f"{path}: fitness {rec['fitness']!r} is not a number: damaged?")
                fitness[ind.index] = float(rec["fitness"])
                if "error" in rec:
                    errored[ind.index] = rec
                self.reused += 1
            asked = len(fitness) + len(missing)
            told = (self.rd.read_state(optimizer) or {}).get("generation", 0) > ga.generation  # (older runs told such)
            if not missing and not told and self._failing(errored, asked):  # the generation it failed at: run its errors again
                missing = [ind for ind in ga.ask() if ind.index in errored]
                for ind in missing:
                    del fitness[ind.index]
                self.reused -= len(missing)
                errored = {}
            self.partial[optimizer], self.errored[optimizer] = fitness, errored
            self._emit(optimizer)
            if missing:
                self.generation_started[optimizer] = time.perf_counter()
                return self._batched([self._tuning_job(optimizer, ind) for ind in missing]) + checks
            self._tell(optimizer, fitness)
            checks += self._noise_check(optimizer)
        return self._record_tuned(optimizer, ga.best()) + checks

    def _tuning_job(self, optimizer: str, ind) -> Job:
        """Individual `ind`'s trial: its values as the trial runs them (`trial_hparams`: the schedule's
        `horizon` hyperparameters at the trial's share of the full run's length)."""
        return self._job(("tuning", optimizer, ind.generation, ind.index), optimizer,
                         trial_hparams(self.schedule, optimizer, ind.hparams, ind.steps), ind.steps, ind.seed,
                         **({"prune": self._prune_points(optimizer, ind)} if self.schedule.prune else {}))

    def _prune_points(self, optimizer: str, ind) -> tuple:
        """Individual `ind`'s prune points (tuner.trial.prune): thresholds from the previous generation's
        recorded fitness and running losses (none in generation 0 and in a finalists row)."""
        at, ga = self.schedule.prune["at"], self.gas[optimizer]
        marks = [None] * len(at)
        finalists = self.schedule.ga.get("final") == "finalists" and ind.generation == len(ga.generations) - 1
        if ind.generation > 0 and not finalists:
            key = (optimizer, ind.generation)
            if key not in self._marks:  # once per generation: its trials share the thresholds
                size = ga.sizes[ind.generation - 1]  # the previous generation's trials (size × seeds)
                records = [self.rd.read_individual(optimizer, ind.generation - 1, i) or {} for i in range(size)]
                previous = [(r.get("fitness", math.inf), r.get("running", [])) for r in records]
                self._marks[key] = thresholds(previous, len(at), self.schedule.prune["quantile"])
            marks = self._marks[key]
        return tuple(zip(points(at, ind.steps), marks))

    def _tell(self, optimizer: str, fitness: dict[int, float]) -> None:
        ga = self.gas[optimizer]
        ga.tell(fitness)
        saved = self.rd.read_state(optimizer)
        if saved is not None and saved.get("generation", 0) > ga.generation:
            return  # replaying generations a state.json already records as passed: leave it
        self.rd.write_state(optimizer, {"generation": ga.generation, "generations": len(ga.generations),
                                        "done": ga.done, "mean": ga.mean})

    def _tuned(self) -> dict:
        """tuned.json as it stands, or a new one."""
        return self.rd.read_tuned() or {"lr_scale": self.schedule.lr_scale, "source": "tuned",
                                        "searcher": self.schedule.search.searcher,
                                        "schedule": self.rd.manifest.get("schedule_source"),
                                        "hyperparameters": {}, "raw": {}}

    def _record_tuned(self, optimizer: str, best: dict[str, float]) -> list[Job]:
        self.raw[optimizer] = best
        self.hyperparameters[optimizer] = scale_lr(best, self.schedule.lr_scale)
        tuned = self._tuned()
        tuned["hyperparameters"][optimizer] = self.hyperparameters[optimizer]
        tuned["raw"][optimizer] = self.raw[optimizer]
        if optimizer in tuned.get("failed", {}):  # failed before, resumed after the cause was fixed
            del tuned["failed"][optimizer]
            if not tuned["failed"]:
                del tuned["failed"]
        self.rd.write_tuned(tuned)
        if optimizer in self.generation_started or optimizer not in self.gas:  # tuned in this session
            self.rd.log.write("tuned", optimizer=optimizer, hyperparameters=self.hyperparameters[optimizer])
        return self.start_full(optimizer) if self.full_runs else []

    @staticmethod
    def _failing(errored: dict, trials: int) -> bool:
        """Most of a generation's trials raised: the optimizer stops there (`_fail`)."""
        return 2 * len(errored) > trials

    def _fail(self, optimizer: str, generation: int, trials: int) -> list[Job]:
        """`optimizer` is not tuned: most of generation `generation` raised. tuned.json and the run
        log say why (the first error's last line and its traceback file); its state stays at the
        last generation told, so a resumed session runs this generation's errors again."""
        errored = self.errored[optimizer]
        first = errored[min(errored)]
        info = {"stage": "tuning", "generation": generation, "errors": len(errored), "trials": trials,
                "error": first["error"], "traceback": first["traceback"]}
        self.failed[optimizer] = info
        tuned = self._tuned()
        tuned.setdefault("failed", {})[optimizer] = info
        self.rd.write_tuned(tuned)
        self.rd.log.write("failed", optimizer=optimizer, **info)
        logger.error("%s failed: %d of %d trials of generation %d raised (first: %s; traceback: %s); "
                     "not tuned, no full runs. Fix the cause and --resume the run", optimizer, len(errored),
                     trials, generation, info["error"], self.rd.path / info["traceback"])
        self.full_left[optimizer] = 0
        return []

    def _tuning_result(self, job: Job, result: dict) -> list[Job]:
        if job.key[0] == "noise":
            return self._noise_result(job, result)
        _, optimizer, generation, index = job.key
        fitness = self._fitness(result)
        asked = self.gas[optimizer].ask()  # the same list until the generation is told (GA and SamplerSearch)
        searched = next(ind.hparams for ind in asked if ind.index == index)
        record = {"generation": generation, "index": index, "seed": job.seed, "hparams": searched,
                  "steps": job.steps, "fitness": fitness, "seconds": result.get("seconds"),
                  "diverged": result.get("diverged", False), "curve": result.get("curve")}
        if job.hparams != searched:  # `horizon`: what the trial ran differs from the searcher's values
            record["trial_hparams"] = job.hparams
        if not self.schedule.objective.is_train_loss and "error" not in result:
            record["objective"] = (result.get("held_out") or {}).get(self.schedule.objective.metric)
            record["diverged"] = record["diverged"] or not math.isfinite(fitness)
        record.update({k: result[k] for k in ("running", "pruned", "evaluations") if job.prune and k in result})
        if "error" in result:
            self._record_error(optimizer, self.rd.individual_path(optimizer, generation, index).stem, result, record)
            self.errored.setdefault(optimizer, {})[index] = record
        self._record_retries(result, record)
        self.rd.write_individual(optimizer, record)
        self.ran += 1
        fit = self.partial[optimizer]
        fit[index] = fitness
        self._emit(optimizer)
        if len(fit) < len(asked):  # the generation's trials (a GA's population × seeds, a round's size)
            return []
        generation = self.gas[optimizer].generation
        if self._failing(self.errored.get(optimizer, {}), len(asked)):
            return self._fail(optimizer, generation, len(asked))
        self._tell(optimizer, fit)
        self._log_generation(optimizer, generation, fit)
        checks = self._noise_check(optimizer)  # behind the next generation: it unlocks nothing
        return self._advance(optimizer) + checks

    # -- the noise check (tuner.driver.noise) ---------------------------------------------------------
    def _noise_check(self, optimizer: str) -> list[Job]:
        """The re-run of the generation just told's best on another seed, unless it is recorded, the
        schedule turns it off (`noise_check: false`), or fewer than two trials were finite."""
        ga = self.gas[optimizer]
        told = ga.history[-1]
        generation = told["generation"]
        best = noise.best(told["individuals"])
        if not self.schedule.noise_check or best is None or noise.read(self.rd, optimizer, generation) is not None:
            return []
        steps = told["steps"]
        job = self._job(("noise", optimizer, generation), optimizer,
                        trial_hparams(self.schedule, optimizer, best["hparams"], steps), steps,
                        noise.seed(self.seed, optimizer, generation))
        return self._batched([job])

    def _noise_result(self, job: Job, result: dict) -> list[Job]:
        _, optimizer, generation = job.key
        told = next(h for h in self.gas[optimizer].history if h["generation"] == generation)
        best = noise.best(told["individuals"])
        rerun = self._fitness(result)
        record = {"generation": generation, "index": best["index"], "seed": job.seed, "hparams": best["hparams"],
                  "steps": job.steps, "fitness": rerun, "best_fitness": best["fitness"],
                  **noise.verdict([i["fitness"] for i in told["individuals"]], best["fitness"], rerun)}
        if "error" in result:
            record["error"] = result["error"].strip().splitlines()[-1]
        self._record_retries(result, record)
        noise.write(self.rd, optimizer, record)
        self.noise_ran += 1
        self.rd.log.write("selection_noise", optimizer=optimizer, generation=generation, best=best["fitness"],
                          rerun=rerun, spread=record["spread"], noise=record["noise"],
                          indistinguishable=record["indistinguishable"])
        if record["indistinguishable"]:
            objective = self.schedule.objective
            sign = -1 if objective.mode == "max" else 1  # in the objective's own terms (fitness negates a max)
            logger.warning("%s generation %d: selection cannot tell its individuals apart (%s: the best, %.6g, "
                           "scored %.6g on another seed; the median is only %.6g from the best). What helps: %s",
                           optimizer, generation, objective.metric, sign * best["fitness"], sign * rerun,
                           record["spread"], noise.HELP)
        return []

    def _log_generation(self, optimizer: str, generation: int, fitness: dict[int, float]) -> None:
        """A generation finished in this session: its summary into the run log (and a debug line)."""
        finite = [v for v in fitness.values() if math.isfinite(v)]
        started = self.generation_started.get(optimizer)
        pruned = sum("pruned" in (self.rd.read_individual(optimizer, generation, i) or {}) for i in fitness) \
            if self.schedule.prune else 0  # stopped early by `prune:` (tuner.trial.prune), not diverged
        event = self.rd.log.write(
            "generation", optimizer=optimizer, generation=generation, individuals=len(fitness),
            best=min(finite) if finite else None, mean=math.fsum(finite) / len(finite) if finite else None,
            diverged=len(fitness) - len(finite) - pruned, ga_mean=dict(self.gas[optimizer].mean),
            seconds=None if started is None else round(time.perf_counter() - started, 3),
            **({"pruned": pruned} if self.schedule.prune else {}))
        if pruned:
            logger.info("%s generation %d: %d of %d trials pruned (stopped early, ranked last)", optimizer,
                        generation, pruned, len(fitness))
        logger.debug("%s generation %d: best %s, mean %s, %d diverged, %s s", optimizer, generation,
                     event["best"], event["mean"], event["diverged"], event["seconds"])
        if event["diverged"]:
            logger.info("%s generation %d: %d of %d trials diverged or failed (ranked last)", optimizer,
                        generation, event["diverged"], len(fitness))

    def _emit(self, optimizer: str) -> None:
        ga, partial = self.gas[optimizer], self.partial.get(optimizer, {})
        values = [i["fitness"] for h in ga.history for i in h["individuals"]] + list(partial.values())
        finite = [v for v in values if math.isfinite(v)]
        sizes = ga.sizes  # trials per generation (GA) or round (SamplerSearch)
        done_steps = sum(h["steps"] * len(h["individuals"]) for h in ga.history)
        if not ga.done:
            done_steps += len(partial) * ga.generations[ga.generation][1]
        self.progress({"kind": "tuning", "optimizer": optimizer, "generation": ga.generation,
                       "generations": len(ga.generations), "done": len(partial),
                       "population": sizes[min(ga.generation, len(sizes) - 1)],
                       "best": min(finite) if finite else None, "steps_done": done_steps,
                       "steps_total": sum(size * g[1] for size, g in zip(sizes, ga.generations))})

    # -- full-length runs ----------------------------------------------------------------------
    def start_full(self, optimizer: str, hparams: Mapping[str, float] | None = None) -> list[Job]:
        """The full runs of `optimizer` not yet recorded with these hyperparameters (default: the tuned)."""
        if hparams is not None:
            self.hyperparameters[optimizer] = dict(hparams)
        hp, (steps, seeds, milestone) = self.hyperparameters[optimizer], self.schedule.full_run
        jobs = []
        for i in range(seeds):
            rec = self.rd.read_full(optimizer, i)
            if rec is not None and "error" not in rec:  # a run that raised runs again (the cause may be fixed)
                mine = (i, full_run_seed(self.seed, i), hp, steps, milestone)
                theirs = (rec["seed_index"], rec["seed"], rec["hparams"], rec["steps"], rec.get("time_milestone_s"))
                if theirs != mine:
                    raise RunDirError(f"{self.rd.full_path(optimizer, i)} does not match this run's full run {i} "
                                      f"(seed, hyperparameters, steps or time milestone differ): delete it to run it again")
                self.full_reused += 1
                continue
            jobs.append(self._job(("full", optimizer, i), optimizer, hp, steps, full_run_seed(self.seed, i),
                                  kind="full", time_limit=milestone, checkpoint=str(self._checkpoint(optimizer, i))))
        self.full_left[optimizer] = len(jobs)
        self._emit_full(optimizer)
        return self._batched(jobs)

    def _checkpoint(self, optimizer: str, i: int):
        return self.rd.full_path(optimizer, i).with_suffix(".ckpt")

    def _full_result(self, job: Job, result: dict) -> list[Job]:
        _, optimizer, i = job.key
        if result.get("keep_checkpoint"):  # refused (damaged, another trial's): the user decides, the run stops
            raise RunDirError(result.get("checkpoint_error") or result["error"].strip().splitlines()[-1])
        record = {"seed_index": i, "seed": job.seed, "hparams": job.hparams, "steps": job.steps,
                  "time_milestone_s": job.time_limit, **{k: v for k, v in result.items() if k not in ("pid", "keep_checkpoint")}}
        self._record_retries(result, record)
        if "error" in result:
            record.update(final_loss=math.inf, diverged=False)
            self._record_error(optimizer, f"full-{self.rd.full_path(optimizer, i).stem}", result, record)
        self.rd.write_full(optimizer, i, record)
        self.rd.log.write("full_run", optimizer=optimizer, seed_index=i, final_loss=record.get("final_loss"),
                          diverged=bool(record.get("diverged")), seconds=record.get("seconds"))
        if record.get("diverged"):
            logger.info("%s full run %d diverged", optimizer, i)
        self._checkpoint(optimizer, i).unlink(missing_ok=True)  # the record is durable now
        self.full_ran += 1
        self.full_left[optimizer] -= 1
        self._emit_full(optimizer)
        if self.full_left[optimizer] == 0:
            self._check_full(optimizer)
        return []

    def _check_full(self, optimizer: str) -> None:
        """Most of `optimizer`'s full runs raised: it failed (the run log and `failed` say why)."""
        records = self.rd.full_runs(optimizer)
        errored = [r for r in records if r.get("error")]
        if not self._failing(errored, len(records)):
            return
        info = {"stage": "full runs", "errors": len(errored), "trials": len(records),
                "error": errored[0]["error"], "traceback": errored[0]["traceback"]}
        self.failed[optimizer] = info
        self.rd.log.write("failed", optimizer=optimizer, **info)
        logger.error("%s failed: %d of %d full runs raised (first: %s; traceback: %s). Fix the cause and "
                     "--resume the run", optimizer, len(errored), len(records), info["error"],
                     self.rd.path / info["traceback"])

    def _emit_full(self, optimizer: str) -> None:
        seeds = self.schedule.full_run.seeds
        self.progress({"kind": "full", "optimizer": optimizer, "done": seeds - self.full_left[optimizer],
                       "total": seeds})

    # -- batched trials ------------------------------------------------------------------------
    def _batched(self, jobs: list[Job]) -> list[Job | BatchJob]:
        """`jobs` (one optimizer's missing individuals of a generation, or its full runs still to
        run) as they go to the executor. Without `batch`, unchanged. With it, the `batchable` ones
        are split into c = min(len, ⌈workers / active⌉) BatchJobs of consecutive jobs, sizes as
        equal as possible, where `active` is the number of optimizers with work outstanding (GA or
        full runs): with fewer optimizers in flight than workers each gets more chunks, so every
        worker has a batch. The others (no batched form, a time milestone, an unbatched run's checkpoint to
        continue from) stay single jobs. A job is a lane of a BatchJob even when its chunk has one lane, so
        its numbers never depend on how the jobs were chunked (a lane's are independent of its
        batch, bit for bit): a resumed run, which chunks only what is missing, gives the same records."""
        if not self.batch:
            return jobs
        lanes = [job for job in jobs if batchable(job)]
        rest = [job for job in jobs if not batchable(job)]
        if not lanes:
            return rest
        active = sum(not self._finished(o) for o in self.rd.manifest["optimizers"])
        chunks = min(len(lanes), max(1, math.ceil(self.workers / max(1, active))))
        bounds = [len(lanes) * i // chunks for i in range(chunks + 1)]
        return [BatchJob(tuple(lanes[a:b])) for a, b in zip(bounds[:-1], bounds[1:])] + rest

    def _finished(self, optimizer: str) -> bool:
        """No work outstanding for `optimizer`: its full runs are recorded (or, without full runs, it is tuned)."""
        return self.full_left.get(optimizer) == 0 if self.full_runs else optimizer in self.raw or optimizer in self.failed

    def _batch_result(self, batch: BatchJob, result: dict) -> list[Job | BatchJob]:
        """Record each lane's result as its own job's (a batch that failed as a whole: its error for each)."""
        results = result.get("batch") or [result] * len(batch.jobs)
        more = []
        for job, lane in zip(batch.jobs, results):
            if "retries" in result:  # the environment failed the batch before it ran: each lane's record says so
                lane = {**lane, "retries": [{**r, "batch_lanes": len(batch.jobs)} for r in result["retries"]]}
            more += self.on_result(job, lane) or []
        return more
