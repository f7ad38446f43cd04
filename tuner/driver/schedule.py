"""Tuning schedules: one YAML per task holding Table 5 (docs/paper.md §4) and what a run needs.

    task: rosenbrock                    # optional for a user task; when given, the task's name
    population: 32                      # individuals per generation (>= 2)
    generations:                        # Table 5: GA noise σ (rescaled space) and steps per individual
      - {noise: 3, steps: 200}
      - {noise: 2, steps: 200, population: 64}   # optional: this generation's own size (>= 2)
      ...
    optimizers:                         # tuned by default: registry names or user optimizers
      - Adam
      - name: AdamW                     # any torch optimizer (lodo.OptimizerSpec; docs/tasks.md)
        optimizer: torch.optim.AdamW
        hyperparameters: {lr: {default: 1.0e-3, scale: log}, betas.0: {default: 0.9, scale: decay}}
        fixed: {eps: 1.0e-8}
    full_run: {steps: 200, seeds: 8, time_milestone_s: null}
    lr_scale: 1                         # multiplies the tuned lr before full runs (0.5: image_generation)
    task_options: {}                    # optional, passed to tasks.create
    scales: {RMSprop: {rho: log}}       # optional per-hyperparameter scale overrides
    start: {Adam: {lr: 0.01}}           # optional GA starting values (default: the registry defaults)
    horizon: {L-BFGS: [tau]}            # optional: hyperparameters whose best value depends on the run's
                                        #   length, searched as their value at the full run's length. Listed:
                                        #   counted in steps (a time constant), a trial of S steps runs
                                        #   value·S/full_run.steps; {LODO: {meta_lr: -0.25}}: a trial runs
                                        #   value·(S/full_run.steps)^p, p measured; a decay rate
                                        #   scales through its time constant 1/(1 − β) ({Yogi: [beta2]})
    search:                             # optional: another searcher than the GA (tuner.search.optuna, tuner.search.space)
      searcher: tpe                     # ga (default), random, tpe or cmaes
      trials: 100                       # default: the GA's budget Σ population·seeds·steps_g // steps
      steps: 8000                       # steps per trial; default: the last generation's (finalists: the one before)
      round: 8                          # trials asked, run and told together; default: 8 (TPE, CMA-ES), population (random)
      bounds: {lr: [1.0e-3, 10], L-BFGS: {tau: [10, 1.0e7]}}   # [low, high] of the value, all or one optimizer
    objective: train_loss               # optional: what every searcher selects on. train_loss (default, the
                                        #   paper's: mean training loss over a trial's last 10 %) or a metric
                                        #   of the task's evaluate() after the trial: {metric: val_accuracy,
                                        #   mode: max} (mode min or max)
    noise_check: true                   # optional (default true): re-run each generation's best on another
                                        #   seed (one extra trial per generation, GA state untouched) and flag a
                                        #   generation whose spread is within that noise (tuner.driver.noise)
    ga: {init: uniform, step_size: csa} # optional GA options beyond Appendix E (default: the paper's GA):
                                        #   init, step_size, covariance, seeds, trial_seeds, final,
                                        #   recombination, boundary (docs/tuning.md; tuner.search.ga.GAConfig)
    recipe:                             # optional, per optimizer: the training recipe (tuner.trial.recipe, docs/tasks.md)
      AdamW:
        lr_schedule: {name: cosine, warmup: 0.05, final: 0.1}   # constant, cosine, linear, step
                                        #   (milestones, gamma) or a torch scheduler with its arguments;
                                        #   warmup, final's place and milestones are fractions of the run
        clip_grad_norm: {default: 1.0, scale: log}   # any number may be {default, scale}: tuned
    prune: {at: [0.1, 0.25, 0.5], quantile: 1}   # optional: stop GA trials clearly worse at these
                                        #   fractions than the previous generation's better half (tuner.trial.prune)

`schedules/<task>-improved.yaml` use the `ga:` options;
`Schedule.individual_steps()` is the GA's budget per optimizer.

Every error is a `ScheduleError` whose str is one line naming file, field, value and what is
allowed, e.g. `schedules/x.yaml: generations[3].steps: -5 is not allowed (must be a positive integer)`.
"""
from __future__ import annotations

import copy
import importlib
import importlib.resources
import math
import os
import stat
from collections import namedtuple
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from tuner.search import SEARCHERS
from tuner.search.ga import SCALES, Dimension, GAConfig, GAOptionError, rescale
from tuner.trial import prune, recipe

Generation = namedtuple("Generation", "noise steps population", defaults=(None,))
"""One row of Table 5 (population None: the schedule's); a tuple, so `schedule.generations` goes
straight to `GeneticAlgorithm`."""

FullRun = namedtuple("FullRun", "steps seeds time_milestone_s")
"""The full-length runs after tuning: steps, number of seeds, wall-clock milestone (s) or None."""

REQUIRED = ("population", "generations", "optimizers", "full_run", "lr_scale")
OPTIONAL = ("task", "task_options", "scales", "start", "horizon", "search", "ga", "objective", "noise_check",
            "recipe", "prune")
SPEC_KEYS, SPEC_OPTIONAL, HYPERPARAMETER_KEYS = ("name", "optimizer"), ("hyperparameters", "fixed"), ("default", "scale")
FULL_RUN_KEYS = ("steps", "seeds", "time_milestone_s")
GENERATION_KEYS = ("noise", "steps")
GENERATION_OPTIONAL = ("population",)
SEARCH_KEYS = ("searcher", "trials", "steps", "round", "bounds")
GA_KEYS = tuple(f.name for f in fields(GAConfig))
OBJECTIVE_KEYS, MODES, TRAIN_LOSS = ("metric", "mode"), ("min", "max"), "train_loss"


