"""Bounded search spaces: each hyperparameter's interval, from its scale (docs/paper.md §4).

The GA needs no bounds (it moves a mean in the rescaled space); a searcher that samples a box
(random search, TPE, CMA-ES: `tuner.search.optuna`) or a GA whose first generation is drawn broadly
needs one per hyperparameter:

    log   (u = ln x):           x log-uniform on [low, high];   default [default·1e-3, default·1e3]
    decay (u = 1 − ln(1 − x)):  x = 1 − y, y log-uniform on [1 − high, 1 − low];
                                default x ∈ [0, 0.9999], i.e. y ∈ [1e-4, 1]

Bounds are values of the hyperparameter itself; the schedule's `search.bounds` overrides them,
per hyperparameter name for every optimizer or per optimizer (`tuner.driver.schedule.SearchSettings`).
No torch, no Optuna: this module is data and arithmetic.
"""
from __future__ import annotations

import math
from collections import namedtuple

from tuner.search import ga
from tuner.driver.schedule import Schedule, ga_options, space_for

Bounded = namedtuple("Bounded", "name default scale low high")
"""One searched hyperparameter with its interval [low, high] (values of the hyperparameter)."""


def default_bounds(default: float, scale: str) -> tuple[float, float]:
    """The documented default interval of a hyperparameter with this default and scale (the GA's
    own rule, `tuner.search.ga.default_bounds`, so a uniform GA start and the searchers share one box)."""
    if scale not in ("log", "decay"):
        raise ValueError(f"Invalid scale: {scale!r} (must be log or decay)")
    return ga.default_bounds(ga.Dimension("", default, scale))


def bounded_space(schedule: Schedule, optimizer: str, registry=None) -> list[Bounded]:
    """`optimizer`'s hyperparameters (`space_for`: scales and start values applied) with their
    intervals: the schedule's per-optimizer bounds, else its per-name bounds, else the defaults."""
    own = schedule.search.bounds.get(optimizer)
    own = own if isinstance(own, dict) else {}
    out = []
    for d in space_for(schedule, optimizer, registry):
        shared = schedule.search.bounds.get(d.name)
        low, high = own.get(d.name) or (shared if isinstance(shared, tuple) else None) \
            or default_bounds(d.default, d.scale)
        out.append(Bounded(d.name, d.default, d.scale, float(low), float(high)))
    return out


def log_interval(dim: Bounded) -> tuple[float, float]:
    """The interval sampled log-uniformly: [low, high] of x ("log") or of y = 1 − x ("decay")."""
    if dim.scale == "log":
        return dim.low, dim.high
    return 1.0 - dim.high, 1.0 - dim.low


def value(dim: Bounded, sampled: float) -> float:
    """The hyperparameter's value from the log-uniformly sampled number: x, or x = 1 − y."""
    return float(sampled) if dim.scale == "log" else 1.0 - float(sampled)


def from_unit(dim: Bounded, t: float) -> float:
    """The value at fraction t ∈ [0, 1] of the log interval (t = 0: low end of the sampled number);
    a uniform t gives the log-uniform distribution above (e.g. a broad first GA generation)."""
    lo, hi = log_interval(dim)
    return value(dim, math.exp(math.log(lo) + t * (math.log(hi) - math.log(lo))))


def ga_keywords(schedule: Schedule, optimizer: str, registry=None) -> dict:
    """`GeneticAlgorithm`'s keyword options for `optimizer`: the schedule's `ga:` mapping, plus, for
    the uniform start (`init: uniform`) and `boundary: clip`, the box of `bounded_space` (the same as
    the searchers')."""
    options = ga_options(schedule)
    if ga.GAConfig(**options).uses_box:
        options["bounds"] = {d.name: (d.low, d.high) for d in bounded_space(schedule, optimizer, registry)}
    return options
