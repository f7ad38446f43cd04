"""The programmatic API: `tune` (the Appendix-E GA for every optimizer, concurrently, on Ray),
`evaluate` (full-length runs, 8 seeds, Table 1's milestones), `run` (both, as the CLI does) and
`export_table`. Everything after `task` is keyword-only; resources go in a `Resources`.

    result = tuner.tune("noisy_bowl", optimizers=["Adam", "LODO"], run_dir="runs/nb",
                        resources=tuner.Resources(workers=2))

Everything lands in a run directory (`tuner.driver.rundir`) as it finishes, so `resume=True` re-runs
only what is missing (`tuner.driver.session`), bit-identically.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import platform
import time
from typing import Mapping

import torch

import lodo
from tuner.driver.executor import Executor, PersistentFailure, init_ray
from tuner.report.export import export
from tuner.driver.memory import check_memory
from tuner.driver.plan import Plan, Resources, make_plan
from tuner.report.results import TuneResult
from tuner.driver.rundir import RunDir
from tuner.driver.session import ProgressFn, Session

logger = logging.getLogger(__name__)


def _plan_fields(plan: Plan) -> dict:
    """The plan as the run log's start/resume event records it."""
    return {"run_dir": str(plan.run_dir), "task": plan.task, "optimizers": list(plan.optimizers), "seed": plan.seed,
            "hyperparameters": plan.hyperparameters, "full_runs": plan.full_runs,
            "resources": dataclasses.asdict(plan.resources), "schedule": plan.schedule.to_dict()}


def _machine(executor: Executor, device: str) -> dict:
    """The run log's machine event: Ray's cluster resources, torch, the device (after init_ray)."""
    import ray  # imported by init_ray already

    out = {"ray": {"version": importlib.metadata.version("ray"), "resources": ray.cluster_resources()},
           "torch": {"version": torch.__version__, "cuda": torch.version.cuda}, "python": platform.python_version(),
           "host": platform.node(), "device": device, "workers": executor.workers}
    if device == "cuda" and torch.cuda.is_available():
        out["cuda_device"] = torch.cuda.get_device_name(0)
    return out


def _summary(session: Session, executor: Executor, t0: float, workers: int, **more) -> dict:
    return {"reused": session.reused, "ran": session.ran, "errors": session.errors,
            "full_reused": session.full_reused, "full_ran": session.full_ran,
            "efficiency": executor.efficiency(), "wall_seconds": time.perf_counter() - t0, "workers": workers,
            "resubmitted": executor.resubmitted, "compute_seconds": executor.compute_seconds,
            "retries": executor.retries, "retry_causes": dict(executor.retry_causes),
            "memory_per_trial": executor.memory_per_trial, "failed": dict(session.failed),
            "noise_checks": session.noise_ran, **more}


def run_plan(plan: Plan, progress: ProgressFn | None = None) -> TuneResult:
    """Run a validated plan: take its run directory's lock (`RunDirLocked` if another process has
    it), start Ray, refuse a trial that fits on no node (`PlanError`), create (or reopen) the run
    directory, start the trial actors, drive the session to the end, write summary.json and the
    run log. A job the environment keeps failing stops the run with `PersistentFailure`
    (summary.json says so; what finished is recorded and `resume=True` continues)."""
    given = plan.given()
    r = plan.resources
    spec, optimizer_specs = plan.spec, tuple(plan.schedule.optimizer_specs.values())
    for optimizer_spec in optimizer_specs:  # the schedule's own optimizers, by name in this process
        lodo.register(optimizer_spec)
    rd = RunDir(plan.run_dir)
    fresh = not rd.path.exists()
    lock = rd.lock()
    started_ray = False
    try:
        if not plan.resume:
            RunDir.check_new(plan.run_dir, holding_lock=True)  # again, under the lock: nobody started on it since the plan
        started_ray = init_ray(r.address, r.workers, r.cpus_per_trial,  # before any `import ray` (quiet start)
                               runtime_env=spec.runtime_env)
        memory = check_memory(plan)
        if not plan.resume:
            rd = RunDir.create(plan.run_dir, task=plan.task, schedule=plan.schedule.to_dict(), seed=plan.seed,
                               optimizers=list(plan.optimizers), hparams=plan.mode, given_hyperparameters=given,
                               full_runs=plan.full_runs, device=plan.resources.device, task_source=spec.source,
                               schedule_source=plan.schedule.source)
        if given is not None:
            rd.write_tuned({"lr_scale": 1.0, "source": plan.mode, "hyperparameters": given, "raw": given})
        rd.log.write("resume" if plan.resume else "start", **_plan_fields(plan))
        try:
            return _run_session(plan, rd, given, memory, optimizer_specs, progress)
        except KeyboardInterrupt:
            rd.log.write("interrupted")
            raise
        except BaseException as e:
            rd.log.write("error", error=f"{type(e).__name__}: {e}")
            raise
    finally:
        if started_ray:
            import ray  # imported by init_ray already

            ray.shutdown()
        lock.release()
        if fresh and not (rd.path / "manifest.json").exists():  # refused before it started: leave nothing
            lock.remove_created()


