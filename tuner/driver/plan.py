"""A run's plan: every argument of `tuner.run` resolved and validated once, before anything is
written or started. With `resume=True` what is left unspecified comes from the run directory's
manifest, and what is specified must match it (task, schedule, optimizers, seed, hyperparameters).

Errors are a `PlanError` naming the parameter: ``seed: 'runs/x' was run with seed 0, not 1``.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import os
import re
import socket
from pathlib import Path
from typing import Mapping

import torch

import lodo
import tasks
from tuner.driver import preflight
from tuner.driver.rundir import RunDir, RunDirError
from tuner.search import SEARCHERS
from tuner.trial.recipe import tunables as recipe_tunables
from tuner.driver.schedule import Schedule, ScheduleError, clean, load_schedule, merge, value_problem
from tuner.search.optuna import SearcherUnavailable, require


logger = logging.getLogger(__name__)


class PlanError(ValueError):
    """An argument that cannot be used; `.parameter` names it ("seed", "resources.workers", ...)."""

    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}")
        self.parameter, self.message = parameter, message


# Resources no machine has (docs/tasks.md, "Limits"); beyond them Ray would refuse, hang or schedule nothing.
MAX_WORKERS, MAX_CPUS_PER_TRIAL, MAX_GPUS_PER_TRIAL, MAX_MEMORY_GIB = 10_000, 1024, 64, 2**20
MAX_SEED = 2**40
ADDRESS_TIMEOUT_S = 10.0  # how long a cluster's --address may take to accept a connection
_ADDRESS = re.compile(r"(?:ray://)?(?:(?P<host>[A-Za-z0-9_.-]+)|\[(?P<ip6>[0-9A-Fa-f:.]+)\]):(?P<port>[0-9]{1,5})")


def _number(parameter: str, value, minimum: float, strict: bool, maximum: float = math.inf) -> None:
    try:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) \
            and (value > minimum if strict else value >= minimum)
    except OverflowError:  # an int too large for a float
        ok = False
    if not ok:
        raise PlanError(parameter, f"{clean(repr(value), 60)} is not allowed (must be a number "
                                   f"{'>' if strict else '>='} {minimum})")
    if value > maximum:
        raise PlanError(parameter, f"{value!r} is not allowed (must be at most {maximum:g}: no machine has more)")


def address_parts(address: str) -> tuple[str, int] | None:
    """(host, port) of a cluster address "host:port" or "ray://host:port"; None for "auto"/"local"
    (Ray finds or starts the cluster itself); PlanError for anything else."""
    if address in ("auto", "local"):
        return None
    match = _ADDRESS.fullmatch(address) if isinstance(address, str) else None
    host = match and (match["host"] or match["ip6"])
    if match is None or not 0 < int(match["port"]) < 65536 or len(host) > 253 \
            or any(not 0 < len(label) <= 63 for label in host.split(".") if match["host"]):
        raise PlanError("resources.address", f"{clean(repr(address), 80)} is not allowed (must be host:port, "
                                             "ray://host:port or auto)")
    return host, int(match["port"])


def check_address(address: str, timeout: float = ADDRESS_TIMEOUT_S) -> None:
    """PlanError unless the cluster at `address` accepts a TCP connection within `timeout` seconds
    (a host that does not answer would otherwise keep Ray's start waiting for minutes)."""
    parts = address_parts(address)
    if parts is None:
        return
    try:
        socket.create_connection(parts, timeout=timeout).close()
    except (OSError, UnicodeError) as e:  # UnicodeError: a host name the resolver cannot encode
        why = "did not answer" if isinstance(e, TimeoutError) else (getattr(e, "strerror", None) or type(e).__name__).lower()
        raise PlanError("resources.address", f"{clean(repr(address), 80)}: {why} within {timeout:g} s "
                                             "(is the Ray cluster running there?)") from None


@dataclasses.dataclass(frozen=True)
class Resources:
    """Where trials run, like Ray's ScalingConfig: `workers` slots (default: all cores) of a local
    Ray or the cluster at `address`, each with `cpus_per_trial` CPUs and `gpus_per_trial` GPUs
    (fractions allowed), trials on `device`; `memory_per_trial` GiB of memory each (default: the
    estimate of `tuner.driver.memory`, the largest among the run's optimizers). `batch` (default True): run the individuals of a
    generation, and an optimizer's full runs, as batched trials where the (task, optimizer) has a
    batched form (`tuner.trial.loop.run_batched_trial`; False: one `run_trial` per job, the reference)."""

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
            raise PlanError("resources.workers", f"{clean(repr(w), 60)} is not allowed (must be an integer >= 1 or None)")
        if w is not None and w > MAX_WORKERS:
            raise PlanError("resources.workers", f"{w!r} is not allowed (must be at most {MAX_WORKERS:,}: no machine has more)")
        _number("resources.cpus_per_trial", self.cpus_per_trial, 0, strict=True, maximum=MAX_CPUS_PER_TRIAL)
        _number("resources.gpus_per_trial", self.gpus_per_trial, 0, strict=False, maximum=MAX_GPUS_PER_TRIAL)
        if self.memory_per_trial is not None:
            _number("resources.memory_per_trial", self.memory_per_trial, 0, strict=True, maximum=MAX_MEMORY_GIB)
        if self.device not in ("cpu", "cuda"):
            raise PlanError("resources.device", f"{clean(repr(self.device), 60)} is not allowed (must be 'cpu' or 'cuda')")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise PlanError("resources.device", "cuda is not available here (torch sees no CUDA device)")
        if self.address is not None:
            if not isinstance(self.address, str):
                raise PlanError("resources.address", f"{clean(repr(self.address), 60)} is not allowed (must be a string)")
            address_parts(self.address)
        else:  # a local Ray has this machine's CPUs and GPUs: a trial needing more would never be scheduled
            cpus = os.cpu_count() or 1
            if self.workers is None and self.cpus_per_trial > cpus:
                raise PlanError("resources.cpus_per_trial", f"{self.cpus_per_trial:g} is more than this machine's "
                                                            f"{cpus} CPUs (give --workers to oversubscribe them)")
            gpus = torch.cuda.device_count()
            if self.gpus_per_trial > gpus:
                raise PlanError("resources.gpus_per_trial", f"{self.gpus_per_trial:g} is more than this machine's "
                                                            f"{gpus} GPUs (a trial would never start)")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What `tuner.driver.api.run_plan` runs (build it with `make_plan`)."""

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
        raise PlanError("task", clean(message, 400)) from None
    except SystemExit as e:  # the task's module called sys.exit() while being imported
        raise PlanError("task", f"importing {clean(repr(task), 120)} called sys.exit({clean(repr(e.code), 40)})") from None
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


def _check_user_task(spec: tasks.TaskSpec, options: dict) -> tasks.Task:
    """Build a user task once (seed 0, CPU), so a factory that fails or returns no Task stops the run here."""
    try:
        return spec.create(seed=0, device="cpu", **options)
    except ValueError as e:
        raise PlanError("task", clean(e, 400)) from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's code raised (or called sys.exit)
        first = str(e).splitlines()[0] if str(e) else ""
        raise PlanError("task", f"building {clean(spec.source or spec.name, 120)!r} failed "
                                f"({type(e).__name__}: {clean(first, 200)})") from None


def _hyperparameters(value, optimizers: list[str], schedule: Schedule) -> dict:
    """{optimizer: {hp: float}} for `optimizers`, checked against the registry and the schedule's optimizers."""
    if not isinstance(value, Mapping):
        raise PlanError("hyperparameters", f"{value!r} is not allowed (must be 'tuned', 'paper' or "
                                           "a mapping optimizer -> {hyperparameter: value})")
    for opt, hp in value.items():
        if opt not in _optimizer_names(schedule):
            raise PlanError("hyperparameters", f"unknown optimizer {clean(repr(opt), 60)} "
                                               f"(valid: {', '.join(_optimizer_names(schedule))})")
        if not isinstance(hp, Mapping):
            raise PlanError("hyperparameters", f"{opt}: {clean(repr(hp), 60)} is not allowed (must map hyperparameter -> value)")
        spec = schedule.optimizer_specs.get(opt)
        scales = {h.name: h.scale for h in (spec.hyperparameters if spec else lodo.hyperparameters(opt))}
        for name, v in hp.items():
            if name not in scales:
                raise PlanError("hyperparameters", f"unknown hyperparameter {clean(repr(name), 60)} for {opt} "
                                                   f"(valid: {', '.join(scales)})")
            problem = "must be a finite number" if isinstance(v, bool) or not isinstance(v, (int, float)) \
                else value_problem(v, scales[name])  # lodo.registry's domain: lr > 0, a decay rate in [0, 1), ...
            if problem:
                raise PlanError("hyperparameters", f"{opt}.{name}: {clean(repr(v), 60)} is not allowed ({problem})")
    missing = [o for o in optimizers if o not in value]
    if missing:
        raise PlanError("hyperparameters", f"no values for {', '.join(missing)}")
    return {o: {k: float(v) for k, v in value[o].items()} for o in optimizers}


def _searcher(searcher, manifest: dict | None, where: str) -> dict:
    """The schedule override that `searcher` (None: the schedule's) amounts to, checked."""
    if searcher is None:
        return {}
    if searcher not in SEARCHERS:
        raise PlanError("searcher", f"unknown searcher {clean(repr(searcher), 60)} (valid: {', '.join(SEARCHERS)})")
    if manifest is not None:
        recorded = (manifest["schedule"].get("search") or {}).get("searcher", "ga")
        if recorded != searcher:
            raise PlanError("searcher", f"{where} was tuned with searcher {recorded!r}, not {searcher!r} "
                                        "(start a new run directory to tune with another)")
    return {"search": {"searcher": searcher}}


def _checked_schedule(schedule, overrides, spec: tasks.TaskSpec, manifest: dict | None, run_dir, where: str):
    """The run's schedule (the resumed run's must match), its task options checked against the task, and a
    user task built once (None for a built-in one)."""
    task = spec.name
    try:
        schedule = _schedule(schedule, overrides, spec, manifest, run_dir)
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
                raise PlanError(f"task_options.{clean(name, 40)}", f"not an option of task {task!r} "
                                                                  f"(valid: {', '.join(spec.options()) or 'none'})")
    if spec.builtin:
        try:
            tasks.check_options(spec, schedule.task_options)
        except tasks.OptionError as e:
            raise PlanError(f"task_options.{e.option}", f"{e.message}; in {schedule.source}") from None
    with preflight.global_rng_kept():  # a user factory may draw from the global generators: not ours to consume
        built = _check_user_task(spec, schedule.task_options) if not spec.builtin else None
    return schedule, built


def _optimizer_list(optimizers, manifest: dict | None, hyperparameters, schedule: Schedule, where: str):
    """The optimizers to run: given (each once, each in the schedule), the resumed run's, the given values', or the schedule's."""
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
    return optimizers


def _given_values(hyperparameters, manifest: dict | None, spec: tasks.TaskSpec, optimizers: list, schedule: Schedule):
    """"tuned", "paper" (Table 6; the paper's tasks only) or {optimizer: {name: value}} checked; a searcher's extra installed."""
    task = spec.name
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
    return hyperparameters


def _seed(seed, manifest: dict | None, where: str):
    """The tuner seed: given, the resumed run's, or 0; below 2**40."""
    if seed is None:
        seed = (manifest or {}).get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise PlanError("seed", f"{clean(repr(seed), 60)} is not allowed (must be an integer >= 0)")
    if seed >= MAX_SEED:  # full run i of tuner seed s is trial seed 1000·s + i, which torch's generator must take
        raise PlanError("seed", f"{clean(repr(seed), 60)} is not allowed (must be below 2**40)")
    if manifest is not None and manifest["seed"] != seed:
        raise PlanError("seed", f"{where} was run with seed {manifest['seed']}, not {seed}")
    return seed


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
            opened = RunDir.open(run_dir)
            manifest = opened.manifest
        except RunDirError as e:
            raise PlanError("run_dir", str(e)) from None
    where = repr(clean(run_dir, 200))
    spec = _task(task, manifest, where)
    task = spec.name
    if searcher is not None and hyperparameters not in (None, "tuned"):
        raise PlanError("searcher", f"{clean(repr(searcher), 40)} tunes, and hyperparameters "
                                    f"{clean(repr(hyperparameters), 40) if isinstance(hyperparameters, str) else '(a mapping)'} "
                                    "are not tuned: give one or the other")
    searcher_override = _searcher(searcher, manifest, where)
    if searcher_override:
        schedule_overrides = merge(dict(schedule_overrides or {}), searcher_override)

    schedule, built = _checked_schedule(schedule, schedule_overrides, spec, manifest, run_dir, where)
    optimizers = _optimizer_list(optimizers, manifest, hyperparameters, schedule, where)
    hyperparameters = _given_values(hyperparameters, manifest, spec, optimizers, schedule)
    seed = _seed(seed, manifest, where)
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
    try:  # the task and every optimizer, a couple of steps each: a mistake is exit 2 before any trial
        preflight.check(spec, schedule, plan.optimizers, plan.given(), plan.mode == "paper", task=built)
    except preflight.PreflightError as e:
        raise PlanError(e.parameter, e.message) from None
    if plan.resources.address is not None:  # last: every other check answers before this wait
        check_address(plan.resources.address)
    if resume and opened.legacy:
        logger.warning("%r is a format-1 run directory (from before digests were required): its records "
                       "are checked against their sha256 where they have one", clean(run_dir, 200))
    return plan
