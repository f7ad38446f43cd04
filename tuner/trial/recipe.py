"""The user's training recipe around `opt.step`: a learning-rate schedule, gradient clipping, the
task's parameter groups and the optimizer's train/eval modes (issue 38).

A schedule's `recipe:` gives it per optimizer (absent: the paper's bare loop, bit for bit)::

    recipe:
      AdamW:
        lr_schedule: {name: cosine, warmup: 0.05, final: 0.1}   # or constant, linear, step, a torch class
        clip_grad_norm: 1.0

Any number in it may instead be `{default: d, scale: log|decay}`: it is then tuned like a
hyperparameter, named `lr_schedule.<field>` or `clip_grad_norm` in the search space and records.

The learning rate of the optimizer step that starts after e evaluations (of a run of S) is the
group's lr (for LODO α0) times f(e), with W = warmup·S:

    warm-up   f = min(1, (e + 1) / W)                       while e < W
    constant  f = 1
    cosine    f = final + (1 − final)·(1 + cos(π q)) / 2,    q = (e − W) / (S − W)
    linear    f = 1 − (1 − final)·q
    step      f = gamma ** (number of milestones m with e ≥ m·S)

`warmup`, `final`'s place and `milestones` are fractions of the run, so a schedule stretches to
each trial's length and to the full runs': no `horizon:` entry is needed for them. A torch
scheduler (`name: CosineAnnealingLR` or any "module.attr" class or factory (optimizer, **args))
gets its arguments as given; it is stepped once per evaluation (the budget's step, docs/paper.md
§3), and an argument `run` is the run's length S. Every schedule is a `torch.optim.lr_scheduler`
object (ours a `LambdaLR`), saved in the trial's checkpoint, so a resumed run is bit for bit.
"""
from __future__ import annotations

import contextlib
import importlib
import math
from collections import namedtuple

FIELDS = ("lr_schedule", "clip_grad_norm")
BUILTIN = {"constant": ("warmup",), "cosine": ("warmup", "final"), "linear": ("warmup", "final"),
           "step": ("warmup", "milestones", "gamma")}
DEFAULTS = {"warmup": 0.0, "final": 0.0, "gamma": 0.1}
RUN = "run"  # a torch scheduler's argument standing for the run's length in evaluations

Tunable = namedtuple("Tunable", "name default scale")
"""A recipe value the searchers tune (same fields as `lodo.Hyperparameter`)."""


class RecipeError(ValueError):
    """A recipe entry that cannot be used: `field` (relative to the optimizer's recipe), `value`, `allowed`."""

    def __init__(self, field: str, value, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}: {value!r} is not allowed ({allowed})")


def _ranges(name: str):
    """(test, what is allowed) for a built-in field's value."""
    return {"warmup": (lambda v: 0 <= v < 1, "must be a fraction of the run in [0, 1)"),
            "final": (lambda v: v >= 0, "must be a factor >= 0 of the lr at the end of the run"),
            "gamma": (lambda v: v > 0, "must be a factor > 0 per milestone"),
            "clip_grad_norm": (lambda v: v > 0, "must be a gradient norm > 0")}[name]


def _number(field: str, value, test=lambda v: True, allowed: str = "must be a finite number") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not test(value):
        raise RecipeError(field, value, allowed)
    return value


def _value(field: str, value, test, allowed: str):
    """A fixed number, or a tuned `{default, scale}` whose default is allowed and fits its scale."""
    if isinstance(value, dict):
        if set(value) != {"default", "scale"}:
            raise RecipeError(field, value, "must be a number or {default, scale} to tune it")
        if value["scale"] not in ("log", "decay"):
            raise RecipeError(f"{field}.scale", value["scale"], "must be log or decay")
        fits = (lambda v: v > 0) if value["scale"] == "log" else (lambda v: 0 <= v < 1)
        _number(f"{field}.default", value["default"], lambda v: test(v) and fits(v),
                f"{allowed}, and {'> 0 (log scale)' if value['scale'] == 'log' else 'in [0, 1) (decay scale)'}")
        return {"default": float(value["default"]), "scale": value["scale"]}
    return _number(field, value, test, allowed)


def resolve(name: str):
    """A torch scheduler class or factory from its name: a `torch.optim.lr_scheduler` class's, or "module.attr"."""
    import torch

    if hasattr(torch.optim.lr_scheduler, name) and "." not in name:
        return getattr(torch.optim.lr_scheduler, name)
    module, _, attr = name.replace(":", ".").rpartition(".")
    try:
        found = getattr(importlib.import_module(module), attr) if module else None
    except (ImportError, AttributeError):
        found = None
    if not callable(found):
        raise RecipeError("lr_schedule.name", name, "must be constant, cosine, linear, step, a torch.optim."
                          "lr_scheduler class or an importable module.attr scheduler")
    return found