class Objective(namedtuple("Objective", "metric mode", defaults=(TRAIN_LOSS, "min"))):
    """What every searcher selects on: `train_loss` (the paper's: the mean training loss over a trial's
    last 10 %) or `metric`, a key of the task's `evaluate()` after the trial, minimised or maximised."""

    @property
    def is_train_loss(self) -> bool:
        return self.metric == TRAIN_LOSS

    def to_dict(self):
        return TRAIN_LOSS if self.is_train_loss else {"metric": self.metric, "mode": self.mode}

    def describe(self) -> str:
        """"train_loss (min)", "val_accuracy (max)"."""
        return f"{self.metric} ({self.mode})"

# What no machine could run (docs/tasks.md, "Limits"): beyond these a schedule is refused before anything
# starts, so an absurd value cannot loop, allocate or run for ever. Steps: each trial keeps its losses
# in memory (16 bytes a step); 10^8 steps is days on the smallest task.
LIMITS = {"population": 100_000, "generations": 10_000, "steps": 10**8, "seeds": 10_000, "trials": 10**7,
          "time_milestone_s": 10**7, "noise": 50.0, "lr_scale": 1e6, "power": 10.0, "optimizers": 1000}
MAX_BYTES = 1 << 20         # a schedule or --hparams file (they are a few kB)
MAX_DEPTH = 32              # nesting of YAML collections (a schedule needs 5)
MAX_NODES = 100_000         # YAML nodes after aliases are expanded (a schedule has a few hundred)


class ScheduleError(ValueError):
    """A schedule that cannot be used; str(error) is one line: file, field, value, what is allowed."""


@dataclass(frozen=True)
class SearchSettings:
    """The schedule's `search:` section: which searcher tunes, and the trials of a non-GA one
    (`tuner.search.optuna`). None means derived: `trials` from the GA's budget, `steps` the last
    generation's, `round` 8 for TPE and CMA-ES, the population for random search. `bounds` maps a hyperparameter to (low, high) for every
    optimizer, or an optimizer to {hyperparameter: (low, high)}; the rest are `tuner.search.space`'s defaults."""

    searcher: str = "ga"
    trials: int | None = None
    steps: int | None = None
    round: int | None = None
    bounds: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The fields that differ from the defaults, in the YAML layout ({} for the plain GA)."""
        out: dict[str, Any] = {} if self.searcher == "ga" else {"searcher": self.searcher}
        out.update({k: v for k, v in (("trials", self.trials), ("steps", self.steps), ("round", self.round))
                    if v is not None})
        if self.bounds:
            out["bounds"] = {k: list(v) if isinstance(v, tuple) else {h: list(b) for h, b in v.items()}
                             for k, v in self.bounds.items()}
        return out


@dataclass(frozen=True)
class Schedule:
    """A validated tuning schedule (see the module docstring for the fields).

    `optimizers` are names; those declared as mappings have their `lodo.OptimizerSpec` in
    `optimizer_specs` (not registered: whoever runs the schedule registers them with `lodo.register`).
    `task` is None when the schedule names none (then it fits any task).
    """

    task: str | None
    population: int
    generations: tuple[Generation, ...]
    optimizers: tuple[str, ...]
    full_run: FullRun
    lr_scale: float
    task_options: dict[str, Any] = field(default_factory=dict)
    scales: dict[str, dict[str, str]] = field(default_factory=dict)
    start: dict[str, dict[str, float]] = field(default_factory=dict)
    search: SearchSettings = field(default_factory=SearchSettings)
    source: str = field(default="<dict>", compare=False)
    optimizer_specs: dict[str, Any] = field(default_factory=dict)
    ga: dict[str, Any] = field(default_factory=dict)   # GeneticAlgorithm's keyword options (`_validate_ga`)
    horizon: dict[str, dict[str, float]] = field(default_factory=dict)  # optimizer -> {hyperparameter: power p}
    objective: Objective = Objective()                  # what the searchers select on (train_loss: the paper's)
    noise_check: bool = True                            # re-run each generation's best on a second seed (tuner.driver.noise)
    recipe: dict[str, dict] = field(default_factory=dict)  # optimizer -> its training recipe (tuner.trial.recipe)
    prune: dict | None = None                               # {at, quantile} (tuner.trial.prune); None: no pruning

    def to_dict(self) -> dict:
        """Plain data in the YAML layout (for run manifests); `Schedule.from_dict` reads it back."""
        specs = self.optimizer_specs
        return {
            **({"task": self.task} if self.task is not None else {}),
            "population": self.population,
            "generations": [{"noise": g.noise, "steps": g.steps,
                             **({"population": g.population} if g.population is not None else {})}
                            for g in self.generations],
            "optimizers": [specs[name].to_dict() if name in specs else name for name in self.optimizers],
            "full_run": dict(self.full_run._asdict()),
            "lr_scale": self.lr_scale,
            "task_options": copy.deepcopy(self.task_options),
            "scales": copy.deepcopy(self.scales),
            "start": copy.deepcopy(self.start),
            **({"search": self.search.to_dict()} if self.search.to_dict() else {}),
            **({"ga": copy.deepcopy(self.ga)} if self.ga else {}),
            **({"horizon": {o: _horizon_entry(powers) for o, powers in self.horizon.items()}} if self.horizon else {}),
            **({"objective": self.objective.to_dict()} if not self.objective.is_train_loss else {}),
            **({"noise_check": False} if not self.noise_check else {}),
            **({"recipe": copy.deepcopy(self.recipe)} if self.recipe else {}),
            **({"prune": copy.deepcopy(self.prune)} if self.prune else {}),
        }

    def size(self, generation: Generation) -> int:
        """Individuals in a generation: its own `population`, else the schedule's."""
        return self.population if generation.population is None else generation.population

    def individual_steps(self, optimizer_count: int = 1) -> int:
        """The GA's budget: Σ over generations of size × seeds × steps (per optimizer)."""
        seeds = self.ga.get("seeds", 1)
        return optimizer_count * sum(self.size(g) * seeds * g.steps for g in self.generations)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>", registry=None, task_names=None) -> "Schedule":
        """Validate plain data in the YAML layout; errors name `source`."""
        return _validate(data, source, registry, task_names)


