"""The programmatic API: `tune` (the Appendix-E GA for every optimizer, concurrently, on Ray),
`evaluate` (full-length runs, 8 seeds, Table 1's milestones), `run` (both, as the CLI does) and
`export_table`. Everything after `task` is keyword-only; resources go in a `Resources`.

    result = tuner.tune("noisy_bowl", optimizers=["Adam", "LODO"], run_dir="runs/nb",
                        resources=tuner.Resources(workers=2))

Everything lands in a run directory (`tuner.rundir`) as it finishes, so `resume=True` re-runs
only what is missing (`tuner.session`), bit-identically.
"""
from __future__ import annotations

import time
from typing import Mapping

from tuner.executor import Executor, init_ray
from tuner.export import export
from tuner.plan import Plan, Resources, make_plan
from tuner.results import TuneResult
from tuner.rundir import RunDir
from tuner.session import ProgressFn, Session


def run_plan(plan: Plan, progress: ProgressFn | None = None) -> TuneResult:
    """Run a validated plan: create (or reopen) its run directory, start Ray and the trial actors,
    drive the session to the end, write summary.json."""
    given = plan.given()
    if plan.resume:
        rd = RunDir(plan.run_dir)
    else:
        rd = RunDir.create(plan.run_dir, task=plan.task, schedule=plan.schedule.to_dict(), seed=plan.seed,
                           optimizers=list(plan.optimizers), hparams=plan.mode, given_hyperparameters=given,
                           full_runs=plan.full_runs, device=plan.resources.device)
    if given is not None:
        rd.write_tuned({"lr_scale": 1.0, "source": plan.mode, "hyperparameters": given, "raw": given})
    session = Session(rd, plan.schedule, plan.seed, full_runs=plan.full_runs, progress=progress)
    r = plan.resources
    started_ray = init_ray(r.address, r.workers, r.cpus_per_trial)  # before any `import ray` (quiet start)
    executor = Executor(r.workers, r.cpus_per_trial, r.gpus_per_trial, r.device)
    t0 = time.perf_counter()
    try:
        executor.start()
        session.workers, session.batch = executor.workers, r.batch  # the chunking rule's budget (Session._batched)
        executor.run(session.start(plan.optimizers, given), session.on_result)
    finally:
        workers = executor.workers
        executor.stop()
        if started_ray:
            import ray  # imported by init_ray already

            ray.shutdown()
    result = TuneResult(
        task=plan.task, run_dir=rd.path, hyperparameters=given or dict(session.hyperparameters),
        raw=given or dict(session.raw), history={o: ga.history for o, ga in session.gas.items()},
        reused=session.reused, ran=session.ran, errors=session.errors, efficiency=executor.efficiency(),
        wall_seconds=time.perf_counter() - t0, workers=workers,
        report=session.report(plan.optimizers) if plan.full_runs else None,
        full_reused=session.full_reused, full_ran=session.full_ran)
    rd.write_summary({"reused": result.reused, "ran": result.ran, "errors": result.errors,
                      "full_reused": result.full_reused, "full_ran": result.full_ran,
                      "efficiency": result.efficiency, "wall_seconds": result.wall_seconds, "workers": workers,
                      "resubmitted": executor.resubmitted, "compute_seconds": executor.compute_seconds})
    return result


def run(task: str, *, optimizers=None, schedule=None, seed: int | None = None, run_dir=None, resume: bool = False,
        hyperparameters: str | Mapping | None = None, full_runs: bool | None = None,
        resources: Resources | None = None, progress: ProgressFn | None = None) -> TuneResult:
    """Tune (unless `hyperparameters` is "paper" or a mapping) and then run the full-length runs.

    schedule: a `Schedule`, a bundled name or path (default: the task's bundled schedule).
    hyperparameters: "tuned" (run the GA; default), "paper" (Table 6, `lodo.paper_hyperparameters`;
        registry defaults where Table 6 has none) or {optimizer: {hparam: value}} (used as given).
    seed (default 0), hyperparameters and full_runs (default True) left as None on resume are the
    resumed run's. Raises `PlanError` (a ValueError naming the parameter) before anything starts.
    """
    return run_plan(make_plan(task, optimizers=optimizers, schedule=schedule, seed=seed, run_dir=run_dir,
                              resume=resume, hyperparameters=hyperparameters, full_runs=full_runs,
                              resources=resources), progress)


def tune(task: str, *, optimizers=None, schedule=None, seed: int | None = None, run_dir=None, resume: bool = False,
         resources: Resources | None = None, progress: ProgressFn | None = None) -> TuneResult:
    """Run the GA for every optimizer concurrently; `.hyperparameters` are the tuned values
    (final GA mean, lr × schedule.lr_scale), `.history` the GA histories."""
    return run(task, optimizers=optimizers, schedule=schedule, seed=seed, run_dir=run_dir, resume=resume,
               hyperparameters="tuned", full_runs=False, resources=resources, progress=progress)


def evaluate(task: str, hyperparameters: Mapping[str, Mapping[str, float]] | str, *, steps: int | None = None,
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