def validate(recipe) -> dict:
    """The recipe of one optimizer, checked (RecipeError naming the field); fields absent stay absent."""
    if not isinstance(recipe, dict):
        raise RecipeError("", recipe, "must be a mapping with " + ", ".join(FIELDS))
    for key in recipe:
        if key not in FIELDS:
            raise RecipeError(str(key), key, "unknown key; allowed: " + ", ".join(FIELDS))
    out: dict = {}
    if recipe.get("clip_grad_norm") is not None:
        out["clip_grad_norm"] = _value("clip_grad_norm", recipe["clip_grad_norm"], *_ranges("clip_grad_norm"))
    schedule = recipe.get("lr_schedule")
    if schedule is None:
        return out
    if isinstance(schedule, str):
        schedule = {"name": schedule}
    if not isinstance(schedule, dict) or not isinstance(schedule.get("name"), str):
        raise RecipeError("lr_schedule", schedule, "must be a mapping {name, ...} or a name")
    name, checked = schedule["name"], {"name": schedule["name"]}
    if name in BUILTIN:
        for key, value in schedule.items():
            where = f"lr_schedule.{key}"
            if key == "name":
                continue
            if key not in BUILTIN[name]:
                raise RecipeError(where, value, f"unknown for {name}; allowed: {', '.join(BUILTIN[name])}")
            if key == "milestones":
                if not isinstance(value, list) or not value or any(
                        isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1 for v in value) \
                        or sorted(value) != value:
                    raise RecipeError(where, value, "must be a non-empty increasing list of fractions in (0, 1)")
                checked[key] = [float(v) for v in value]
            else:
                checked[key] = _value(where, value, *_ranges(key))
        if name == "step" and "milestones" not in checked:
            raise RecipeError("lr_schedule.milestones", None, "required for step: fractions of the run")
        return {**out, "lr_schedule": checked}
    resolve(name)
    for key, value in schedule.items():
        if key != "name":
            if not isinstance(key, str) or not key.isidentifier():
                raise RecipeError(f"lr_schedule.{key}", key, "must be an argument name")
            tunable = isinstance(value, (int, float, dict)) and not isinstance(value, bool)
            checked[key] = _value(f"lr_schedule.{key}", value, lambda v: True, "must be a finite number") \
                if tunable else value
    return {**out, "lr_schedule": checked}


def tunables(recipe: dict | None) -> list[Tunable]:
    """The recipe's tuned values as search dimensions: `clip_grad_norm`, `lr_schedule.<field>`."""
    out = []
    for field in FIELDS:
        entry = (recipe or {}).get(field)
        items = [(field, entry)] if field == "clip_grad_norm" else [
            (f"{field}.{k}", v) for k, v in (entry or {}).items()]
        out += [Tunable(name, v["default"], v["scale"]) for name, v in items if isinstance(v, dict)]
    return out


def split(recipe: dict | None, hparams: dict | None) -> tuple[dict, dict]:
    """(the optimizer's hyperparameters, the recipe with every tuned value resolved): a tuned value
    from `hparams` by its name, else its default."""
    hparams = dict(hparams or {})
    if not recipe:
        return hparams, {}
    names = {t.name for t in tunables(recipe)}
    values = {k: v for k, v in hparams.items() if k in names}
    pick = lambda name, v: float(values.get(name, v["default"])) if isinstance(v, dict) else v  # noqa: E731
    resolved = {}
    if "clip_grad_norm" in recipe:
        resolved["clip_grad_norm"] = pick("clip_grad_norm", recipe["clip_grad_norm"])
    if "lr_schedule" in recipe:
        resolved["lr_schedule"] = {k: pick(f"lr_schedule.{k}", v) for k, v in recipe["lr_schedule"].items()}
    return {k: v for k, v in hparams.items() if k not in names}, resolved


class LrFactor:
    """f(e) of a built-in schedule (module docstring) over a run of `steps` evaluations; a class, so
    that `LambdaLR.state_dict()` saves its fields (plain numbers) with the checkpoint."""

    def __init__(self, schedule: dict, steps: int):
        self.name, self.steps = schedule["name"], int(steps)
        self.warmup = float(schedule.get("warmup", DEFAULTS["warmup"]))
        self.final = float(schedule.get("final", DEFAULTS["final"]))
        self.gamma = float(schedule.get("gamma", DEFAULTS["gamma"]))
        self.milestones = [float(m) for m in schedule.get("milestones", [])]

    def __call__(self, e: int) -> float:
        w = self.warmup * self.steps
        if e < w:
            return min(1.0, (e + 1) / w)
        if self.name in ("cosine", "linear"):
            q = min(1.0, max(0.0, (e - w) / (self.steps - w)))
            return self.final + (1 - self.final) * ((1 + math.cos(math.pi * q)) / 2 if self.name == "cosine" else 1 - q)
        if self.name == "step":
            return self.gamma ** sum(e >= m * self.steps for m in self.milestones)
        return 1.0