def _show(value: Any) -> str:
    """A value as one short line."""
    if isinstance(value, str):
        return clean(repr(value[:200]), 80)
    try:
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    except (yaml.YAMLError, RecursionError, ValueError, TypeError):
        text = repr(value)[:200]
    if text.endswith("\n..."):
        text = text[:-4].strip()
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


def clean(text: Any, limit: int = 120) -> str:
    """`text` as one line of at most `limit` characters: control characters escaped (a newline is
    shown as \\n), a long text cut with "..." (a 1 MB key must not become a 1 MB message)."""
    text = str(text)[:4 * limit + 16]
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _Checker:
    """Raises ScheduleError lines for one source."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, value: Any, allowed: str):
        raise ScheduleError(f"{self.source}: {clean(where)}: {_show(value)} is not allowed ({clean(allowed, 400)})")

    def mapping(self, where: str, value: Any, allowed: str = "must be a mapping") -> dict:
        if not isinstance(value, dict):
            self.fail(where, value, allowed)
        for key in value:
            if not isinstance(key, str):
                self.fail(f"{where}.{clean(key, 40)}" if where else clean(key, 40), key, "keys must be strings")
        return value

    def keys(self, where: str, value: dict, required: tuple, optional: tuple = ()):
        prefix = f"{where}." if where else ""
        for key in value:
            if key not in required + optional:
                raise ScheduleError(f"{self.source}: {clean(prefix + clean(key, 40))}: unknown key "
                                    f"(allowed: {', '.join(required + optional)})")
        for key in required:
            if key not in value:
                raise ScheduleError(f"{self.source}: {prefix}{key}: missing (required)")

    def integer(self, where: str, value: Any, minimum: int, allowed: str, limit: str | None = None) -> int:
        """An integer >= minimum and, given a `LIMITS` key, <= that limit."""
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(where, value, allowed)
        if limit is not None and value > LIMITS[limit]:
            self.fail(where, value, f"must be at most {LIMITS[limit]:,}: more than any machine could run")
        return value

    def number(self, where: str, value: Any, ok, allowed: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value) \
                or not ok(value):
            self.fail(where, value, allowed)
        return float(value)

    def name(self, where: str, value: Any, names: list[str], what: str) -> str:
        if not isinstance(value, str) or value not in names:
            self.fail(where, value, f"must be one of the {what}: {', '.join(names)}")
        return value


def _finite(value) -> bool:
    """A finite number (an int too large for a float is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


LOG_RANGE = (1e-30, 1e30)  # a log-scale value outside it is no rate, step count or scale any optimizer takes


def value_problem(value: float, scale: str) -> str | None:
    """Why `value` cannot be a hyperparameter on `scale` (lodo.registry's domains: "log" a positive
    number, "decay" a rate in [0, 1)), or None. Log-scale values are kept within `LOG_RANGE`, so the
    GA's rescaled value and the searchers' box (default ×/÷ 1000) stay finite."""
    if not _finite(value):
        return "must be a finite number"
    if scale == "log" and not value > 0:
        return "must be > 0 (log scale)"
    if scale == "log" and not LOG_RANGE[0] <= value <= LOG_RANGE[1]:
        return f"must be within [{LOG_RANGE[0]:g}, {LOG_RANGE[1]:g}] (log scale)"
    if scale == "decay" and not 0 <= value < 1:
        return "must be in [0, 1) (decay scale)"
    return None


def _registry(registry):
    """The optimizer registry: `lodo` (imported lazily, so tuner.search.ga stays torch-free) unless given."""
    return registry if registry is not None else importlib.import_module("lodo")


def _task_names(task_names) -> list[str]:
    if task_names is not None:
        return list(task_names)
    return list(importlib.import_module("tasks").available())


def _optional(data: dict, key: str) -> Any:
    """An optional mapping field; absent or null means empty."""
    value = data.get(key)
    return {} if value is None else value


def _validate(data: Any, source: str, registry=None, task_names=None) -> Schedule:
    """The schedule in `data`, every field checked in the file's order (the first mistake is the one
    reported): task, population and generations, optimizers and their recipes, full runs, lr_scale,
    task options, scales and start values, horizon, search, GA options, objective, pruning."""
    check = _Checker(source)
    check.mapping("top level", data, "must be a mapping of schedule fields")
    check.keys("", data, REQUIRED, OPTIONAL)

    task = data.get("task")
    if task is not None:
        task = check.name("task", task, _task_names(task_names), "tasks")
    population = check.integer("population", data["population"], 2, "must be an integer >= 2", "population")
    rows = _validate_generations(check, data["generations"], population)
    registry = _registry(registry)
    names, specs, known = _validate_optimizers(check, data["optimizers"], registry)
    recipes = _validate_recipe(check, _optional(data, "recipe"), known)
    hyperparameters = lambda o: list(specs[o].hyperparameters if o in specs else registry.hyperparameters(o)) \
        + recipe.tunables(recipes.get(o))  # noqa: E731
    full_run = _validate_full_run(check, data["full_run"])
    lr_scale = check.number("lr_scale", data["lr_scale"], lambda v: 0 < v <= LIMITS["lr_scale"],
                            f"must be a positive number (at most {LIMITS['lr_scale']:g})")
    task_options = _validate_task_options(check, _optional(data, "task_options"))
    scales, start = _validate_scales_and_start(check, data, known, hyperparameters)
    scale_of = lambda o, hp: scales.get(o, {}).get(hp, next(h.scale for h in hyperparameters(o) if h.name == hp))  # noqa: E731
    powers = _validate_horizon(check, _optional(data, "horizon"), known, hyperparameters)
    search = _validate_search(check, data.get("search"), population, rows, names, known,
                              lambda o: [h.name for h in hyperparameters(o)], scale_of)
    ga = _validate_ga(check, _optional(data, "ga"), len(rows))
    objective = _validate_objective(check, data.get("objective"))
    noise_check = data.get("noise_check", True)
    if not isinstance(noise_check, bool):
        check.fail("noise_check", noise_check, "must be true or false")

    return Schedule(
        task=task, population=population, generations=tuple(rows), optimizers=tuple(names), optimizer_specs=specs,
        full_run=full_run, lr_scale=lr_scale, task_options=dict(task_options),
        scales={o: dict(e) for o, e in scales.items()},
        start={o: {k: float(v) for k, v in e.items()} for o, e in start.items()},
        search=search, source=source, ga=ga, horizon=powers, objective=objective, noise_check=noise_check,
        recipe=recipes, prune=_validate_prune(check, data))


def _validate_generations(check: _Checker, generations: Any, population: int) -> list[Generation]:
    """Table 5's rows {noise, steps[, population]}, within the documented limits."""
    if not isinstance(generations, list) or not generations:
        check.fail("generations", generations, "must be a non-empty list of {noise, steps}")
    if len(generations) > LIMITS["generations"]:
        check.fail("generations", f"{len(generations)} rows", f"must be at most {LIMITS['generations']:,} rows")
    rows = []
    for i, row in enumerate(generations):
        where = f"generations[{i}]"
        check.mapping(where, row, "must be a mapping {noise, steps}")
        check.keys(where, row, GENERATION_KEYS, GENERATION_OPTIONAL)
        noise = check.number(f"{where}.noise", row["noise"], lambda v: 0 <= v <= LIMITS["noise"],
                             f"must be a number in [0, {LIMITS['noise']:g}]: σ in the rescaled space")
        steps = check.integer(f"{where}.steps", row["steps"], 1, "must be a positive integer", "steps")
        size = None
        if row.get("population") is not None:
            size = check.integer(f"{where}.population", row["population"], 2, "must be an integer >= 2", "population")
        rows.append(Generation(noise, steps, size))
    if sum(population if g.population is None else g.population for g in rows) > LIMITS["trials"]:
        check.fail("generations", f"{len(rows)} rows", f"must hold at most {LIMITS['trials']:,} individuals in all")

    return rows


def _validate_optimizers(check: _Checker, optimizers: Any, registry) -> tuple[list[str], dict, list[str]]:
    """(names in order, {name: OptimizerSpec} of the mappings, every name a field may refer to)."""
    if not isinstance(optimizers, list) or not optimizers:
        check.fail("optimizers", optimizers, "must be a non-empty list of optimizer names or mappings")
    if len(optimizers) > LIMITS["optimizers"]:
        check.fail("optimizers", f"{len(optimizers)} entries", f"must be at most {LIMITS['optimizers']} entries")
    specs = {f"optimizers[{i}]": _optimizer_spec(check, f"optimizers[{i}]", entry, registry)
             for i, entry in enumerate(optimizers) if isinstance(entry, dict)}
    known = list(registry.available()) + [spec.name for spec in specs.values() if spec.name not in registry.available()]
    names = []
    for i, entry in enumerate(optimizers):
        where = f"optimizers[{i}]"
        name = specs[where].name if where in specs else check.name(where, entry, known, "optimizers")
        if name in names:
            check.fail(f"{where}.name" if where in specs else where, name, "must not repeat an optimizer")
        names.append(name)
    specs = {spec.name: spec for spec in specs.values()}
    return names, specs, known


def _validate_full_run(check: _Checker, full: Any) -> FullRun:
    """`full_run: {steps, seeds, time_milestone_s}`."""
    full = check.mapping("full_run", full, "must be a mapping {steps, seeds, time_milestone_s}")
    check.keys("full_run", full, FULL_RUN_KEYS)
    milestone = full["time_milestone_s"]
    if milestone is not None:
        milestone = check.number("full_run.time_milestone_s", milestone, lambda v: 0 < v <= LIMITS["time_milestone_s"],
                                 f"must be a positive number of seconds (at most {LIMITS['time_milestone_s']:,}) or null")
    return FullRun(check.integer("full_run.steps", full["steps"], 1, "must be a positive integer", "steps"),
                   check.integer("full_run.seeds", full["seeds"], 1, "must be a positive integer", "seeds"),
                   milestone)


def _validate_task_options(check: _Checker, task_options: Any) -> dict:
    """Plain values only (numbers, strings, booleans, null); what a built-in task takes is the plan's check."""
    task_options = check.mapping("task_options", task_options, "must be a mapping of task options")
    for key, value in task_options.items():
        if not isinstance(value, (bool, int, float, str)) and value is not None:
            check.fail(f"task_options.{key}", value, "must be a number, string, boolean or null")
        if isinstance(value, float) and not math.isfinite(value) or isinstance(value, int) and not _finite(value):
            check.fail(f"task_options.{key}", value, "must be a finite number")

    return task_options


def _validate_scales_and_start(check: _Checker, data: dict, known: list[str], hyperparameters) -> tuple[dict, dict]:
    """`scales:` and `start:` per optimizer and hyperparameter; a start value in its scale's domain."""
    scales = check.mapping("scales", _optional(data, "scales"), "must be a mapping optimizer -> {name: scale}")
    start = check.mapping("start", _optional(data, "start"), "must be a mapping optimizer -> {name: value}")
    for field_name, table in (("scales", scales), ("start", start)):
        for optimizer, entries in table.items():
            check.name(f"{field_name}.{optimizer}", optimizer, known, "optimizers")
            check.mapping(f"{field_name}.{optimizer}", entries, "must be a mapping hyperparameter -> value")
            hp_names = [h.name for h in hyperparameters(optimizer)]
            for hp in entries:
                check.name(f"{field_name}.{optimizer}.{hp}", hp, hp_names, f"hyperparameters of {optimizer}")
    for optimizer, entries in scales.items():
        for hp, scale in entries.items():
            check.name(f"scales.{optimizer}.{hp}", scale, list(SCALES), "scales")
    for optimizer, entries in start.items():
        scale_of = {h.name: scales.get(optimizer, {}).get(h.name, h.scale)
                    for h in hyperparameters(optimizer)}
        native = {h.name: h.scale for h in hyperparameters(optimizer)}
        for hp, value in entries.items():
            where = f"start.{optimizer}.{hp}"
            number = check.number(where, value, lambda v: True, "must be a finite number")
            for scale in dict.fromkeys((scale_of[hp], native[hp])):  # the GA's scale and the value's own domain
                problem = value_problem(number, scale)
                if problem:
                    check.fail(where, value, problem)

    return scales, start


def _validate_horizon(check: _Checker, horizon: Any, known: list[str], hyperparameters) -> dict[str, dict[str, float]]:
    """`horizon:` optimizer -> [step-counted names] (power 1) or {name: power}."""
    horizon = check.mapping("horizon", horizon,
                            "must be a mapping optimizer -> [hyperparameter, ...] or {hyperparameter: power}")
    powers: dict[str, dict[str, float]] = {}
    for optimizer, entries in horizon.items():
        where = f"horizon.{optimizer}"
        check.name(where, optimizer, known, "optimizers")
        hp_names = [h.name for h in hyperparameters(optimizer)]
        if isinstance(entries, list):  # step counts: power 1
            if len(set(map(str, entries))) != len(entries):
                check.fail(where, entries, "must not repeat a hyperparameter")
            pairs = [(f"{where}[{i}]", hp, 1.0) for i, hp in enumerate(entries)]
        elif isinstance(entries, dict):
            power = f"must be a nonzero number in [-{LIMITS['power']:g}, {LIMITS['power']:g}]: the power of the trial's share of the run"
            pairs = [(f"{where}.{hp}", hp, check.number(f"{where}.{hp}", p, lambda v: v != 0 and abs(v) <= LIMITS["power"], power))
                     for hp, p in check.mapping(where, entries).items()]
        else:
            check.fail(where, entries, "must be a list of hyperparameter names or a mapping hyperparameter -> power")
        for at, hp, _ in pairs:
            check.name(at, hp, hp_names, f"hyperparameters of {optimizer}")
        if pairs:
            powers[optimizer] = {hp: p for _, hp, p in pairs}
    return powers


def _validate_objective(check: _Checker, data: Any) -> Objective:
    """`objective:` absent, null or `train_loss`: the paper's; else {metric: NAME, mode: min|max}, a
    key of the task's `evaluate()` (mode is required: a metric's direction is never guessed)."""
    if data is None or data == TRAIN_LOSS:
        return Objective()
    allowed = f"must be {TRAIN_LOSS} or a mapping {{metric: NAME, mode: min|max}} (NAME a key of the task's evaluate())"
    if not isinstance(data, dict):
        check.fail("objective", data, allowed)
    check.keys("objective", data, OBJECTIVE_KEYS)
    metric, mode = data["metric"], data["mode"]
    if not isinstance(metric, str) or not metric.strip():
        check.fail("objective.metric", metric, "must be a non-empty name of a metric of the task's evaluate()")
    if mode not in MODES:
        check.fail("objective.mode", mode, "must be min or max")
    if metric == TRAIN_LOSS and mode != "min":
        check.fail("objective.mode", mode, f"must be min for {TRAIN_LOSS}")
    return Objective(metric, mode)


def _validate_recipe(check: _Checker, data: Any, known: list[str]) -> dict[str, dict]:
    """The `recipe:` mapping optimizer -> {lr_schedule, clip_grad_norm} (tuner.trial.recipe), each checked."""
    check.mapping("recipe", data, "must be a mapping optimizer -> {lr_schedule, clip_grad_norm}")
    out = {}
    for optimizer, entry in data.items():
        check.name(f"recipe.{optimizer}", optimizer, known, "optimizers")
        try:
            checked = recipe.validate({} if entry is None else entry)
        except recipe.RecipeError as error:
            check.fail(f"recipe.{optimizer}" + (f".{error.field}" if error.field else ""), error.value, error.allowed)
        if checked:
            out[optimizer] = checked
    return out


def _validate_prune(check: _Checker, data: Mapping) -> dict | None:
    """The `prune:` mapping {at, quantile} (tuner.trial.prune); absent or null: no pruning, the paper's GA."""
    try:
        return prune.validate(data.get("prune"))
    except ValueError as error:
        raise ScheduleError(f"{check.source}: prune{error}") from None


def _horizon_entry(powers: dict[str, float]) -> list[str] | dict[str, float]:
    """An optimizer's `horizon` in the YAML layout: a list when every power is 1 (step counts, the form
    run manifests have held since the field came in), else the mapping hyperparameter -> power."""
    return list(powers) if all(p == 1.0 for p in powers.values()) else dict(powers)


def _validate_search(check: _Checker, data: Any, population: int, generations: list[Generation],
                     optimizers: list[str], known: list[str], names_of, scale_of) -> SearchSettings:
    """The `search:` section (absent or null: the GA). Bounds are values of the hyperparameter itself:
    log scale 0 < low < high; decay scale 0 <= low < high < 1."""
    if data is None:
        return SearchSettings()
    check.mapping("search", data, "must be a mapping {searcher, trials, steps, round, bounds}")
    check.keys("search", data, (), SEARCH_KEYS)
    searcher = data.get("searcher", "ga")
    if searcher not in SEARCHERS:
        check.fail("search.searcher", searcher, f"must be one of {', '.join(SEARCHERS)}")
    values = {}
    for key in ("trials", "steps", "round"):
        if data.get(key) is not None:
            minimum = 2 if key == "round" and searcher == "cmaes" else 1
            values[key] = check.integer(f"search.{key}", data[key], minimum,
                                        "must be an integer >= 2 (a CMA-ES generation)" if minimum == 2
                                        else "must be a positive integer", "steps" if key == "steps" else "trials")
    if "trials" not in values and "steps" in values:
        budget = sum((g.population or population) * g.steps for g in generations)
        if values["steps"] > budget:
            check.fail("search.steps", values["steps"], f"must leave at least one trial in the GA's budget of "
                                                        f"{budget} individual-steps, or give search.trials")

    def pair(where: str, value: Any, scale: str) -> tuple[float, float]:
        allowed = ("must be [low, high] with 0 < low < high (log scale)" if scale == "log"
                   else "must be [low, high] with 0 <= low < high < 1 (decay scale)")
        if not isinstance(value, list) or len(value) != 2 or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) or not _finite(v) for v in value):
            check.fail(where, value, allowed)
        low, high = float(value[0]), float(value[1])
        if not (low < high and (0 < low if scale == "log" else 0 <= low and high < 1)):
            check.fail(where, value, allowed)
        for v in (low, high):
            if value_problem(v, scale):
                check.fail(where, value, value_problem(v, scale))
        return low, high

    bounds: dict[str, Any] = {}
    table = check.mapping("search.bounds", _optional(data, "bounds"),
                          "must be a mapping hyperparameter -> [low, high] or optimizer -> {hyperparameter: [low, high]}")
    for key, value in table.items():
        where = f"search.bounds.{key}"
        if isinstance(value, dict):  # one optimizer's
            check.name(where, key, known, "optimizers")
            bounds[key] = {}
            for hp, b in value.items():
                check.name(f"{where}.{hp}", hp, names_of(key), f"hyperparameters of {key}")
                bounds[key][hp] = pair(f"{where}.{hp}", b, scale_of(key, hp))
            continue
        having = [o for o in optimizers if key in names_of(o)]
        if not having:
            hps = sorted({h for o in optimizers for h in names_of(o)})
            check.fail(where, key, f"must be a hyperparameter of the schedule's optimizers ({', '.join(hps)}) "
                                   "or an optimizer name mapping to its own bounds")
        for o in having:
            bounds[key] = pair(where, value, scale_of(o, key))
    return SearchSettings(searcher=searcher, bounds=bounds, **values)


