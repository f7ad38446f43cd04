"""A run's plan: every argument of `tuner.run` resolved and validated once, before anything is
written or started. With `resume=True` what is left unspecified comes from the run directory's
manifest, and what is specified must match it (task, schedule, optimizers, seed, hyperparameters).

Errors are a `PlanError` naming the parameter: ``seed: 'runs/x' was run with seed 0, not 1``.
"""
from __future__ import annotations

import dataclasses
import datetime
import math
from pathlib import Path
from typing import Mapping

import torch

import lodo
import tasks
from tuner.rundir import RunDir, RunDirError
from tuner.recipe import tunables as recipe_tunables
from tuner.schedule import SEARCHERS, Schedule, ScheduleError, load_schedule, merge
from tuner.search import SearcherUnavailable, require


class PlanError(ValueError):
    """An argument that cannot be used; `.parameter` names it ("seed", "resources.workers", ...)."""

    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter, self.message = parameter, message


def _number(parameter: str, value, minimum: float, strict: bool) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) \
        and (value > minimum if strict else value >= minimum)
    if not ok:
        raise PlanError(parameter, f"{value!r} is not allowed (must be a number {'>' if strict else '>='} {minimum})")


@dataclasses.dataclass(frozen=True)
class Resources:
    """Where trials run, like Ray's ScalingConfig: `workers` slots (default: all cores) of a local
    Ray or the cluster at `address`, each with `cpus_per_trial` CPUs and `gpus_per_trial` GPUs
    (fractions allowed), trials on `device`; `memory_per_trial` GiB of memory each (default: the
    estimate of `tuner.memory`, the largest among the run's optimizers). `batch` (default True): run the individuals of a
    generation, and an optimizer's full runs, as batched trials where the (task, optimizer) has a
    batched form (`tuner.trial.run_batched_trial`; False: one `run_trial` per job, the reference)."""

    workers: int | None = None
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    device: str = "cpu"
    memory_per_trial: float | None = None
    batch: bool = True

    def __post_init__(self):
        if not isinstance(self.batch, bool):
            raise PlanError("resources.batch", f"{self.batch!r} is not allowed (must be True or False)")
        w = self.workers
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise PlanError("resources.workers", f"{w!r} is not allowed (must be an integer >= 1 or None)")
        _number("resources.cpus_per_trial", self.cpus_per_trial, 0, strict=True)
        _number("resources.gpus_per_trial", self.gpus_per_trial, 0, strict=False)
        if self.memory_per_trial is not None:
            _number("resources.memory_per_trial", self.memory_per_trial, 0, strict=True)
        if self.device not in ("cpu", "cuda"):
            raise PlanError("resources.device", f"{self.device!r} is not allowed (must be 'cpu' or 'cuda')")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise PlanError("resources.device", "cuda is not available here (torch sees no CUDA device)")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What `tuner.api.run_plan` runs (build it with `make_plan`)."""

    task: str
    schedule: Schedule
    optimizers: tuple[str, ...]
    seed: int
    run_dir: Path
    resume: bool
    hyperparameters: str | dict      # "tuned" (run the GA), "paper" (Table 6) or {optimizer: {hp: value}}
    full_runs: bool
    resources: Resources
    task_spec: tasks.TaskSpec | None = None  # the resolved task (`task` is its display name); None: tasks.resolve(task)

    @property
    def spec(self) -> tasks.TaskSpec:
        """The resolved task: what jobs carry (`.ref`), what Ray needs (`.runtime_env`), the manifest's source."""
        return self.task_spec if self.task_spec is not None else tasks.resolve(self.task)

    @property
    def searcher(self) -> str:
        """What tunes: "ga" (Appendix E), "random", "tpe" or "cmaes" (the schedule's `search.searcher`)."""
        return self.schedule.search.searcher

    @property
    def mode(self) -> str:
        """As the manifest records it: "tuned", "paper" or "given"."""
        return self.hyperparameters if isinstance(self.hyperparameters, str) else "given"

    def given(self) -> dict | None:
        """The fixed hyperparameters of the full runs, or None when they are tuned. "paper": Table 6
        (`lodo.paper_hyperparameters`), the registry defaults where Table 6 has no row."""
        if self.hyperparameters == "tuned":
            return None
        if self.hyperparameters == "paper":
            table = lodo.paper_hyperparameters(self.task)
            return {o: dict(table.get(o, {h.name: h.default for h in lodo.hyperparameters(o)}))
                    for o in self.optimizers}
        return {o: dict(self.hyperparameters[o]) for o in self.optimizers}


def default_run_dir(task: str) -> Path:
    return Path("runs") / f"{task}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _one_of(parameter: str, what: str, name, valid: list[str]) -> None:
    if name not in valid:
        raise PlanError(parameter, f"unknown {what} {name!r} (valid: {', '.join(valid)})")


