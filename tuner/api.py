"""The programmatic API: `tune` (the Appendix-E GA for every optimizer, concurrently, on Ray),
`evaluate` (full-length runs, 8 seeds, Table 1's milestones), `run` (both, as the CLI does) and
`export_table`.

Everything lands in a run directory (`tuner.rundir`) as it finishes, so `resume=True` re-runs
only what is missing: each GA is rebuilt from the manifest (it is deterministic: individuals
depend only on seed, optimizer, generation, index and mean) and the recorded fitness values are
replayed generation by generation.
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from tuner.executor import Executor, init_ray
from tuner.rundir import RunDir, RunDirError
from tuner.trial import Job

ProgressFn = Callable[[dict], None]


@dataclasses.dataclass
class TuneResult:
    """What tuning (and, through `run`, the full runs) produced."""

    task: str
    run_dir: Path
    hyperparameters: dict[str, dict[str, float]]   # used for full runs (lr × lr_scale)
    raw: dict[str, dict[str, float]]               # the final GA means (before lr_scale)
    history: dict[str, list[dict]]                 # GeneticAlgorithm.history per optimizer
    reused: int = 0                                # individuals read back from the run dir
    ran: int = 0                                   # individuals run in this session
    errors: int = 0                                # individuals whose trial raised (ranked last)
    efficiency: float = float("nan")               # Σ compute s / (wall s × workers)
    wall_seconds: float = 0.0
    workers: int = 0
    report: dict | None = None                     # full-run report (see `summarise_full`)
    full_reused: int = 0
    full_ran: int = 0


def default_run_dir(task: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{task}-{stamp}"


def full_run_seed(seed: int, index: int) -> int:
    """Trial seed of full run `index`: seeds 0..7 for the default tuner seed 0."""
    return 1000 * seed + index


def scale_lr(hparams: Mapping[str, float], lr_scale: float) -> dict[str, float]:
    """Post-tuning learning-rate scaling (×0.5 for image_generation, docs/paper.md §3)."""
    return {k: (v * lr_scale if k == "lr" else v) for k, v in hparams.items()}


def summarise_full(records: list[dict]) -> dict:
    """Mean ± std (population std, ddof 0) over seeds of the finite losses; diverged runs counted."""
    def stats(key):
        vals = [r[key] for r in records if r.get(key) is not None]
        finite = [v for v in vals if math.isfinite(v)]
        if not vals:
            return None, None
        if not finite:
            return math.inf, None
        return float(np.mean(finite)), float(np.std(finite))

    step_mean, step_std = stats("final_loss")
    time_mean, time_std = stats("time_loss")
    sps = [r["steps_per_second"] for r in records if r.get("steps_per_second")]
    return {
        "seeds": len(records),
        "steps": records[0]["steps"] if records else None,
        "time_milestone_s": records[0].get("time_milestone_s") if records else None,
        "final_loss_mean": step_mean, "final_loss_std": step_std,
        "time_loss_mean": time_mean, "time_loss_std": time_std,
        "steps_per_second": float(np.mean(sps)) if sps else None,
        "diverged": sum(1 for r in records if r.get("diverged") or not math.isfinite(r.get("final_loss", math.inf))),
        "errors": sum(1 for r in records if r.get("error")),
    }


class _Session:
    """One driver session over a run directory: GA replay, job generation and recording."""

    def __init__(self, rd: RunDir, task: str, schedule, seed: int, progress: ProgressFn | None):
        self.rd, self.task, self.schedule, self.seed = rd, task, schedule, seed
        self.progress = progress or (lambda event: None)
        self.gas: dict = {}
        self.partial: dict[str, dict[int, float]] = {}
        self.hyperparameters: dict[str, dict[str, float]] = {}
        self.raw: dict[str, dict[str, float]] = {}
        self.reused = self.ran = self.errors = 0
        self.full_reused = self.full_ran = 0
        self.full_plan: dict[str, int] = {}   # optimizer -> seeds still to run
        self.full_spec = None                 # (steps, seeds, time_milestone)
        self.task_options = dict(schedule.task_options)

    # -- tuning --------------------------------------------------------------------------------
    def start_ga(self, optimizer: str) -> list[Job]:
        from tuner.ga import GeneticAlgorithm
        from tuner.schedule import space_for

        space = space_for(self.schedule, optimizer)
        if not space:  # meta-trained offline (L2LBGDBGD): nothing for the GA to tune
            return self._record_tuned(optimizer, {})
        ga = GeneticAlgorithm(space, list(self.schedule.generations),
                              self.schedule.population, seed=self.seed, name=optimizer)
        self.gas[optimizer] = ga
        return self._advance(optimizer)

    def _advance(self, optimizer: str) -> list[Job]:
        """Replay recorded generations; return the jobs of the first incomplete one (or full runs)."""
        ga = self.gas[optimizer]
        while not ga.done:
            individuals = ga.ask()
            fitness, missing = {}, []
            for ind in individuals:
                rec = self.rd.read_individual(optimizer, ind.generation, ind.index)
                if rec is not None and (rec["seed"] != ind.seed or rec["hparams"] != ind.hparams
                                        or rec["steps"] != ind.steps):
                    raise RunDirError(f"--resume: {self.rd.individual_path(optimizer, ind.generation, ind.index)} "
                                      f"does not match this run's GA (another seed or schedule?)")
                if rec is None:
                    missing.append(ind)
                else:
                    fitness[ind.index] = float(rec["fitness"])
                    self.reused += 1
            self.partial[optimizer] = fitness
            self._emit(optimizer)
            if missing:
                return [Job(("tuning", optimizer, ind.generation, ind.index), self.task, optimizer,
                            dict(ind.hparams), ind.steps, ind.seed, self.task_options, "tuning")
                        for ind in missing]
            ga.tell(fitness)
            self._write_state(optimizer)
        return self._finish_ga(optimizer)

    def _write_state(self, optimizer: str) -> None:
        ga = self.gas[optimizer]
        self.rd.write_state(optimizer, {"generation": ga.generation, "generations": len(ga.generations),
                                        "done": ga.done, "mean": ga.mean})

    def _finish_ga(self, optimizer: str) -> list[Job]:
        return self._record_tuned(optimizer, self.gas[optimizer].best())

    def _record_tuned(self, optimizer: str, best: dict[str, float]) -> list[Job]:
        self.raw[optimizer] = best
        self.hyperparameters[optimizer] = scale_lr(best, self.schedule.lr_scale)
        tuned = self.rd.read_tuned() or {"lr_scale": self.schedule.lr_scale, "source": "tuned",
                                         "hyperparameters": {}, "raw": {}}
        tuned["hyperparameters"][optimizer] = self.hyperparameters[optimizer]
        tuned["raw"][optimizer] = self.raw[optimizer]
        self.rd.write_tuned(tuned)
        return self.start_full(optimizer) if self.full_spec else []

    def _tuning_result(self, job: Job, result: dict) -> list[Job]:
        _, optimizer, generation, index = job.key
        fitness = math.inf if "error" in result else float(result["final_loss"])
        record = {"generation": generation, "index": index, "seed": job.seed, "hparams": job.hparams,
                  "steps": job.steps, "fitness": fitness, "seconds": result.get("seconds"),
                  "diverged": result.get("diverged", False), "curve": result.get("curve")}
        if "error" in result:
            self.errors += 1
            path = self.rd.write_error(optimizer, generation, index, result["error"])
            record["error"] = result["error"].strip().splitlines()[-1]
            record["traceback"] = str(path.relative_to(self.rd.path))
        self.rd.write_individual(optimizer, record)
        self.ran += 1
        fit = self.partial[optimizer]
        fit[index] = fitness
        self._emit(optimizer)
        ga = self.gas[optimizer]
        if len(fit) < ga.population:
            return []
        ga.tell(fit)
        self._write_state(optimizer)
        return self._advance(optimizer)

    def _emit(self, optimizer: str) -> None:
        ga = self.gas[optimizer]
        values = [f for h in ga.history for f in (i["fitness"] for i in h["individuals"])]
        values += list(self.partial.get(optimizer, {}).values())
        finite = [v for v in values if math.isfinite(v)]
        done_steps = sum(h["steps"] * ga.population for h in ga.history)
        if not ga.done:
            done_steps += len(self.partial.get(optimizer, {})) * ga.generations[ga.generation][1]
        self.progress({"kind": "tuning", "optimizer": optimizer, "generation": ga.generation,
                       "generations": len(ga.generations), "done": len(self.partial.get(optimizer, {})),
                       "population": ga.population, "best": min(finite) if finite else None,
                       "steps_done": done_steps,
                       "steps_total": sum(g[1] for g in ga.generations) * ga.population})

    # -- full-length runs ----------------------------------------------------------------------
    def start_full(self, optimizer: str, hparams: Mapping[str, float] | None = None) -> list[Job]:
        if hparams is not None:
            self.hyperparameters[optimizer] = dict(hparams)
        steps, seeds, milestone = self.full_spec
        jobs = []
        for i in range(seeds):
            rec = self.rd.read_full(optimizer, i)
            if rec is not None and rec.get("hparams") == self.hyperparameters[optimizer] and rec.get("steps") == steps:
                self.full_reused += 1
                continue
            jobs.append(Job(("full", optimizer, i), self.task, optimizer, dict(self.hyperparameters[optimizer]),
                            steps, full_run_seed(self.seed, i), self.task_options, "full", milestone,
                            str(self.rd.full_path(optimizer, i).with_suffix(".ckpt"))))
        self.full_plan[optimizer] = len(jobs)
        self._emit_full(optimizer)
        return jobs

    def _full_result(self, job: Job, result: dict) -> list[Job]:
        _, optimizer, i = job.key
        record = {"seed_index": i, "seed": job.seed, "hparams": job.hparams, "steps": job.steps,
                  "time_milestone_s": job.time_limit, **{k: v for k, v in result.items() if k != "pid"}}
        if "error" in result:
            self.errors += 1
            path = self.rd.write_error(optimizer, 99, i, result["error"])
            record.update(final_loss=math.inf, diverged=False, traceback=str(path.relative_to(self.rd.path)),
                          error=result["error"].strip().splitlines()[-1])
        self.rd.write_full(optimizer, i, record)
        if "CheckpointError" not in result.get("error", ""):  # another trial's checkpoint stays for the user
            self.rd.full_path(optimizer, i).with_suffix(".ckpt").unlink(missing_ok=True)  # the record is durable
        self.full_ran += 1
        self.full_plan[optimizer] -= 1
        self._emit_full(optimizer)
        return []

    def _emit_full(self, optimizer: str) -> None:
        _, seeds, _ = self.full_spec
        self.progress({"kind": "full", "optimizer": optimizer, "done": seeds - self.full_plan[optimizer],
                       "total": seeds})

    def on_result(self, job: Job, result: dict) -> list[Job]:
        return self._tuning_result(job, result) if job.kind == "tuning" else self._full_result(job, result)

    def report(self, optimizers) -> dict:
        return {o: summarise_full(self.rd.full_runs(o)) for o in optimizers}


def _prepare_run_dir(run_dir, resume: bool, task: str, schedule, seed: int, optimizers, extra: dict) -> RunDir:
    if run_dir is None:
        if resume:
            raise RunDirError("--resume: needs a run directory")
        run_dir = default_run_dir(task)
    if resume:
        manifest = RunDir.check_resume(run_dir, task, schedule.to_dict())
        if manifest.get("seed") != seed:
            raise RunDirError(f"--resume: {str(run_dir)!r} was run with --seed {manifest.get('seed')}, not {seed}")
        return RunDir(run_dir)
    RunDir.check_new(run_dir)
    return RunDir.create(run_dir, task=task, schedule=schedule.to_dict(), seed=seed,
                         optimizers=list(optimizers), **extra)


def run(task: str, optimizers=None, schedule=None, seed: int = 0, run_dir=None, resume: bool = False,
        hyperparameters: str | Mapping = "tuned", full_runs: bool = True, workers: int | None = None,
        address: str | None = None, cpus_per_trial: float = 1, gpus_per_trial: float = 0,
        device: str = "cpu", progress: ProgressFn | None = None) -> TuneResult:
    """Tune (unless `hyperparameters` is "paper" or a mapping) and then run the full-length runs.

    schedule: a `Schedule`, a bundled name or path (default: the task's bundled schedule).
    hyperparameters: "tuned" (run the GA), "paper" (Table 6, `lodo.paper_hyperparameters`; registry
        defaults where Table 6 has none) or {optimizer: {hparam: value}} (used as given).
    """
    from tuner.schedule import Schedule, load_schedule

    if not isinstance(schedule, Schedule):
        schedule = load_schedule(schedule or task)
    if schedule.task != task:
        raise ValueError(f"Invalid schedule: it is for task {schedule.task!r}, not {task!r}")
    optimizers = list(optimizers or schedule.optimizers)
    given = None
    if isinstance(hyperparameters, str):
        if hyperparameters == "paper":
            import lodo

            table = lodo.paper_hyperparameters(task)
            given = {o: dict(table.get(o, {h.name: h.default for h in lodo.hyperparameters(o)})) for o in optimizers}
        elif hyperparameters != "tuned":
            raise ValueError(f"Invalid hyperparameters: {hyperparameters!r} (must be 'tuned', 'paper' or a mapping)")
    else:
        given = {o: dict(hyperparameters[o]) for o in optimizers}
    mode = "tuned" if given is None else (hyperparameters if isinstance(hyperparameters, str) else "given")
    rd = _prepare_run_dir(run_dir, resume, task, schedule, seed, optimizers,
                          {"hparams": mode, "given_hyperparameters": given, "full_runs": full_runs,
                           "device": device})
    if resume:
        manifest = rd.manifest
        if manifest.get("optimizers") != optimizers:
            raise RunDirError(f"--resume: {str(rd.path)!r} tunes {', '.join(manifest['optimizers'])}, "
                              f"not {', '.join(optimizers)}")
        if manifest.get("hparams") != mode or manifest.get("given_hyperparameters") != given:
            raise RunDirError(f"--resume: {str(rd.path)!r} was run with --hparams {manifest.get('hparams')}")

    session = _Session(rd, task, schedule, seed, progress)
    if full_runs:
        session.full_spec = (schedule.full_run.steps, schedule.full_run.seeds, schedule.full_run.time_milestone_s)
    if given is not None:
        rd.write_tuned({"lr_scale": 1.0, "source": mode, "hyperparameters": given, "raw": given})

    started_ray = init_ray(address, workers, cpus_per_trial)  # before any `import ray` (quiet start)
    executor = Executor(workers, cpus_per_trial, gpus_per_trial, device)
    t0 = time.perf_counter()
    try:
        executor.start()
        jobs = []
        for o in optimizers:
            if given is None:
                jobs += session.start_ga(o)
            elif full_runs:
                jobs += session.start_full(o, given[o])
        executor.run(jobs, session.on_result)
    finally:
        executor_workers = executor.workers
        executor.stop()
        if started_ray:
            import ray

            ray.shutdown()
    wall = time.perf_counter() - t0
    result = TuneResult(
        task=task, run_dir=rd.path,
        hyperparameters=dict(session.hyperparameters) if given is None else given,
        raw=dict(session.raw) if given is None else given,
        history={o: ga.history for o, ga in session.gas.items()},
        reused=session.reused, ran=session.ran, errors=session.errors,
        efficiency=executor.efficiency(), wall_seconds=wall, workers=executor_workers,
        report=session.report(optimizers) if full_runs else None,
        full_reused=session.full_reused, full_ran=session.full_ran)
    rd.write_summary({"reused": result.reused, "ran": result.ran, "errors": result.errors,
                      "full_reused": result.full_reused, "full_ran": result.full_ran,
                      "efficiency": result.efficiency, "wall_seconds": wall, "workers": executor_workers,
                      "resubmitted": executor.resubmitted, "compute_seconds": executor.compute_seconds})
    return result


def tune(task: str, optimizers=None, schedule=None, seed: int = 0, run_dir=None, resume: bool = False,
         workers: int | None = None, address: str | None = None, cpus_per_trial: float = 1,
         gpus_per_trial: float = 0, device: str = "cpu", progress: ProgressFn | None = None) -> TuneResult:
    """Run the GA for every optimizer concurrently; `.hyperparameters` are the tuned values
    (final GA mean, lr × schedule.lr_scale), `.history` the GA histories."""
    return run(task, optimizers, schedule, seed, run_dir, resume, "tuned", False, workers, address,
               cpus_per_trial, gpus_per_trial, device, progress)


def evaluate(task: str, hyperparameters: Mapping[str, Mapping[str, float]] | str, steps: int | None = None,
             seeds: int = 8, run_dir=None, time_milestone: float | None = None, schedule=None, seed: int = 0,
             resume: bool = False, workers: int | None = None, address: str | None = None,
             cpus_per_trial: float = 1, gpus_per_trial: float = 0, device: str = "cpu",
             progress: ProgressFn | None = None) -> dict:
    """Full-length runs of the given hyperparameters ("paper" for Table 6). Returns the report
    {optimizer: {final_loss_mean/std (step milestone), time_loss_mean/std (time milestone, when
    asked), steps_per_second, diverged, seeds, ...}}. `steps` defaults to the schedule's."""
    from tuner.schedule import Schedule, load_schedule

    if not isinstance(schedule, Schedule):
        schedule = load_schedule(schedule or task)
    optimizers = list(hyperparameters) if isinstance(hyperparameters, Mapping) else list(schedule.optimizers)
    for name, value in (("steps", steps), ("seeds", seeds)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"Invalid {name}: {value!r} (must be a positive integer)")
    if time_milestone is not None and not time_milestone > 0:
        raise ValueError(f"Invalid time_milestone: {time_milestone!r} (must be > 0 seconds)")
    schedule = dataclasses.replace(schedule, full_run=schedule.full_run._replace(
        steps=steps or schedule.full_run.steps, seeds=seeds, time_milestone_s=time_milestone))
    return run(task, optimizers, schedule, seed, run_dir, resume, hyperparameters, True, workers, address,
               cpus_per_trial, gpus_per_trial, device, progress).report


def export_table(run_dir_or_result, format: str = "markdown") -> str:
    """Table 6 (tuned hyperparameters) and Table 1 (results) of a run directory, finished or not."""
    from tuner.export import export

    path = run_dir_or_result.run_dir if isinstance(run_dir_or_result, TuneResult) else run_dir_or_result
    return export(path, format)
