"""The optimizer registry: paper names → constructors, GA hyperparameters, Table 6 values.

`available()` lists the names in the paper's spelling, `hyperparameters(name)` the GA's search
space (docs/paper.md §2: public names, defaults = the GA's starting point, scale "log" for rates and other
positive scalars, "decay" for decay rates in [0, 1)), `create(name, params, ...)` builds one.
`paper_hyperparameters(task)` gives Table 6 (docs/paper.md §5) from `lodo.paper`.

Entries name their constructor as "module:attribute" and are imported on first use, so the
registry imports even while an optional module (the meta-trained L2LBGDBGD) is absent.
"""
from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import inspect
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from lodo.paper import TABLE6

logger = logging.getLogger(__name__)


class Hyperparameter(NamedTuple):
    """One GA-tunable hyperparameter: public name, default (the GA's generation-0 mean), scale."""

    name: str
    default: float
    scale: str  # "log": u = ln x;  "decay": u = 1 − ln(1 − x)


def _log(name: str, default: float) -> Hyperparameter:
    return Hyperparameter(name, default, "log")


def _decay(name: str, default: float) -> Hyperparameter:
    return Hyperparameter(name, default, "decay")


def _check_lr(lr: float) -> None:
    if not lr > 0.0:
        raise ValueError(f"Invalid lr: {lr} (must be > 0)")


def _check_decay(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"Invalid {name}: {value} (must be in [0, 1))")


def adam(params, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999) -> torch.optim.Adam:
    """torch's Adam with the authors' TensorFlow ε = 1e-7."""
    _check_lr(lr), _check_decay("beta1", beta1), _check_decay("beta2", beta2)
    return torch.optim.Adam(params, lr=lr, betas=(beta1, beta2), eps=1e-7)


def momentum_sgd(params, lr: float = 0.01, momentum: float = 0.0) -> torch.optim.SGD:
    """Heavy-ball momentum: v ← μv + g; x ← x − lr·v (TF's v ← μv − lr·g; x ← x + v for a constant lr)."""
    _check_lr(lr), _check_decay("momentum", momentum)
    return torch.optim.SGD(params, lr=lr, momentum=momentum)


def rmsprop(params, lr: float = 1e-3, rho: float = 0.9, momentum: float = 0.0) -> torch.optim.RMSprop:
    """RMSprop with momentum, torch's form with ε = 1e-7::

        v ← ρv + (1 − ρ)g²;  b ← μb + g / (√v + ε);  x ← x − lr·b

    TensorFlow (the authors' runs) puts ε inside the root and keeps lr inside the momentum buffer
    (b ← μb + lr·g/√(v + ε); x ← x − b; TF1 also starts v at 1), which equals this for a constant
    lr and gradients far above √ε. On the noisy bowl (Table 6 values, 100k steps, seeds 0/1) the
    three forms agree to 0.1 %: torch 22.28/22.55, Keras 22.29/22.54, TF1 22.30/22.53; Table 1: 22.37.
    """
    _check_lr(lr), _check_decay("rho", rho), _check_decay("momentum", momentum)
    return torch.optim.RMSprop(params, lr=lr, alpha=rho, eps=1e-7, momentum=momentum)


_LODO_SPACE = (_log("lr", 1.0), _log("meta_lr", 1e-3), _decay("beta", 0.9))