def _validate_ga(check: _Checker, ga: Any, generations: int) -> dict[str, Any]:
    """The `ga:` mapping as GeneticAlgorithm keyword options; only the keys given (absent: Appendix E's).
    Every rule on their values is `tuner.search.ga.GAConfig`'s; its error names the field as `ga.<field>`.
    The uniform start's box is the `search.bounds` one (`tuner.search.space.ga_keywords` adds it)."""
    check.mapping("ga", ga, "must be a mapping of GA options: " + ", ".join(GA_KEYS))
    check.keys("ga", ga, (), GA_KEYS)
    try:
        GAConfig(**ga).check_generations(generations)
    except GAOptionError as e:
        check.fail(f"ga.{e.field}", e.value, e.allowed)
    return dict(ga)


def ga_options(schedule: Schedule) -> dict[str, Any]:
    """The `GeneticAlgorithm` keyword options of the schedule's `ga:` mapping ({} for the paper's GA);
    `tuner.search.space.ga_keywords` adds one optimizer's bounds for the uniform start."""
    return dict(schedule.ga)


def _optimizer_spec(check: _Checker, where: str, entry: dict, registry):
    """An optimizers[i] mapping as a validated lodo.OptimizerSpec; ScheduleError naming the field."""
    from lodo.registry import OptimizerSpec, OptimizerSpecError

    check.mapping(where, entry)
    check.keys(where, entry, SPEC_KEYS, SPEC_OPTIONAL)
    for key in SPEC_OPTIONAL:
        table = check.mapping(f"{where}.{key}", _optional(entry, key), "must be a mapping")
        for name, value in table.items() if key == "hyperparameters" else ():
            check.mapping(f"{where}.{key}.{name}", value, "must be a mapping {default, scale}")
            check.keys(f"{where}.{key}.{name}", value, HYPERPARAMETER_KEYS)
    try:
        spec = OptimizerSpec.from_dict(entry)
    except OptimizerSpecError as error:
        check.fail(f"{where}.{error.field}", error.value, error.allowed)
    if spec.name in registry.available() and getattr(registry, "registered", lambda name: None)(spec.name) != spec:
        check.fail(f"{where}.name", spec.name, "must not be a registry optimizer's name: choose another")
    return spec


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (not "last wins"),
    and that the work is bounded: collections nest at most `MAX_DEPTH` deep, and the document with its
    aliases expanded has at most `MAX_NODES` nodes (a 300-byte "billion laughs" would expand to gigabytes)."""

    depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_document(self, node):
        _expanded_size(node)
        return super().construct_document(node)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as error:  # a tag's constructor: !!int 'abc'
            tag = str(node.tag).rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                None, None, f"{clean(repr(node.value), 40)} cannot be read as {clean(tag, 20)} ({type(error).__name__})",
                node.start_mark) from None

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                continue  # unhashable keys: PyYAML reports them itself
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {clean(repr(key), 60)}",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _expanded_size(root) -> int:
    """Nodes of the document rooted at `root` with every alias expanded (each shared node counted once
    per use, without expanding anything); ComposerError past `MAX_NODES` or for an alias cycle."""
    sizes: dict[int, int] = {}
    stack, open_ = [(root, False)], set()
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else \
            node.value if isinstance(node, yaml.SequenceNode) else []
        if done:
            open_.discard(id(node))
            sizes[id(node)] = min(MAX_NODES + 1, 1 + len(str(node.value)) // 256 if not children else
                                  1 + sum(sizes[id(c)] for c in children))
            if sizes[id(node)] > MAX_NODES:
                raise yaml.composer.ComposerError(None, None, f"more than {MAX_NODES:,} values once its aliases "
                                                  "are expanded", node.start_mark)
            continue
        if id(node) in open_:
            raise yaml.composer.ComposerError(None, None, "an alias refers to a collection containing it",
                                              node.start_mark)
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def read_text(path, source: str | None = None) -> str:
    """The UTF-8 text of a schedule or --hparams file: a regular file (a FIFO or device would block or
    never end) of at most `MAX_BYTES`; ScheduleError naming `source` (default: the path) otherwise."""
    source = clean(path, 200) if source is None else source
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, ValueError) as error:
        raise ScheduleError(f"{source}: cannot be read ({getattr(error, 'strerror', None) or error})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ScheduleError(f"{source}: is not a regular file (a FIFO, device or directory cannot be a schedule)")
        if info.st_size > MAX_BYTES:
            raise ScheduleError(f"{source}: is {info.st_size:,} bytes (at most {MAX_BYTES:,})")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as error:
        raise ScheduleError(f"{source}: cannot be read ({error.strerror or error})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise ScheduleError(f"{source}: is more than {MAX_BYTES:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ScheduleError(f"{source}: is not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start})") from None


def parse_yaml(text: str, source: str) -> Any:
    """YAML (or JSON, a subset) through the bounded, duplicate-refusing loader; ScheduleError naming
    the line for anything it cannot parse, including tags whose value does not fit (!!int 'abc')."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "document"
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ScheduleError(f"{source}: {where}: invalid YAML ({clean(problem)})") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as error:  # a tag's constructor: int('abc')
        raise ScheduleError(f"{source}: invalid YAML ({type(error).__name__}: {clean(error)})") from None


