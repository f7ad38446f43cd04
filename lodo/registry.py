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
from typing import NamedTuple

import torch


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
    """The optimizer names in the paper's spelling (L2LBGDBGD only while `lodo/l2l.py` exists)."""
    return [name for name in _REGISTRY if name != "L2LBGDBGD" or _present(name)]


def _entry(name: str) -> tuple[str, tuple[Hyperparameter, ...]]:
    if name not in _REGISTRY or name not in available():
        raise ValueError(f"Unknown optimizer: {name!r} (valid: {', '.join(available())})")
    return _REGISTRY[name]


def hyperparameters(name: str) -> list[Hyperparameter]:
    """The GA-tunable hyperparameters of optimizer `name` with their defaults and scales (docs/paper.md §2)."""
    return list(_entry(name)[1])


def _constructor(name: str):
    module, attribute = _entry(name)[0].split(":")
    return getattr(importlib.import_module(module), attribute)


def options(name: str) -> list[str]:
    """Constructor keyword arguments of `name` that are not GA hyperparameters (e.g. LARS's total_steps)."""
    tunable = {h.name for h in hyperparameters(name)}
    signature = inspect.signature(_constructor(name)).parameters.values()
    return [p.name for p in signature if p.name not in tunable | {"self", "params", "seed"}
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def create(name: str, params, seed: int | None = None, **hparams) -> torch.optim.Optimizer:
    """Build optimizer `name` over `params`; `hparams` are its hyperparameters (defaults otherwise)
    and options. `seed` reaches the optimizers that draw random numbers (the LODO family) only."""
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
    from lodo.paper import TABLE6

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