def _run_session(plan: Plan, rd: RunDir, given, memory, optimizer_specs, progress) -> TuneResult:
    r = plan.resources
    session = Session(rd, plan.schedule, plan.seed, full_runs=plan.full_runs, progress=progress, task=plan.spec.ref)
    executor = Executor(r.workers, r.cpus_per_trial, r.gpus_per_trial, r.device, memory_per_trial=memory,
                        optimizer_specs=optimizer_specs)
    executor.on_event = lambda event: rd.log.write(**event)
    t0 = time.perf_counter()
    try:
        executor.start()
        session.workers, session.batch = executor.workers, r.batch  # the chunking rule's budget (Session._batched)
        rd.log.write("machine", **_machine(executor, r.device))
        jobs = session.start(plan.optimizers, given)
        if plan.resume:
            rd.log.write("resumed", tuning=session.reused, full=session.full_reused)
            logger.info("resumed %s from %d tuning and %d full-run records", rd.path, session.reused,
                        session.full_reused)
        executor.run(jobs, session.on_result)
    except PersistentFailure as e:
        rd.write_summary(_summary(session, executor, t0, executor.workers, stopped=str(e)))
        raise
    finally:
        workers = executor.workers
        executor.stop()
    result = TuneResult(
        task=plan.task, run_dir=rd.path, hyperparameters=given or dict(session.hyperparameters),
        raw=given or dict(session.raw), history={o: ga.history for o, ga in session.gas.items()},
        reused=session.reused, ran=session.ran, errors=session.errors, efficiency=executor.efficiency(),
        wall_seconds=time.perf_counter() - t0, workers=workers,
        report=session.report(plan.optimizers) if plan.full_runs else None,
        full_reused=session.full_reused, full_ran=session.full_ran, retries=executor.retries,
        failed=dict(session.failed))
    summary = _summary(session, executor, t0, workers, wall_seconds=result.wall_seconds)
    rd.write_summary(summary)
    rd.log.write("end", **summary)
    return result


def run(task, *, optimizers=None, schedule=None, seed: int | None = None, run_dir=None, resume: bool = False,
        hyperparameters: str | Mapping | None = None, full_runs: bool | None = None,
        resources: Resources | None = None, progress: ProgressFn | None = None,
        searcher: str | None = None) -> TuneResult:
    """Tune (unless `hyperparameters` is "paper" or a mapping) and then run the full-length runs.

    task: a built-in name, "package.module:Name", "path/to/file.py:Name", a Task subclass or a
        factory f(seed, device, **options) -> Task (`tasks.resolve`, docs/tasks.md); None on resume.

    schedule: a `Schedule`, a bundled name or path (default: the task's bundled schedule; a user
        task has none: give one, `tuner.driver.schedule.template()` is a start). Its optimizer mappings are
        registered (`lodo.register`) in this process and on every worker.
    hyperparameters: "tuned" (run the GA; default), "paper" (Table 6, `lodo.paper_hyperparameters`;
        registry defaults where Table 6 has none) or {optimizer: {hparam: value}} (used as given).
    searcher: "ga" (default), "random", "tpe" or "cmaes" (`tuner.search.optuna`, the `search` extra) instead
        of the schedule's `search.searcher`, at the same budget in individual-steps.
    seed (default 0), hyperparameters and full_runs (default True) left as None on resume are the
    resumed run's. Raises `PlanError` (a ValueError naming the parameter) before anything starts.
    """
    return run_plan(make_plan(task, optimizers=optimizers, schedule=schedule, seed=seed, run_dir=run_dir,
                              resume=resume, hyperparameters=hyperparameters, full_runs=full_runs,
                              resources=resources, searcher=searcher), progress)


def tune(task, *, optimizers=None, schedule=None, seed: int | None = None, run_dir=None, resume: bool = False,
         resources: Resources | None = None, progress: ProgressFn | None = None,
         searcher: str | None = None) -> TuneResult:
    """Tune every optimizer concurrently (the GA, or `searcher`); `.hyperparameters` are the tuned
    values (the final GA mean or the best trial, lr × schedule.lr_scale), `.history` per round."""
    return run(task, optimizers=optimizers, schedule=schedule, seed=seed, run_dir=run_dir, resume=resume,
               hyperparameters="tuned", full_runs=False, resources=resources, progress=progress,
               searcher=searcher)


def evaluate(task, hyperparameters: Mapping[str, Mapping[str, float]] | str, *, steps: int | None = None,
             seeds: int = 8, time_milestone: float | None = None, schedule=None, seed: int | None = None,
             run_dir=None, resume: bool = False, resources: Resources | None = None,
             progress: ProgressFn | None = None) -> dict:
    """Full-length runs of the given hyperparameters ("paper" for Table 6). Returns the report
    {optimizer: {final_loss_mean/std (step milestone), time_loss_mean/std (time milestone, when
    asked), steps_per_second, diverged, seeds, ...}}. `steps` defaults to the schedule's."""
    full_run = {"seeds": seeds, "time_milestone_s": time_milestone, **({"steps": steps} if steps is not None else {})}
    plan = make_plan(task, schedule=schedule, schedule_overrides={"full_run": full_run}, seed=seed,
                     run_dir=run_dir, resume=resume, hyperparameters=hyperparameters, full_runs=True,
                     resources=resources)
    return run_plan(plan, progress).report


def export_table(run_dir_or_result, format: str = "markdown") -> str:
    """Table 6 (tuned hyperparameters) and Table 1 (results) of a run directory, finished or not."""
    path = run_dir_or_result.run_dir if isinstance(run_dir_or_result, TuneResult) else run_dir_or_result
    return export(path, format)