def _schedule(schedule, overrides, spec: tasks.TaskSpec, manifest: dict | None, run_dir) -> Schedule:
    names = None if spec.builtin else [spec.name]  # a user task's schedule may name it
    if isinstance(schedule, Schedule):
        return Schedule.from_dict(merge(schedule.to_dict(), overrides), f"{schedule.source} (with overrides)",
                                  task_names=names) if overrides else schedule
    if schedule is None and manifest is not None:
        data = merge(manifest["schedule"], overrides or {})
        return Schedule.from_dict(data, f"{run_dir}/manifest.json" + (" (with overrides)" if overrides else ""),
                                  task_names=names)
    if schedule is None and not spec.builtin:
        raise PlanError("schedule", f"required for task {spec.name!r} (a user task has no bundled schedule; "
                                    "`lodo-tune init-schedule` writes a template to start from)")
    return load_schedule(schedule or spec.name, overrides, task_names=names)


def _task(task, manifest: dict | None, where: str) -> tasks.TaskSpec:
    """The resolved task: `task` as given, else the resumed run's (rebuilt from its recorded source)."""
    if task is None and manifest is not None:
        source = manifest.get("task_source", manifest["task"])
        if source is None:
            raise PlanError("task", f"{where} is a run of task {manifest['task']!r} defined in a script (__main__): "
                                    "pass the task object again to resume it")
        task = source
    if task is None:
        raise PlanError("task", f"required (one of: {', '.join(tasks.available())}; or \"package.module:Name\", "
                                "\"path/to/file.py:Name\", a Task subclass or factory)")
    try:
        spec = tasks.resolve(task)
    except ValueError as e:
        message = str(e)
        if message.startswith("Unknown task: "):  # a name that is neither built-in nor a spec
            message = f"unknown task {message[len('Unknown task: '):]}"
        raise PlanError("task", message) from None
    if manifest is not None and manifest["task"] != spec.name:
        raise PlanError("task", f"{where} is a run of task {manifest['task']!r}, not {spec.name!r}")
    return spec


def _optimizer_names(schedule: Schedule) -> list[str]:
    """The registry's optimizers and those the schedule declares."""
    return list(lodo.available()) + [o for o in schedule.optimizer_specs if o not in lodo.available()]


def _space_names(schedule: Schedule, optimizer: str) -> list[str]:
    spec = schedule.optimizer_specs.get(optimizer)
    return [h.name for h in (spec.hyperparameters if spec else lodo.hyperparameters(optimizer))] \
        + [t.name for t in recipe_tunables(schedule.recipe.get(optimizer))]  # a recipe's tuned values


def _check_user_task(spec: tasks.TaskSpec, options: dict) -> None:
    """Build a user task once (seed 0, CPU), so a factory that fails or returns no Task stops the run here."""
    try:
        spec.create(seed=0, device="cpu", **options)
    except ValueError as e:
        raise PlanError("task", str(e)) from None
    except Exception as e:  # noqa: BLE001 - the user's code raised
        first = str(e).splitlines()[0] if str(e) else ""
        raise PlanError("task", f"building {spec.source or spec.name!r} failed ({type(e).__name__}: {first})") from None


def _hyperparameters(value, optimizers: list[str], schedule: Schedule) -> dict:
    """{optimizer: {hp: float}} for `optimizers`, checked against the registry and the schedule's optimizers."""
    if not isinstance(value, Mapping):
        raise PlanError("hyperparameters", f"{value!r} is not allowed (must be 'tuned', 'paper' or "
                                           "a mapping optimizer -> {hyperparameter: value})")
    for opt, hp in value.items():
        _one_of("hyperparameters", "optimizer", opt, _optimizer_names(schedule))
        if not isinstance(hp, Mapping):
            raise PlanError("hyperparameters", f"{opt}: {hp!r} is not allowed (must map hyperparameter -> value)")
        valid = _space_names(schedule, opt)
        for name, v in hp.items():
            if name not in valid:
                raise PlanError("hyperparameters", f"unknown hyperparameter {name!r} for {opt} (valid: {', '.join(valid)})")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise PlanError("hyperparameters", f"{opt}.{name}: {v!r} is not allowed (must be a finite number)")
    missing = [o for o in optimizers if o not in value]
    if missing:
        raise PlanError("hyperparameters", f"no values for {', '.join(missing)}")
    return {o: {k: float(v) for k, v in value[o].items()} for o in optimizers}


def _searcher(searcher, manifest: dict | None, where: str) -> dict:
    """The schedule override that `searcher` (None: the schedule's) amounts to, checked."""
    if searcher is None:
        return {}
    if searcher not in SEARCHERS:
        raise PlanError("searcher", f"unknown searcher {searcher!r} (valid: {', '.join(SEARCHERS)})")
    if manifest is not None:
        recorded = (manifest["schedule"].get("search") or {}).get("searcher", "ga")
        if recorded != searcher:
            raise PlanError("searcher", f"{where} was tuned with searcher {recorded!r}, not {searcher!r} "
                                        "(start a new run directory to tune with another)")
    return {"search": {"searcher": searcher}}