# name → (constructor "module:attribute", GA hyperparameters)
_REGISTRY: dict[str, tuple[str, tuple[Hyperparameter, ...]]] = {
    "Adam": ("lodo.registry:adam", (_log("lr", 1e-3), _decay("beta1", 0.9), _decay("beta2", 0.999))),
    "Momentum": ("lodo.registry:momentum_sgd", (_log("lr", 0.01), _decay("momentum", 0.0))),
    "RMSprop": ("lodo.registry:rmsprop", (_log("lr", 1e-3), _decay("rho", 0.9), _decay("momentum", 0.0))),
    "Yogi": ("lodo.yogi:Yogi", (_log("lr", 1e-3), _decay("beta1", 0.9), _decay("beta2", 0.999))),
    "LARS": ("lodo.lars:LARS", (_log("lr", 1e-3), _decay("momentum", 0.9), _log("weight_decay", 5e-4))),
    "L-BFGS": ("lodo.lbfgs:LBFGS", (_log("lr", 1e-3), _log("tau", 1e4))),
    "O-LBFGS": ("lodo.lbfgs:OLBFGS", (_log("lr", 1e-3), _log("tau", 1e4))),
    "BFGS": ("lodo.second_order:BFGS", (_log("lr", 0.01), _log("h0_scale", 1.0))),
    "Levenberg-Marquardt": ("lodo.second_order:LevenbergMarquardt", (_log("damping", 1.0),)),
    "Newton": ("lodo.second_order:Newton", ()),
    "LODO": ("lodo.lodo:LODO", _LODO_SPACE),
    "LODO-Diagonal": ("lodo.lodo:LODODiagonal", _LODO_SPACE),
    "LODO-Global": ("lodo.lodo:LODOGlobal", _LODO_SPACE),
    "LODO-Residuals": ("lodo.lodo:LODOResiduals", _LODO_SPACE),
    "LODO-No-Momentum": ("lodo.lodo:LODONoMomentum", (_log("lr", 1.0), _log("meta_lr", 1e-3))),
    "LODO-SGD": ("lodo.lodo:LODOSGD", _LODO_SPACE),
    # Optional: listed by available() only while its module exists.
    "L2LBGDBGD": ("lodo.l2l:L2LBGDBGD", ()),
}


def _present(name: str) -> bool:
    module = _REGISTRY[name][0].split(":")[0]
    return importlib.util.find_spec(module) is not None


def available() -> list[str]:
    """The optimizer names in the paper's spelling (L2LBGDBGD only while `lodo/l2l.py` exists),
    then the user optimizers added with `register`."""
    return [name for name in _REGISTRY if name != "L2LBGDBGD" or _present(name)] + list(_SPECS)


def _entry(name: str) -> tuple[str, tuple[Hyperparameter, ...]]:
    if name not in _REGISTRY or name not in available():
        raise ValueError(f"Unknown optimizer: {name!r} (valid: {', '.join(available())})")
    return _REGISTRY[name]


def hyperparameters(name: str) -> list[Hyperparameter]:
    """The GA-tunable hyperparameters of optimizer `name` with their defaults and scales (docs/paper.md §2)."""
    if (user := _user_spec(name)) is not None:
        return list(user.hyperparameters)
    return list(_entry(name)[1])


def _constructor(name: str):
    module, attribute = _entry(name)[0].split(":")
    return getattr(importlib.import_module(module), attribute)