def scheduler(opt, schedule: dict | None, steps: int):
    """The `torch.optim.lr_scheduler` object of `schedule` over `opt` (None without one)."""
    import torch

    if not schedule:
        return None
    if schedule["name"] in BUILTIN:
        return torch.optim.lr_scheduler.LambdaLR(opt, LrFactor(schedule, steps))
    args = {k: (steps if v == RUN else v) for k, v in schedule.items() if k != "name"}
    made = resolve(schedule["name"])(opt, **args)
    if not isinstance(made, torch.optim.lr_scheduler.LRScheduler):
        raise ValueError(f"Invalid lr_schedule.name: {schedule['name']!r} returned a {type(made).__name__} "
                         "(must be a torch.optim.lr_scheduler.LRScheduler; ReduceLROnPlateau needs a metric)")
    return made


def has_modes(opt) -> bool:
    """Whether `opt` has train()/eval() modes (schedule-free and averaging optimizers)."""
    return callable(getattr(opt, "train", None)) and callable(getattr(opt, "eval", None))


@contextlib.contextmanager
def evaluation(opt):
    """The optimizer in eval() mode (its evaluation weights) inside, back in train() mode after."""
    if not has_modes(opt):
        yield
        return
    opt.eval()
    try:
        yield
    finally:
        opt.train()


def param_groups(task, optimizer_name, params):
    """What the optimizer is built over: `params` (the task's flat list) unless the task has a
    `param_groups()` hook returning torch's list of dicts; a group setting the optimizer does not
    take (weight_decay for LODO) is dropped, and groups left with no setting become the flat list
    (LODO treats all parameters as one vector). ValueError (one line) for groups that do not cover
    every parameter exactly once."""
    hook = getattr(task, "param_groups", None)
    groups = hook() if callable(hook) else None
    if groups is None:
        return params
    if not isinstance(groups, list) or not all(isinstance(g, dict) and "params" in g for g in groups):
        raise ValueError("Invalid param_groups: the task's param_groups() must return a list of dicts with 'params'")
    seen = [id(p) for g in groups for p in g["params"]]
    if sorted(seen) != sorted(id(p) for p in params):
        raise ValueError("Invalid param_groups: the task's groups must hold each of its parameters() exactly once")
    accepted = _arguments(optimizer_name)
    groups = [{k: v for k, v in g.items() if k == "params" or accepted is None or k in accepted} for g in groups]
    if all(set(g) == {"params"} for g in groups):
        return params
    return groups


def _arguments(optimizer_name) -> set | None:
    """The keyword arguments a registry optimizer takes (None: unknown, keep every group setting)."""
    import lodo

    if not isinstance(optimizer_name, str):
        return None
    try:
        names = {h.name.split(".")[0] for h in lodo.hyperparameters(optimizer_name)} | set(lodo.options(optimizer_name))
        spec = lodo.registered(optimizer_name)
        return names | ({k.split(".")[0] for k in spec.fixed} if spec else set())
    except (ValueError, KeyError):
        return None


class Loop:
    """What the recipe adds to one trial's loop: `after_backward` (clipping, in the closure, so also
    for closure-based optimizers), `after_step` (the lr schedule, stepped once per evaluation), the
    optimizer in train() mode while stepping, and a checkpoint part (`state_dict`) for the schedule."""

    def __init__(self, recipe: dict, opt, params, steps: int, create_graph: bool = False):
        import torch

        self.opt, self.params, self.steps = opt, params, steps
        self.clip = recipe.get("clip_grad_norm")
        if self.clip is not None and create_graph:
            raise ValueError(f"Invalid clip_grad_norm: {self.clip!r} ({type(opt).__name__} steps on the exact "
                             "Hessian of a graph; clipping its gradient is not supported)")
        self._clip = torch.nn.utils.clip_grad_norm_
        self.scheduler = scheduler(opt, recipe.get("lr_schedule"), steps)
        self.modes = has_modes(opt)
        if self.modes:
            opt.train()

    @property
    def saves(self) -> bool:
        """Whether the checkpoint needs this part (a schedule or modes)."""
        return self.scheduler is not None or self.modes

    def after_backward(self) -> None:
        if self.clip is not None:
            self._clip(self.params, self.clip)

    def after_step(self, evaluations: int) -> None:
        """The schedule at `evaluations` (its last_epoch counts evaluations; none past the run's last)."""
        if self.scheduler is not None:
            while self.scheduler.last_epoch < min(evaluations, self.steps - 1):
                self.scheduler.step()

    def state_dict(self, lane: int = 0) -> dict:
        return {"recipe": {"lr_scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                           "mode": "train" if self.modes else None}}

    def load_state_dict(self, state: dict, lane: int = 0) -> None:
        saved = state["recipe"]
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["lr_scheduler"])
        if self.modes and saved.get("mode") == "train":
            self.opt.train()