def make_plan(task: str | None = None, *, optimizers=None, schedule=None, schedule_overrides: Mapping | None = None,
              seed: int | None = None, run_dir=None, resume: bool = False, hyperparameters=None,
              full_runs: bool | None = None, resources: Resources | None = None, searcher: str | None = None) -> Plan:
    """Resolve and validate the arguments of a run; raises PlanError. Writes nothing, starts nothing.

    schedule: a `Schedule`, a bundled name or a YAML path (default: the task's, or the resumed run's);
    schedule_overrides: fields replaced for this run ({"full_run": {"steps": 1000}}).
    searcher: "ga", "random", "tpe" or "cmaes" instead of the schedule's `search.searcher` (default "ga").
    Defaults: seed 0, hyperparameters "tuned", full_runs True, run_dir runs/<task>-<timestamp>.
    """
    manifest = None
    if resume:
        if run_dir is None:
            raise PlanError("run_dir", "required to resume")
        try:
            manifest = RunDir.open(run_dir).manifest
        except RunDirError as e:
            raise PlanError("run_dir", str(e)) from None
    where = repr(str(run_dir))
    spec = _task(task, manifest, where)
    task = spec.name
    searcher_override = _searcher(searcher, manifest, where)
    if searcher_override:
        schedule_overrides = merge(dict(schedule_overrides or {}), searcher_override)

    try:
        schedule = _schedule(schedule, schedule_overrides, spec, manifest, run_dir)
        if manifest is not None and Schedule.from_dict(
                manifest["schedule"], task_names=None if spec.builtin else [spec.name]) != schedule:
            raise PlanError("schedule", f"{where} was run with another schedule")
    except ScheduleError as e:
        raise PlanError("schedule", str(e)) from None
    if schedule.task not in (None, task):
        raise PlanError("schedule", f"{schedule.source} is for task {schedule.task!r}, not {task!r}")
    if not spec.accepts_any_option():
        for name in schedule.task_options:
            if name not in spec.options():
                raise PlanError(f"task_options.{name}", f"not an option of task {task!r} "
                                                        f"(valid: {', '.join(spec.options()) or 'none'})")
    if not spec.builtin:
        _check_user_task(spec, schedule.task_options)

    if optimizers is not None:
        optimizers = list(optimizers)
        if not optimizers:
            raise PlanError("optimizers", "empty list")
        for i, o in enumerate(optimizers):
            _one_of("optimizers", "optimizer", o, _optimizer_names(schedule))
            if o in optimizers[:i]:
                raise PlanError("optimizers", f"{o!r} is repeated")
    elif manifest is not None:
        optimizers = list(manifest["optimizers"])
    elif isinstance(hyperparameters, Mapping):
        optimizers = list(hyperparameters)
    else:
        optimizers = list(schedule.optimizers)
    if manifest is not None and manifest["optimizers"] != optimizers:
        raise PlanError("optimizers", f"{where} runs {', '.join(manifest['optimizers'])}, not {', '.join(optimizers)}")

    if hyperparameters is None and manifest is not None:
        mode = manifest.get("hparams", "tuned")
        hyperparameters = manifest["given_hyperparameters"] if mode == "given" else mode
    hyperparameters = "tuned" if hyperparameters is None else hyperparameters
    if hyperparameters == "paper" and not spec.builtin:
        raise PlanError("hyperparameters", f"'paper' is only for the paper's tasks (Table 6 has no values for "
                                           f"{task!r}): tune them, or give a mapping optimizer -> {{hparam: value}}")
    if hyperparameters == "paper":
        try:
            lodo.paper_hyperparameters(task)
        except ValueError as e:
            raise PlanError("hyperparameters", str(e)) from None
    elif hyperparameters != "tuned":
        hyperparameters = _hyperparameters(hyperparameters, optimizers, schedule)

    if hyperparameters == "tuned" and schedule.search.searcher != "ga":
        try:
            require(schedule.search.searcher)
        except SearcherUnavailable as e:
            raise PlanError("searcher", str(e)) from None

    if seed is None:
        seed = (manifest or {}).get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise PlanError("seed", f"{seed!r} is not allowed (must be an integer >= 0)")
    if manifest is not None and manifest["seed"] != seed:
        raise PlanError("seed", f"{where} was run with seed {manifest['seed']}, not {seed}")

    if full_runs is None:
        full_runs = (manifest or {}).get("full_runs", True)
    plan = Plan(task=task, schedule=schedule, optimizers=tuple(optimizers), seed=seed,
                run_dir=Path(run_dir) if run_dir is not None else default_run_dir(task), resume=resume,
                hyperparameters=hyperparameters, full_runs=bool(full_runs), resources=resources or Resources(),
                task_spec=spec)
    if manifest is not None and (manifest.get("hparams", "tuned"), manifest.get("given_hyperparameters")) \
            != (plan.mode, plan.given()):
        raise PlanError("hyperparameters", f"{where} was run with hyperparameters {manifest.get('hparams')!r}"
                                           + (" (other values)" if manifest.get("hparams") == plan.mode else ""))
    if not resume:
        try:
            RunDir.check_new(plan.run_dir)
        except RunDirError as e:
            raise PlanError("run_dir", str(e)) from None
    return plan