def options(name: str) -> list[str]:
    """Constructor keyword arguments of `name` that are not GA hyperparameters (e.g. LARS's total_steps)."""
    if (user := _user_spec(name)) is not None:
        return _spec_options(user)
    tunable = {h.name for h in hyperparameters(name)}
    signature = inspect.signature(_constructor(name)).parameters.values()
    return [p.name for p in signature if p.name not in tunable | {"self", "params", "seed"}
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def create(name: str, params, seed: int | None = None, **hparams) -> torch.optim.Optimizer:
    """Build optimizer `name` over `params`; `hparams` are its hyperparameters (defaults otherwise)
    and options. `seed` reaches the optimizers that draw random numbers (the LODO family) only.
    `name` may also be a registered user optimizer or an OptimizerSpec."""
    if (user := _user_spec(name)) is not None:
        return _create_spec(user, params, seed, hparams)
    constructor = _constructor(name)
    tunable = [h.name for h in hyperparameters(name)]
    extra = options(name)
    unknown = sorted(set(hparams) - set(tunable) - set(extra))
    if unknown:
        valid = ", ".join(tunable) or "none"
        more = f"; options: {', '.join(extra)}" if extra else ""
        raise ValueError(f"Unknown hyperparameter for {name}: {', '.join(unknown)} (valid: {valid}{more})")
    if "seed" in inspect.signature(constructor).parameters:
        hparams["seed"] = seed
    return constructor(params, **hparams)


def paper_hyperparameters(task: str) -> dict[str, dict[str, float]]:
    """Table 6's tuned values for `task` (`lodo.paper.TABLE6`), as {optimizer: {hyperparameter: value}}.

    Image-generation learning rates are already halved, as the full runs use them. Every name is
    checked against the registry, so a typo in the table fails here rather than in a run.
    """
    if task not in TABLE6:
        raise ValueError(f"Unknown task: {task!r} (valid: {', '.join(TABLE6)})")
    values = {}
    for optimizer, hparams in TABLE6[task].items():
        valid = [h.name for h in hyperparameters(optimizer)]  # raises for an unknown optimizer
        unknown = sorted(set(hparams) - set(valid))
        if unknown:
            raise ValueError(f"Unknown hyperparameter for {optimizer} in Table 6: "
                             f"{', '.join(unknown)} (valid: {', '.join(valid)})")
        values[optimizer] = {key: float(value) for key, value in hparams.items()}
    return values


# --- user optimizers: any torch optimizer, declared by an OptimizerSpec ---------------------------

SCALES = ("log", "decay")
LOG_RANGE = (1e-30, 1e30)  # where a log-scale value may lie: the GA's ln(x) and a box of ×/÷ 1000 stay finite
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*\Z")
_SPECS: dict[str, "OptimizerSpec"] = {}  # registered with `register`, in registration order


class OptimizerSpecError(ValueError):
    """A spec that cannot be used. `.field` names the culprit within the spec ("optimizer",
    "hyperparameters.lr.default", "fixed.eps", ...), `.value` is its value, `.allowed` what is allowed;
    str(error) is one line."""

    def __init__(self, name, field: str, value, allowed: str):
        self.name, self.field, self.value, self.allowed = name, field, value, allowed
        super().__init__(f"Invalid optimizer {name!r}: {field}: {value!r} is not allowed ({allowed})")


def _tuplify(value):
    return tuple(_tuplify(v) for v in value) if isinstance(value, (list, tuple)) else value


def _listify(value):
    return [_listify(v) for v in value] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class OptimizerSpec:
    """A user optimizer for the tuner: any torch optimizer with the GA's search space over it.

    name: what tables and the schedule call it ("AdamW").
    optimizer: "module.attr" (or "module:attr") or the object: a torch.optim.Optimizer subclass
        or a factory f(params, **kwargs) returning one.
    hyperparameters: the GA's search space, Hyperparameter(name, default, scale) or the schedule's
        mapping {name: {default, scale}}; scale "log" (default > 0) or "decay" (0 <= default < 1).
    fixed: keyword arguments passed as given and not tuned ({"eps": 1e-8}).

    A name "arg.i" reaches entry i of a tuple argument: "betas.0" tunes betas[0]; the other
    entries come from `fixed` ("betas.1" or the whole "betas") or else the constructor's default.
    """

    name: str
    optimizer: Any
    hyperparameters: tuple = ()
    fixed: dict = field(default_factory=dict)

    def __post_init__(self):
        hps = self.hyperparameters
        if isinstance(hps, dict):
            hps = [(key, value.get("default"), value.get("scale")) if isinstance(value, dict) else (key, value, None)
                   for key, value in hps.items()]
        if isinstance(hps, (list, tuple)):
            hps = tuple(h if isinstance(h, Hyperparameter) else Hyperparameter(*h) if isinstance(h, (list, tuple))
                        and len(h) == 3 else h for h in hps)
        object.__setattr__(self, "hyperparameters", hps)
        if isinstance(self.fixed, dict):
            object.__setattr__(self, "fixed", {k: _tuplify(v) for k, v in self.fixed.items()})

    def to_dict(self) -> dict:
        """The schedule's mapping (plain data, for run manifests); `OptimizerSpec.from_dict` reads it back."""
        optimizer = self.optimizer if isinstance(self.optimizer, str) else \
            f"{self.optimizer.__module__}.{self.optimizer.__qualname__}"
        return {"name": self.name, "optimizer": optimizer,
                "hyperparameters": {h.name: {"default": h.default, "scale": h.scale} for h in self.hyperparameters},
                "fixed": {k: _listify(v) for k, v in self.fixed.items()}}

    @classmethod
    def from_dict(cls, data) -> "OptimizerSpec":
        """A spec from the schedule's mapping {name, optimizer, hyperparameters, fixed}; validated."""
        name = data.get("name") if isinstance(data, dict) else None
        if not isinstance(data, dict):
            raise OptimizerSpecError(name, "entry", data, "must be a registry name or a mapping "
                                     "{name, optimizer, hyperparameters, fixed}")
        allowed = ("name", "optimizer", "hyperparameters", "fixed")
        for key in data:
            if key not in allowed:
                raise OptimizerSpecError(name, str(key), data[key], f"unknown key; allowed: {', '.join(allowed)}")
        for key in ("name", "optimizer"):
            if key not in data:
                raise OptimizerSpecError(name, key, None, "missing (required)")
        hps, fixed = data.get("hyperparameters") or {}, data.get("fixed") or {}
        if not isinstance(hps, dict):
            raise OptimizerSpecError(name, "hyperparameters", hps, "must be a mapping name -> {default, scale}")
        for key, value in hps.items():
            if not isinstance(value, dict):
                raise OptimizerSpecError(name, f"hyperparameters.{key}", value, "must be a mapping {default, scale}")
            for sub in value:
                if sub not in ("default", "scale"):
                    raise OptimizerSpecError(name, f"hyperparameters.{key}.{sub}", value[sub],
                                             "unknown key; allowed: default, scale")
            for sub in ("default", "scale"):
                if sub not in value:
                    raise OptimizerSpecError(name, f"hyperparameters.{key}.{sub}", None, "missing (required)")
        if not isinstance(fixed, dict):
            raise OptimizerSpecError(name, "fixed", fixed, "must be a mapping argument -> value")
        spec = cls(data["name"], data["optimizer"], dict(hps), dict(fixed))
        validate(spec)
        return spec


_ALLOWED = "must be a torch.optim.Optimizer subclass or a factory returning one, a Python function (docs/tasks.md)"


def _standard_library(module: str | None) -> bool:
    """Whether `module` (a dotted name) is Python's own: the standard library or the builtins."""
    top = (module or "").partition(".")[0]
    return top in sys.stdlib_module_names or top in ("builtins", "__builtin__")


def _resolve_constructor(spec: OptimizerSpec):
    """What `spec.optimizer` names, checked BEFORE anything is called: a torch.optim.Optimizer subclass,
    or a function written in Python outside the standard library (a factory). A name in the standard
    library (`os.system`, `subprocess.run`, ...) is refused before its module is even imported, and
    builtins, other callables (instances, partials, C functions) and non-Optimizer classes are refused;
    importing a user's module runs its code, which is the trust a schedule asks for (docs/tasks.md)."""
    target = spec.optimizer
    if isinstance(target, str):
        module, sep, attribute = target.rpartition(":") if ":" in target else target.rpartition(".")
        if not module or not attribute:
            raise OptimizerSpecError(spec.name, "optimizer", target, 'must be "module.attr", e.g. "torch.optim.AdamW"')
        if _standard_library(module):
            raise OptimizerSpecError(spec.name, "optimizer", target, f"{_ALLOWED}; {module!r} is the standard library")
        try:
            imported = importlib.import_module(module)
        except (Exception, SystemExit) as error:  # noqa: BLE001 - importing the user's module raised
            what = "does not resolve" if isinstance(error, ImportError) else "importing it failed"
            first = str(error).splitlines()[0][:200] if str(error) else ""
            raise OptimizerSpecError(spec.name, "optimizer", spec.optimizer,
                                     f"{what}: {type(error).__name__}: {first}") from None
        try:
            target = getattr(imported, attribute)
        except AttributeError:
            raise OptimizerSpecError(spec.name, "optimizer", spec.optimizer,
                                     f"does not resolve: module {module!r} has no attribute {attribute!r}") from None
    if inspect.isclass(target):
        if not issubclass(target, torch.optim.Optimizer):
            raise OptimizerSpecError(spec.name, "optimizer", spec.optimizer, _ALLOWED)
    elif not inspect.isfunction(target) or _standard_library(getattr(target, "__module__", None)):
        raise OptimizerSpecError(spec.name, "optimizer", spec.optimizer, _ALLOWED)
    return target


def _split(name: str) -> tuple[str, int | None]:
    """"betas.0" -> ("betas", 0); "lr" -> ("lr", None); "betas.x" -> ("betas.x", None) (then not accepted)."""
    base, _, index = name.partition(".")
    return (base, int(index)) if index.isdigit() else (name, None)


def _arguments(constructor) -> tuple[dict[str, inspect.Parameter], bool]:
    """The constructor's keyword arguments after `params`, and whether it takes **kwargs."""
    params = list(inspect.signature(constructor).parameters.values())
    named = {p.name: p for p in params[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def _kwargs(spec: OptimizerSpec, constructor, values: dict) -> dict:
    """Constructor keywords from `fixed` and the tuned `values`, "arg.i" entries placed into tuple args."""
    named, _ = _arguments(constructor)
    kwargs, parts = {}, {}
    for key, value in [*spec.fixed.items(), *values.items()]:
        base, index = _split(key)
        if index is None:
            kwargs[key] = value
        else:
            parts.setdefault(base, {})[index] = value
    for base, entries in parts.items():
        start = kwargs.get(base, named[base].default if base in named else inspect.Parameter.empty)
        start = list(start) if isinstance(start, (tuple, list)) else []
        start += [None] * (max(entries) + 1 - len(start))
        for index, value in entries.items():
            start[index] = value
        kwargs[base] = tuple(start)
    return kwargs


def validate(spec: OptimizerSpec):
    """Check `spec` and return its constructor; OptimizerSpecError naming the field otherwise.

    The name, that `optimizer` resolves to an Optimizer subclass or factory, that every tuned and
    fixed argument is in its signature (tuple entries "arg.i" within the argument's default or
    the fixed value), each default in its scale's domain, and that the constructor accepts the
    defaults (it is built once over a one-element parameter).
    """
    if not isinstance(spec.name, str) or not _NAME.match(spec.name):
        raise OptimizerSpecError(spec.name, "name", spec.name, "must be letters, digits, '_', '.', '+', '-'")
    constructor = _resolve_constructor(spec)
    named, any_keyword = _arguments(constructor)
    if not isinstance(spec.hyperparameters, tuple) or not all(isinstance(h, Hyperparameter) and isinstance(h.name, str)
                                                              for h in spec.hyperparameters):
        raise OptimizerSpecError(spec.name, "hyperparameters", spec.hyperparameters,
                                 "must be Hyperparameter(name, default, scale) entries or {name: {default, scale}}")
    if not isinstance(spec.fixed, dict) or not all(isinstance(k, str) for k in spec.fixed):
        raise OptimizerSpecError(spec.name, "fixed", spec.fixed, "must be a mapping argument -> value")
    seen = set()
    for where, key in [*(("hyperparameters", h.name) for h in spec.hyperparameters), *(("fixed", k) for k in spec.fixed)]:
        if key in seen:
            raise OptimizerSpecError(spec.name, f"{where}.{key}", key, "is both tuned and fixed" if where == "fixed"
                                     else "must not repeat a hyperparameter")
        seen.add(key)
        base, index = _split(key)
        if base not in named and not any_keyword:
            raise OptimizerSpecError(spec.name, f"{where}.{key}", key,
                                     f"not an argument of {getattr(constructor, '__qualname__', constructor)}; "
                                     f"it takes: {', '.join(named) or 'none'}")
        if index is not None:
            default = spec.fixed.get(base, named[base].default if base in named else None)
            size = len(default) if isinstance(default, tuple) else None
            if size is not None and index >= size:
                raise OptimizerSpecError(spec.name, f"{where}.{key}", key, f"{base} has {size} entries")
            if size is None and base not in spec.fixed:
                raise OptimizerSpecError(spec.name, f"{where}.{key}", key,
                                         f"{base} has no tuple default; give fixed: {{{base}: [...]}}")
    for h in spec.hyperparameters:
        where = f"hyperparameters.{h.name}"
        if h.scale not in SCALES:
            raise OptimizerSpecError(spec.name, f"{where}.scale", h.scale, f"must be one of: {', '.join(SCALES)}")
        ok = isinstance(h.default, (int, float)) and not isinstance(h.default, bool) and math.isfinite(h.default)
        if not ok or (h.scale == "log" and not LOG_RANGE[0] <= h.default <= LOG_RANGE[1]) \
                or (h.scale == "decay" and not 0 <= h.default < 1):
            allowed = "must be in [0, 1) for scale decay" if h.scale == "decay" else "must be > 0 for scale log" \
                if not (ok and h.default > 0) else f"must be within [{LOG_RANGE[0]:g}, {LOG_RANGE[1]:g}] for scale log"
            raise OptimizerSpecError(spec.name, f"{where}.default", h.default, allowed)
    kwargs = _kwargs(spec, constructor, {h.name: h.default for h in spec.hyperparameters})
    if "seed" in named:
        kwargs.setdefault("seed", 0)
    try:
        built = constructor([torch.zeros(1, requires_grad=True)], **kwargs)
    except Exception as error:
        raise OptimizerSpecError(spec.name, "optimizer", spec.optimizer, f"building it with the defaults and fixed "
                                 f"arguments failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from None
    if not isinstance(built, torch.optim.Optimizer):
        raise OptimizerSpecError(spec.name, "optimizer", spec.optimizer,
                                 f"the factory returned {type(built).__name__}, not a torch.optim.Optimizer")
    return constructor


def register(spec: OptimizerSpec | None = None, /, **fields) -> OptimizerSpec:
    """Add a user optimizer to the registry: `register(OptimizerSpec(...))` or `register(name=...,
    optimizer=..., hyperparameters=..., fixed=...)`. Then `available()`, `hyperparameters()`,
    `options()` and `create()` know it by name. Registering the same spec again is a no-op; a name
    already taken (a built-in, or another spec) is an OptimizerSpecError."""
    if spec is None:
        spec = OptimizerSpec(**fields)
    elif fields:
        raise TypeError("register() takes an OptimizerSpec or keyword fields, not both")
    validate(spec)
    if spec.name in _REGISTRY:
        raise OptimizerSpecError(spec.name, "name", spec.name, "already a registry optimizer; choose another name")
    if spec.name in _SPECS and _SPECS[spec.name] != spec:
        raise OptimizerSpecError(spec.name, "name", spec.name, "already registered with a different spec")
    _SPECS[spec.name] = spec
    logger.debug("registered optimizer %r (%s)", spec.name, spec.optimizer)
    return spec


def unregister(name: str) -> None:
    """Remove a registered user optimizer (built-ins stay)."""
    if name not in _SPECS:
        raise ValueError(f"Unknown registered optimizer: {name!r} (registered: {', '.join(_SPECS) or 'none'})")
    del _SPECS[name]


def registered(name: str) -> OptimizerSpec | None:
    """The spec registered under `name`, None for a built-in or unknown name."""
    return _SPECS.get(name)


def _user_spec(name) -> OptimizerSpec | None:
    """The user spec `name` refers to: a registered name or an OptimizerSpec object (validated)."""
    if isinstance(name, OptimizerSpec):
        validate(name)
        return name
    return _SPECS.get(name) if isinstance(name, str) else None


def _spec_options(spec: OptimizerSpec) -> list[str]:
    tuned = {_split(h.name)[0] for h in spec.hyperparameters} | {_split(k)[0] for k in spec.fixed}
    named, _ = _arguments(_resolve_constructor(spec))
    return [n for n in named if n not in tuned | {"seed"}]


def _create_spec(spec: OptimizerSpec, params, seed, hparams: dict) -> torch.optim.Optimizer:
    constructor = _resolve_constructor(spec)
    tunable = [h.name for h in spec.hyperparameters]
    extra = _spec_options(spec)
    unknown = sorted(set(hparams) - set(tunable) - set(extra))
    if unknown:
        more = f"; options: {', '.join(extra)}" if extra else ""
        raise ValueError(f"Unknown hyperparameter for {spec.name}: {', '.join(unknown)} "
                         f"(valid: {', '.join(tunable) or 'none'}{more})")
    values = {h.name: h.default for h in spec.hyperparameters} | dict(hparams)
    kwargs = _kwargs(spec, constructor, values)
    if "seed" in _arguments(constructor)[0]:
        kwargs["seed"] = seed
    return constructor(params, **kwargs)