def merge(base: dict, overrides: Mapping) -> dict:
    """`base` with `overrides` applied: mappings merge key by key, everything else is replaced."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def bundled() -> list[str]:
    """Names of the schedules shipped in `schedules/`."""
    root = importlib.resources.files("schedules")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _read(name_or_path: str | Path) -> tuple[str, str]:
    """(text, source for messages) of a bundled name or a file path."""
    text_name = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text_name or text_name.endswith((".yaml", ".yml")):
        return read_text(name_or_path, clean(text_name, 200)), clean(text_name, 200)
    names = bundled()
    if text_name not in names:
        raise ScheduleError(f"{clean(text_name, 80)}: no such schedule (bundled: {', '.join(names)}; "
                            "or give a path to a .yaml)")
    return (importlib.resources.files("schedules") / f"{text_name}.yaml").read_text(encoding="utf-8"), \
        f"schedules/{text_name}.yaml"


def load_schedule(name_or_path: str | Path, overrides: Mapping | None = None, *,
                  registry=None, task_names=None) -> Schedule:
    """Load and validate a schedule: a bare name ("rosenbrock") is a bundled one, anything else a path.

    `overrides` replaces fields for this run; mappings (full_run, scales, ...) merge key by key,
    e.g. {"population": 4, "full_run": {"steps": 1000}}. `registry` (default: `lodo`) and
    `task_names` (default: `tasks.available()`) are there for tests.
    """
    text, source = _read(name_or_path)
    data = parse_yaml(text, source)
    if not overrides:
        return _validate(data, source, registry, task_names)
    # The merged schedule is what runs, so that is what is validated (a file may rely on overrides).
    source = f"{source} (with overrides)"
    if not isinstance(overrides, Mapping):
        raise ScheduleError(f"{source}: overrides: {_show(overrides)} is not allowed (must be a mapping of fields)")
    if not isinstance(data, dict):
        _validate(data, source, registry, task_names)  # raises: the top level is not a mapping
    return _validate(merge(data, overrides), source, registry, task_names)


def space_for(schedule: Schedule, optimizer: str, registry=None) -> list[Dimension]:
    """The GA search space of one optimizer: its hyperparameters (the schedule's own spec's, else the
    registry's) with this schedule's scale overrides and start values (as defaults, i.e. generation 0's mean) applied."""
    registry = _registry(registry)
    known = list(registry.available()) + [o for o in schedule.optimizer_specs if o not in registry.available()]
    if optimizer not in known:
        raise ScheduleError(f"{schedule.source}: optimizer: {optimizer!r} is not allowed "
                            f"(must be one of the optimizers: {', '.join(known)})")
    spec = schedule.optimizer_specs.get(optimizer)
    scales, start = schedule.scales.get(optimizer, {}), schedule.start.get(optimizer, {})
    return [Dimension(h.name, float(start.get(h.name, h.default)), scales.get(h.name, h.scale))
            for h in [*(spec.hyperparameters if spec else registry.hyperparameters(optimizer)),
                      *recipe.tunables(schedule.recipe.get(optimizer))]]


def trial_hparams(schedule: Schedule, optimizer: str, hparams: Mapping[str, float], steps: int) -> dict[str, float]:
    """What a trial of `steps` steps runs for the searcher's `hparams`: each of `optimizer`'s
    `horizon` hyperparameters times (steps / full_run.steps)^p (p = 1 for a listed step count), the
    rest as given.

    A time constant in steps (L-BFGS's τ in η_t = lr·τ/(τ + t)) shapes a run by its ratio to the run's
    length, so a short trial cannot rank the values a long run needs (short-horizon bias: at 8,000
    steps every τ ≥ 3·10⁴ scores alike, while at 100k steps τ = 10⁶ scores 9.46, 10⁵ 10.20 and 3·10⁴
    13.90; benchmarks/RESULTS.md, "A horizon for τ"). Searched as its value at the full
    run's length and run at each trial's share of it, the searcher compares schedules of one shape,
    and the tuned value is the full runs' as it stands. A value whose best setting moves with the
    run's length by a measured power law takes that power: LODO's meta_lr is best near 0.0011 over
    8,000 steps and near 0.0006 over 100k (measured p ≈ −0.22; `noisy_bowl-improved` uses −¼;
    benchmarks/RESULTS.md, "A horizon for meta_lr"). A decay rate β is scaled through its time
    constant 1/(1 − β) in steps, so 1 − β_trial = (1 − β)·(S/full_run.steps)^−p, and a constant below
    one step is β = 0: Yogi's beta2 (its second moment warms up over ≈ 1/(1 − beta2) steps, and a
    beta2 whose warm-up outlasts a short trial looks better there than over the full run;
    benchmarks/RESULTS.md, "Yogi's plateau: a horizon for beta2 and a bounded search")."""
    powers = schedule.horizon.get(optimizer, {})
    share = steps / schedule.full_run.steps
    if not powers or share == 1:  # a full-length trial runs the values as searched, bit for bit
        return dict(hparams)
    decay = {d.name for d in space_for(schedule, optimizer) if d.scale == "decay"}

    def scaled(name: str, value: float) -> float:
        if name not in powers:
            return value
        if name in decay:  # 1/(1 − β) times share^p
            return max(0.0, 1.0 - (1.0 - value) * share ** -powers[name])
        return value * share ** powers[name]

    return {k: scaled(k, v) for k, v in hparams.items()}


TEMPLATE = '''\
# A tuning schedule (Table 5's shape, docs/paper.md §4). Edit, then:
#   lodo-tune --task path/to/file.py:Name --schedule THIS_FILE
# task: my_task                  # optional: when given, it must be the task's display name
population: 16                   # individuals per generation (>= 2)
generations:                     # one row per GA generation: noise = σ in the rescaled space, steps per individual
  - {noise: 3, steps: 200}
  - {noise: 2, steps: 200}
  - {noise: 1, steps: 400}
  - {noise: 0.5, steps: 800}
optimizers:                      # tuned in this order: registry names (lodo.available()) ...
  - LODO
  - Adam
  - name: AdamW                  # ... or any torch optimizer
    optimizer: torch.optim.AdamW # "module.attr": a torch.optim.Optimizer subclass or a factory returning one
    hyperparameters:             # the GA's search space: generation 0's value and its scale
      lr: {default: 1.0e-3, scale: log}          # log: value > 0, searched as ln(value)
      weight_decay: {default: 1.0e-2, scale: log}
      betas.0: {default: 0.9, scale: decay}      # decay: 0 <= value < 1; "arg.i" is entry i of a tuple argument
    fixed: {eps: 1.0e-8}         # passed as given, not tuned
full_run: {steps: 2000, seeds: 4, time_milestone_s: null}   # after tuning: length, seeds, optional wall-clock milestone (s)
lr_scale: 1                      # multiplies the tuned lr before the full runs
# task_options: {}               # keyword options of the task (its factory's arguments)
# scales: {Adam: {beta2: log}}   # per-hyperparameter scale overrides
# start: {Adam: {lr: 0.01}}      # generation-0 values instead of the defaults
# horizon: {L-BFGS: [tau]}       # step-counted hyperparameters: searched at the full run's length, a trial
#                                # of S steps runs value·S/full_run.steps ({Adam: {lr: -0.5}}: value·(S/full)^p)
# search:                        # another searcher than the GA, same budget (individual-steps)
#   searcher: tpe                # ga (default), random, tpe, cmaes (these three: pip install "lodo-tune[search]")
#   trials: 20                   # default: Σ population·seeds·steps of the generations above // steps
#   steps: 800                   # steps per trial; default: the last generation's (finalists: the one before)
#   round: 8                     # trials run and told together (CMA-ES: its population); default: 8 (TPE, CMA-ES), population (random)
#   bounds: {lr: [1.0e-4, 1]}    # [low, high] per hyperparameter (or {Adam: {lr: [...]}}); default:
#                                # log: [default/1000, default·1000], decay: [0, 0.9999]
# ga: {init: uniform, step_size: csa, covariance: rank_mu}   # the improved GA's options (docs/tuning.md), not Appendix E's
# objective: {metric: val_accuracy, mode: max}   # select on a metric of the task's evaluate() (default: train_loss)
# recipe:                        # per optimizer: the training recipe around each step (docs/tasks.md); absent: constant lr
#   AdamW:
#     lr_schedule: {name: cosine, warmup: 0.05, final: 0.1}   # linear warm-up over 5 % of the run, cosine to 0.1·lr;
#                                # also constant, linear, step (milestones: [0.5, 0.75], gamma: 0.1), or a torch
#                                # scheduler: {name: CosineAnnealingLR, T_max: run} ("run": the run's length)
#     clip_grad_norm: 1.0        # clip_grad_norm_ between backward and step
#   LODO:
#     lr_schedule: {name: cosine, warmup: {default: 0.05, scale: log}}   # scales α0; {default, scale}: tuned
# prune: {at: [0.1, 0.25, 0.5], quantile: 1}   # stop GA trials clearly worse at these fractions of their
#                                # length than the previous generation's better half (off by default)
'''


def template(generations: list[int] | None = None, full_run: int | None = None, note: str = "") -> str:
    """A commented schedule to start a user task's from (`lodo-tune init-schedule` writes it); it loads as is.

    generations, full_run: the four generations' and the full runs' steps instead of the template's
    (200, 200, 400, 800; 2000), e.g. `tuner.driver.pilot.propose`'s; note: comment lines put below the header."""
    import re

    text = TEMPLATE
    if generations is not None:
        rows = iter(generations)
        text = re.sub(r"(?m)^(  - \{noise: [0-9.]+, steps: )\d+\}", lambda m: f"{m.group(1)}{next(rows)}}}", text)
    if full_run is not None:
        text = text.replace("full_run: {steps: 2000,", f"full_run: {{steps: {full_run},", 1)
    if note:
        head, _, rest = text.partition("population:")
        text = head + "".join(f"# {line}\n" for line in note.splitlines()) + "population:" + rest
    return text
