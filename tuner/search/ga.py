"""The Appendix-E genetic algorithm as an ask/tell object (docs/paper.md §4).

    u = rescale(x)                        "log": u = ln x;  "decay": u = 1 − ln(1 − x)
    generation 0:  mean ← rescale(defaults or start values)
    each generation g with (σ_g, steps_g):
        individual i:  u_i = mean + σ_g · z_i,  z_i ~ N(0, I) from a generator seeded by seed_i
                       x_i = unrescale(u_i), trained for steps_g steps with trial seed seed_i
        fitness_i = average training loss over the last 10 % of its steps (the caller's business)
        mean ← mean over the better half (by fitness) of rescale(x_i); NaN/inf rank last and
               never enter the mean; if no individual is finite, the mean stays.
    the tuned values = the final mean

Options beyond Appendix E (`GAConfig`, which validates them; all off by default, so the default
GA is the paper's, bit for bit; a schedule's `ga:` mapping sets them; when to use each:
docs/tuning.md):
    init="uniform"     generation 0 drawn uniformly in rescaled space from `bounds` (natural
                       units per hyperparameter; default `default_bounds`), not around the mean;
                       generation 1's mean is its best individual (the better half of a box-wide
                       draw averages to near the box's centre, wherever the optimum lies)
    init="elite"       as "uniform", and C ← Cov(the best quarter of generation 0, at least n + 1
                       of its better half) / σ₁² (needs
                       covariance="rank_mu"): a hyperparameter the good draws spread widely along
                       (one that short trials barely rank, as a decay rate) is searched widely, instead of
                       at σ₁ from wherever generation 0's best happened to put it
    step_size="csa"    σ_g = noise_g · s_g, where s_g is adapted by CMA-ES's cumulative step-size
                       adaptation (Hansen 2016, eqs. 43–44) with μ_eff = μ = population // 2 (weighted recombination: 1 / Σ w_i²):
                           p ← (1 − c)·p + √(c(2 − c)·μ_eff) · (mean' − mean) / σ_g
                           s ← s · exp(min(1, (c / d)(‖p‖ / E‖N(0, I)‖ − 1)))
                       c = (μ_eff + 2) / (n + μ_eff + 5), d = 1 + 2·max(0, √((μ_eff − 1)/(n + 1)) − 1) + c;
                       σ grows while selection keeps moving the mean one way, shrinks when it dithers
    covariance="rank_mu"  individuals at mean + σ·C^½·z, C adapted by CMA-ES's rank-μ update with
                       equal weights (or recombination's; Hansen 2016, eq. 30): y_i = (u_i − mean)/σ over the better half,
                           C ← (1 − c_μ)·C + c_μ · (1/μ) Σ y_i y_iᵀ,  c_μ = min(1, 2(μ − 2 + 1/μ) / ((n + 2)² + μ))
                       so σ stretches along a ridge (Momentum's lr/(1 − momentum), Adam's lr/beta1)
                       instead of crossing it; with csa the path is taken in C^−½ coordinates
    seeds=k            each individual trains k times (trial seeds of indices i, i + P, ...,
                       i + (k − 1)·P); its fitness is the mean of the k, +inf if any is not finite
    trial_seeds="common"  common random numbers: every individual of a generation trains with
                       the same trial seed(s) (those of indices 0, P, ..., (k − 1)·P), so the task
                       instance and its noise are the same for all and the ranking compares values
                       only; the draws still come from each index's own seed
    recombination="weighted"  the next mean is CMA-ES's weighted mean of the better half (Hansen 2016,
                       eq. 49): w_i ∝ ln(μ + ½) − ln i for the i-th best, Σ w_i = 1, so the best
                       individuals pull harder; CSA and rank-μ then use μ_eff = 1 / Σ w_i² and the
                       rank-μ sum Σ w_i y_i y_iᵀ. Equal weights (the default) are Appendix E's rule
    boundary="clip"    every drawn individual is moved to the nearest point of the `bounds` box in
                       rescaled space (the box the other searchers sample), so the mean, a mean of
                       such points, stays in it too; the default "free" lets the search leave the
                       box, as Appendix E's GA does. For a search that a region beyond the box would
                       mislead (a plateau that short trials cannot tell from good values, such as a
                       decay rate whose warm-up outlasts the trial)
    generation rows (noise, steps, P_g)  a generation of its own size P_g instead of `population`
                       (e.g. a broad uniform generation 0 of short trials); the better half is P_g // 2
    final="finalists"  the last generation row is not drawn: its P_g individuals are the current
                       mean and the P_g − 1 best distinct individuals of the earlier generations
                       whose trials were as long as the second-to-last's (so their fitness values
                       compare), each trained that row's steps (typically several times longer);
                       the tuned values are the finalist of lowest fitness (ties: the mean), which
                       becomes the final mean. For values whose worth shows only in long runs
                       (a step decay τ that short trials cannot tell from none); its noise is unused

Evaluation belongs to the caller (a loop, a process pool, Ray), as with pycma's and
nevergrad's ask/tell. Nothing here imports torch or ray, there is no hidden RNG, and the whole
state serialises to JSON and restores exactly.
"""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections import namedtuple
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

SCALES = ("log", "decay")
FORMAT = "lodo-tune.ga/1"
INITS = ("mean", "uniform", "elite")
STEP_SIZES = ("schedule", "csa")
COVARIANCES = ("identity", "rank_mu")
TRIAL_SEEDS = ("individual", "common")
FINALS = ("mean", "finalists")
RECOMBINATIONS = ("equal", "weighted")
BOUNDARIES = ("free", "clip")

# The largest double below 1: a decay rate never reaches 1, whatever u (1 − ln(1 − x) → ∞).
_BELOW_ONE = math.nextafter(1.0, 0.0)
_TINY, _HUGE = np.finfo(float).tiny, np.finfo(float).max

Dimension = namedtuple("Dimension", "name default scale")
"""One searched hyperparameter; `lodo.hyperparameters(name)` returns objects of the same shape."""

Space = Sequence[Any]
"""A list of (name, default, scale) tuples or of objects with .name, .default and .scale."""


CHOICES = {"init": INITS, "step_size": STEP_SIZES, "covariance": COVARIANCES, "trial_seeds": TRIAL_SEEDS,
           "final": FINALS, "recombination": RECOMBINATIONS, "boundary": BOUNDARIES}
"""Each named option's allowed values, the paper's first."""


class GAOptionError(ValueError):
    """An invalid GA option; str is one line, `Invalid <field>: <value> (<what is allowed>)`, and
    `.field`, `.value`, `.allowed` let a schedule name it as `ga.<field>` instead."""

    def __init__(self, field: str, value: Any, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"Invalid {field}: {value!r} ({allowed})")


@dataclass(frozen=True)
class GAConfig:
    """The GA's options beyond Appendix E (module docstring), validated once, here: every rule on
    them lives in this class, and `GeneticAlgorithm` and a schedule's `ga:` mapping both use it.
    The defaults are Appendix E's GA (`GAConfig.paper()`); `GAConfig.improved()` is the improved
    GA of `schedules/noisy_bowl-improved.yaml` (docs/tuning.md)."""

    init: str = "mean"
    step_size: str = "schedule"
    covariance: str = "identity"
    seeds: int = 1
    trial_seeds: str = "individual"
    final: str = "mean"
    recombination: str = "equal"
    boundary: str = "free"

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise GAOptionError(name, getattr(self, name), f"must be one of {', '.join(allowed)}")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, (int, np.integer)) or self.seeds < 1:
            raise GAOptionError("seeds", self.seeds, "must be an integer >= 1")
        object.__setattr__(self, "seeds", int(self.seeds))
        if self.init == "elite" and self.covariance != "rank_mu":
            raise GAOptionError("init", "elite", "needs covariance: rank_mu; it sets the noise's shape, "
                                                 "which only rank_mu uses")

    @classmethod
    def paper(cls) -> "GAConfig":
        """Appendix E's GA: every option at its default."""
        return cls()

    @classmethod
    def improved(cls) -> "GAConfig":
        """The improved GA on the noisy bowl: a uniform start with an elite-shaped noise, CSA and
        rank-μ adaptation, finalists, and draws kept inside the search box."""
        return cls(init="elite", step_size="csa", covariance="rank_mu", final="finalists", boundary="clip")

    def check_generations(self, count: int) -> None:
        """The rule that needs the schedule: finalists are a generation row of their own."""
        if self.final == "finalists" and count < 2:
            raise GAOptionError("final", "finalists", "needs at least 2 generations; the last one is the finalists'")

    @property
    def uniform_start(self) -> bool:
        """Generation 0 is drawn uniformly over the search box (init "uniform" or "elite")."""
        return self.init in ("uniform", "elite")

    @property
    def uses_box(self) -> bool:
        """The search box matters: a uniform start draws in it, boundary "clip" keeps draws in it."""
        return self.uniform_start or self.boundary == "clip"

    @property
    def is_paper(self) -> bool:
        """All options at their defaults: Appendix E's GA (its history and JSON keys only)."""
        return self == GAConfig()


def rescale(x: float, scale: str) -> float:
    """The GA's coordinate of value x: u = ln x ("log", x > 0) or u = 1 − ln(1 − x) ("decay", 0 ≤ x < 1)."""
    x = float(x)
    if scale == "log":
        if not (0.0 < x < math.inf):
            raise ValueError(f"Invalid log-scaled value: {x!r} (must be positive and finite)")
        return math.log(x)
    if scale == "decay":
        if not (0.0 <= x < 1.0):
            raise ValueError(f"Invalid decay value: {x!r} (must be in [0, 1))")
        return 1.0 - math.log1p(-x)
    raise ValueError(f"Invalid scale: {scale!r} (must be one of {', '.join(SCALES)})")


def unrescale(u: float, scale: str) -> float:
    """The value at GA coordinate u: x = e^u ("log") or x = 1 − e^(1 − u) ("decay").

    "decay" is clipped to [0, 1): u < 1 gives 0, and large u gives the largest double below 1,
    never 1 itself. "log" is clipped to the positive finite doubles.
    """
    u = float(u)
    if math.isnan(u):
        raise ValueError(f"Invalid rescaled value: {u!r} (must not be NaN)")
    if scale == "log":
        return min(max(math.exp(min(u, 709.0)), _TINY), _HUGE)  # e^709 < max double
    if scale == "decay":
        if u <= 1.0:
            return 0.0
        return min(-math.expm1(1.0 - u), _BELOW_ONE)
    raise ValueError(f"Invalid scale: {scale!r} (must be one of {', '.join(SCALES)})")


def _dimensions(space: Space) -> tuple[Dimension, ...]:
    """Normalise a space to Dimension tuples, validating names, scales and defaults."""
    dims = []
    for entry in space:
        if all(hasattr(entry, a) for a in ("name", "default", "scale")):
            name, default, scale = entry.name, entry.default, entry.scale
        else:
            name, default, scale = entry
        if scale not in SCALES:
            raise ValueError(f"Invalid scale for {name}: {scale!r} (must be one of {', '.join(SCALES)})")
        try:
            rescale(default, scale)
        except ValueError as error:
            raise ValueError(f"Invalid default for {name}: {default!r} ({error})") from None
        dims.append(Dimension(str(name), float(default), scale))
    if not dims:
        raise ValueError("Invalid space: [] (must name at least one hyperparameter)")
    names = [d.name for d in dims]
    if len(set(names)) != len(names):
        raise ValueError(f"Invalid space: {names} (hyperparameter names must be unique)")
    return tuple(dims)


def default_bounds(dimension) -> tuple[float, float]:
    """The search box of one hyperparameter in natural units: log → [default·1e-3, default·1e3];
    decay → x = 1 − y with y on [1e-4, 1], i.e. [0, 0.9999] (rescaled: u on [1, 1 + ln 1e4])."""
    if dimension.scale == "log":
        return dimension.default * 1e-3, dimension.default * 1e3
    return 0.0, 1.0 - 1e-4


def individual_seed(seed: int, name: str, generation: int, index: int) -> int:
    """The trial seed of one individual, a 32-bit integer fixed by (tuner seed, optimizer, generation, index).

    The optimizer name enters through SHA-256 (not Python's salted hash()), so the seed is the
    same in every process and whatever order individuals are evaluated or told in.
    """
    name_key = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")
    sequence = np.random.SeedSequence([int(seed), name_key, int(generation), int(index)])
    return int(sequence.generate_state(1, np.uint32)[0])


@dataclass(frozen=True)
class Individual:
    """One member of a generation: train `hparams` for `steps` steps with trial seed `seed`."""

    generation: int
    index: int
    seed: int
    hparams: dict[str, float]
    steps: int


def _encode(x: float) -> float | str:
    """JSON has no inf/nan: encode them as the strings "inf", "-inf", "nan"; finite floats stay (repr round-trips)."""
    return x if math.isfinite(x) else repr(float(x))


def _decode(x: float | str) -> float:
    return float(x)


class GeneticAlgorithm:
    """The Appendix-E GA over one optimizer's hyperparameters (docs/paper.md §4), ask/tell style.

    >>> ga = GeneticAlgorithm(space, [(3.0, 200)] * 10, population=32, seed=0, name="Adam")
    >>> while not ga.done:
    ...     individuals = ga.ask()
    ...     ga.tell({i.index: evaluate(i) for i in individuals})
    >>> ga.best()

    `generations` holds (noise std σ, steps) per generation, or (σ, steps, size) for a generation
    of another size than `population` (size None: `population`); `start` optionally replaces some
    defaults as generation 0's mean. `init`, `step_size`, `seeds`, `covariance`, `trial_seeds`,
    `final`, `recombination` and `boundary` are the options beyond Appendix E, held as `self.config`
    (a `GAConfig`; or give one as `config=`, e.g. `config=GAConfig.improved()`), `bounds` the search
    box; their defaults give the paper's GA.
    """

    def __init__(self, space: Space, generations: Iterable[tuple[float, int]], population: int,
                 seed: int = 0, name: str = "", start: Mapping[str, float] | None = None, *,
                 init: str = "mean", bounds: Mapping[str, Sequence[float]] | None = None,
                 step_size: str = "schedule", seeds: int = 1, covariance: str = "identity",
                 trial_seeds: str = "individual", final: str = "mean", recombination: str = "equal",
                 boundary: str = "free", config: GAConfig | None = None):
        self.space = _dimensions(space)
        self.generations = tuple(self._check_generation(g, i) for i, g in enumerate(generations))
        if not self.generations:
            raise ValueError("Invalid generations: [] (must hold at least one (noise, steps) pair)")
        if isinstance(population, bool) or not isinstance(population, (int, np.integer)) or population < 2:
            raise ValueError(f"Invalid population: {population!r} (must be an integer >= 2)")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"Invalid seed: {seed!r} (must be a non-negative integer)")
        if not isinstance(name, str):
            raise ValueError(f"Invalid name: {name!r} (must be a string)")
        self.population, self.seed, self.name = int(population), int(seed), name
        start = dict(start or {})
        unknown = sorted(set(start) - {d.name for d in self.space})
        if unknown:
            raise ValueError(f"Invalid start: {unknown[0]!r} is not a hyperparameter "
                             f"(must be one of {', '.join(d.name for d in self.space)})")
        for d in self.space:
            if d.name in start:
                try:
                    rescale(start[d.name], d.scale)
                except ValueError as error:
                    raise ValueError(f"Invalid start value for {d.name}: {start[d.name]!r} ({error})") from None
        self.start = {k: float(v) for k, v in start.items()}
        self.config = GAConfig(init=init, step_size=step_size, covariance=covariance, seeds=seeds,
                               trial_seeds=trial_seeds, final=final, recombination=recombination, boundary=boundary)
        if config is not None:  # the options as one object instead of keywords
            if not isinstance(config, GAConfig) or not self.config.is_paper:
                raise ValueError(f"Invalid config: {config!r} (must be a GAConfig, given instead of the option "
                                 "keywords, not beside them)")
            self.config = config
        self.config.check_generations(len(self.generations))
        self.bounds = self._check_bounds(bounds or {})
        self.generation = 0
        self.history: list[dict] = []
        self._mean_u = [rescale(self.start.get(d.name, d.default), d.scale) for d in self.space]
        self._step = 1.0                      # s: σ_g = noise_g · s (1 unless step_size is "csa")
        self._path = [0.0] * len(self.space)  # p: CSA's evolution path in rescaled space
        self._cov = np.eye(len(self.space)).tolist()  # C: the search distribution's shape (identity unless rank_mu)
        self._asked: list[Individual] | None = None

    def _check_bounds(self, bounds: Mapping[str, Sequence[float]]) -> dict[str, tuple[float, float]]:
        """Every dimension's (low, high) in natural units: the given ones, else `default_bounds`."""
        unknown = sorted(set(bounds) - {d.name for d in self.space})
        if unknown:
            raise ValueError(f"Invalid bounds: {unknown[0]!r} is not a hyperparameter "
                             f"(must be one of {', '.join(d.name for d in self.space)})")
        out = {}
        for d in self.space:
            pair = bounds.get(d.name, default_bounds(d))
            try:
                low, high = (float(v) for v in pair)
                ok = rescale(low, d.scale) < rescale(high, d.scale)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"Invalid bounds for {d.name}: {pair!r} (must be [low, high], low < high, "
                                 f"both valid on the {d.scale} scale)")
            out[d.name] = (low, high)
        return out

    def size(self, generation: int) -> int:
        """Individuals in `generation`: its row's own size, else `population`."""
        row = self.generations[min(generation, len(self.generations) - 1)]
        return row[2] if len(row) > 2 and row[2] is not None else self.population

    @property
    def sizes(self) -> list[int]:
        """Trials per generation (size × seeds), for progress and budgets."""
        return [self.size(g) * self.config.seeds for g in range(len(self.generations))]

    @property
    def evaluations(self) -> int:
        """Trials in the current generation: its size × seeds (the finalists: as many as there are
        distinct candidates, at most its size); `tell` takes one fitness per index 0..evaluations − 1."""
        return len(self.ask()) if self._finals() else self.size(self.generation) * self.config.seeds

    @property
    def sigma(self) -> float:
        """The current generation's noise σ in rescaled space (the schedule's noise × the adapted factor)."""
        return self.generations[min(self.generation, len(self.generations) - 1)][0] * self._step

    def _paper(self) -> bool:
        """All options at their defaults: Appendix E's GA (its history and JSON keys only)."""
        return self.config.is_paper

    def _uniform(self) -> bool:
        return self.config.uniform_start and self.generation == 0

    def _finals(self) -> bool:
        """The current generation is the finalists' (final "finalists", last row)."""
        return self.config.final == "finalists" and self.generation == len(self.generations) - 1

    def _finalists(self, size: int) -> list[dict[str, float]]:
        """The current mean, then the best distinct individuals (by fitness; ties by generation, index)
        of the told generations whose trials had the second-to-last row's length: `size` at most."""
        steps = self.generations[-2][1]
        pool = sorted((fitness, h["generation"], i, h["individuals"][i]["hparams"])
                      for h in self.history if h["steps"] == steps
                      for i, fitness in enumerate(h["fitness"]))
        chosen = [self.mean]
        for fitness, _, _, hparams in pool:
            if len(chosen) == size:
                break
            if math.isfinite(fitness) and hparams not in chosen:
                chosen.append(dict(hparams))
        return chosen

    @staticmethod
    def _check_generation(entry, i: int) -> tuple:
        """(noise, steps) or (noise, steps, size), validated; a size of None is dropped."""
        if not isinstance(entry, (tuple, list)) or len(entry) not in (2, 3):
            raise ValueError(f"Invalid generations[{i}]: {entry!r} (must be (noise, steps) or (noise, steps, size))")
        noise, steps, *rest = entry
        size = rest[0] if rest else None
        if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2):
            raise ValueError(f"Invalid generations[{i}] size: {size!r} (must be an integer >= 2)")
        if isinstance(noise, bool) or not isinstance(noise, (int, float, np.number)) \
                or not (0.0 <= float(noise) < math.inf):
            raise ValueError(f"Invalid generations[{i}] noise: {noise!r} (must be a finite number >= 0)")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"Invalid generations[{i}] steps: {steps!r} (must be a positive integer)")
        return (float(noise), int(steps)) if size is None else (float(noise), int(steps), int(size))

    @property
    def done(self) -> bool:
        """True once every generation of the schedule has been told."""
        return self.generation >= len(self.generations)

    @property
    def mean(self) -> dict[str, float]:
        """The current generation mean on the original scale."""
        return {d.name: unrescale(u, d.scale) for d, u in zip(self.space, self._mean_u)}

    @property
    def mean_rescaled(self) -> dict[str, float]:
        """The current generation mean in rescaled space (u)."""
        return {d.name: u for d, u in zip(self.space, self._mean_u)}

    def ask(self) -> list[Individual]:
        """The current generation's trials: individual i at mean + σ·N(0, I) per rescaled coordinate
        (with init "uniform", generation 0's are uniform on the bounds' box instead), trained
        `seeds` times as indices i, i + population, ...

        Individual i is fixed by (tuner seed, name, generation, i, mean, σ), so repeated calls
        return the same list until `tell`.
        """
        if self.done:
            raise RuntimeError(f"all {len(self.generations)} generations are told; nothing left to ask")
        if self._asked is None:
            steps, size = self.generations[self.generation][1], self.size(self.generation)
            sigma = self.sigma
            box = [tuple(rescale(v, d.scale) for v in self.bounds[d.name]) for d in self.space]
            common = self.config.trial_seeds == "common"  # repeat r of every individual trains on index r·size's seed

            def trial_seed(index: int) -> int:
                return individual_seed(self.seed, self.name, self.generation, index // size * size if common else index)

            asked = []
            finalists = self._finalists(size) if self._finals() else None
            size = size if finalists is None else len(finalists)
            for index in range(size):
                seed = individual_seed(self.seed, self.name, self.generation, index)
                rng = np.random.default_rng(seed)
                if finalists is not None:
                    asked.append(Individual(self.generation, index, trial_seed(index), dict(finalists[index]), steps))
                    continue
                if self._uniform():
                    u = [lo + (hi - lo) * float(r) for (lo, hi), r in zip(box, rng.random(len(self.space)))]
                else:
                    z = rng.standard_normal(len(self.space))
                    if self.config.covariance == "rank_mu":
                        z = self._root(+0.5) @ z
                    u = [m + sigma * float(zi) for m, zi in zip(self._mean_u, z)]
                    if self.config.boundary == "clip":
                        u = [min(max(ui, lo), hi) for ui, (lo, hi) in zip(u, box)]
                hparams = {d.name: unrescale(ui, d.scale) for d, ui in zip(self.space, u)}
                asked.append(Individual(self.generation, index, trial_seed(index), hparams, steps))
            for repeat in range(1, self.config.seeds):
                for ind in asked[:size]:
                    index = repeat * size + ind.index
                    asked.append(Individual(self.generation, index, trial_seed(index), dict(ind.hparams), steps))
            self._asked = asked
        return list(self._asked)

    def tell(self, fitness: Mapping[int, float] | Sequence[float]) -> dict[str, float]:
        """Record the fitness (lower is better) of every trial of the current generation.

        An individual's fitness is the mean over its `seeds` trials (+inf if any is not finite).
        Next mean = mean in rescaled space of the better half (population // 2 lowest fitness,
        ties by index) of rescale(x_i), finite fitness only. If no fitness is finite, the mean
        stays, a warning is issued and the generation's history entry has `no_finite: True`.
        With step_size "csa" the step factor is then adapted (module docstring). Returns the new
        mean on the original scale and advances the generation.
        """
        if self.done:
            raise RuntimeError(f"all {len(self.generations)} generations are told; nothing left to tell")
        individuals = self.ask()
        trials = self._trial_fitness(fitness)
        size = len(individuals) // self.config.seeds
        values = [self._averaged([trials[j * size + i] for j in range(self.config.seeds)]) for i in range(size)]
        # The rescaled values that were evaluated: a decay clipped at 0 counts as u = 1, not below.
        rescaled = [[rescale(ind.hparams[d.name], d.scale) for d in self.space] for ind in individuals]
        mean_before, sigma = list(self._mean_u), self.sigma

        ### Sort by fitness: the better half (the finalists': the best); NaN/inf rank last
        selected = self._select(values)
        if not selected:
            warnings.warn(f"GA {self.name or '(unnamed)'} generation {self.generation}: no individual has a "
                          f"finite fitness; keeping the previous mean", RuntimeWarning, stacklevel=2)
        elif self._finals() or self._uniform():
            ### Take the best: the best finalist; a box-wide draw's better half averages near its centre
            self._take_best(rescaled, selected, size)
        else:
            ### Recombination: the next mean
            weights, mu_eff = self._recombine([rescaled[i] for i in selected])
            ### Adapt the step size σ (step_size "csa")
            if self.config.step_size == "csa" and sigma > 0:
                self._adapt(mean_before, sigma, mu_eff)
            ### Adapt the covariance C (covariance "rank_mu")
            if self.config.covariance == "rank_mu" and sigma > 0:
                self._adapt_covariance(mean_before, sigma, [rescaled[i] for i in selected], weights, mu_eff)

        ### Record the generation and advance
        self._record(individuals, trials, values, rescaled, selected, mean_before, sigma)
        return self.mean

    def _trial_fitness(self, fitness: Mapping[int, float] | Sequence[float]) -> list[float]:
        """One fitness per trial index 0..evaluations − 1, checked to be exactly those indices."""
        table = {int(k): v for k, v in fitness.items()} if isinstance(fitness, Mapping) else dict(enumerate(fitness))
        expected = set(range(self.evaluations))
        if set(table) != expected:
            missing, extra = sorted(expected - set(table)), sorted(set(table) - expected)
            raise ValueError(f"Invalid fitness: indices missing {missing}, unexpected {extra} "
                             f"(must give one value per index 0..{self.evaluations - 1})")
        return [float(table[i]) for i in range(self.evaluations)]

    def _select(self, values: list[float]) -> list[int]:
        """The indices of the better half by fitness (the finalists': the best one), best first, ties
        by index; NaN and inf never selected."""
        finite = sorted((v, i) for i, v in enumerate(values) if math.isfinite(v))
        return [i for _, i in finite[: 1 if self._finals() else len(values) // 2]]

    def _take_best(self, rescaled: list[list[float]], selected: list[int], size: int) -> None:
        """The next mean is the best individual; after a uniform generation 0 with init "elite", C
        starts as the spread of its best quarter, but at least n + 1 draws (fewer span less than n
        dimensions)."""
        self._mean_u = list(rescaled[selected[0]])
        if self._uniform() and self.config.init == "elite" and len(self.generations) > 1:
            self._elite_covariance([rescaled[i] for i in selected[: max(len(self.space) + 1, size // 4)]])

    def _recombine(self, chosen: list[list[float]]) -> tuple[list[float] | None, float]:
        """The next mean: the chosen individuals' equal mean (Appendix E, computed as it always was) or
        CMA-ES's weighted one; returns the weights (None: equal) and μ_eff."""
        weights = self._weights(len(chosen))
        if weights is None:
            self._mean_u = [math.fsum(u[k] for u in chosen) / len(chosen) for k in range(len(self.space))]
            return None, len(chosen)
        self._mean_u = [math.fsum(w * u[k] for w, u in zip(weights, chosen)) for k in range(len(self.space))]
        return weights, 1.0 / math.fsum(w * w for w in weights)

    def _record(self, individuals: list[Individual], trials: list[float], values: list[float],
                rescaled: list[list[float]], selected: list[int], mean_before: list[float], sigma: float) -> None:
        """Append the generation's history entry (the paper's GA: its keys only) and advance."""
        size = len(values)
        noise, steps = self.generations[self.generation][:2]
        names = [d.name for d in self.space]
        entry = {
            "generation": self.generation,
            "noise": noise,
            "steps": steps,
            "mean": {d.name: unrescale(u, d.scale) for d, u in zip(self.space, mean_before)},
            "mean_rescaled": dict(zip(names, mean_before)),
            "individuals": [{"index": ind.index, "seed": ind.seed, "hparams": dict(ind.hparams),
                             "rescaled": dict(zip(names, rescaled[ind.index % size])),
                             "fitness": trials[ind.index]}
                            for ind in individuals],
            "selected": selected,
            "no_finite": not selected,
            "next_mean": self.mean,
            "next_mean_rescaled": self.mean_rescaled,
        }
        if not self._paper():
            entry.update(sigma=sigma, next_sigma=None, fitness=values)
        if self._finals():  # the tuned values as trained (the mean above is their rescaled round trip)
            entry["best"] = dict(individuals[selected[0]].hparams) if selected else entry["next_mean"]
        self.history.append(entry)
        self.generation += 1
        self._asked = None
        if "next_sigma" in entry:
            entry["next_sigma"] = self.sigma if not self.done else noise * self._step

    def _weights(self, mu: int) -> list[float] | None:
        """CMA-ES's log weights of the μ selected, best first, summing to 1; None for equal weights."""
        if self.config.recombination == "equal":
            return None
        raw = [math.log(mu + 0.5) - math.log(i) for i in range(1, mu + 1)]
        total = math.fsum(raw)
        return [w / total for w in raw]

    @staticmethod
    def _averaged(trials: list[float]) -> float:
        """An individual's fitness: the mean of its trials, +inf unless all are finite."""
        return math.fsum(trials) / len(trials) if all(math.isfinite(v) for v in trials) else math.inf

    def _adapt(self, mean_before: list[float], sigma: float, mu: float) -> None:
        """CMA-ES's cumulative step-size adaptation (module docstring); `mu` is μ_eff (μ for equal weights)."""
        n = len(self.space)
        c = (mu + 2.0) / (n + mu + 5.0)
        d = 1.0 + 2.0 * max(0.0, math.sqrt((mu - 1.0) / (n + 1.0)) - 1.0) + c
        chi = math.sqrt(n) * (1.0 - 1.0 / (4.0 * n) + 1.0 / (21.0 * n * n))  # E‖N(0, I_n)‖
        gain = math.sqrt(c * (2.0 - c) * mu)
        step = self._root(-0.5) @ ((np.array(self._mean_u) - np.array(mean_before)) / sigma)
        self._path = [(1.0 - c) * p + gain * float(y) for p, y in zip(self._path, step)]
        norm = math.sqrt(math.fsum(p * p for p in self._path))
        self._step *= math.exp(min(1.0, (c / d) * (norm / chi - 1.0)))  # at most ×e per generation, as purecma

    def _elite_covariance(self, elite: list[list[float]]) -> None:
        """init "elite": C ← Cov(best quarter of generation 0) / σ₁², floored at 1e-6·max on the diagonal,
        so generation 1 searches each direction as widely as the good draws spread along it."""
        y = np.array(elite) - np.mean(elite, axis=0)
        cov = y.T @ y / len(y)
        floor = 1e-6 * max(float(np.diag(cov).max()), 1e-300)
        cov = cov + np.eye(len(cov)) * floor
        self._cov = (cov / self.generations[1][0] ** 2).tolist() if self.generations[1][0] > 0 else self._cov

    def _root(self, power: float) -> np.ndarray:
        """C^power (±½) by eigendecomposition; eigenvalues floored at 1e-12·max so C^−½ exists."""
        values, vectors = np.linalg.eigh(np.array(self._cov))
        values = np.maximum(values, 1e-12 * max(float(values.max()), 1e-300))
        return (vectors * values**power) @ vectors.T

    def _adapt_covariance(self, mean_before: list[float], sigma: float, chosen: list[list[float]],
                          weights: list[float] | None, mu: float) -> None:
        """CMA-ES's rank-μ update (module docstring): C ← (1 − c_μ)·C + c_μ·Σ w_i y_i y_iᵀ, `mu` = μ_eff
        (weights None: equal, 1/μ each)."""
        n = len(self.space)
        c_mu = min(1.0, 2.0 * (mu - 2.0 + 1.0 / mu) / ((n + 2.0) ** 2 + mu))
        y = (np.array(chosen) - np.array(mean_before)) / sigma
        spread = (y.T @ y) / mu if weights is None else (y.T * np.array(weights)) @ y
        cov = (1.0 - c_mu) * np.array(self._cov) + c_mu * spread
        self._cov = ((cov + cov.T) / 2).tolist()

    def best(self) -> dict[str, float]:
        """The tuned values: the final generation mean (as in the paper), on the original scale;
        with final "finalists", once told, the best finalist's values exactly as trained.

        Before the last `tell` this is the current mean.
        """
        if self.done and self.config.final == "finalists":
            return dict(self.history[-1]["best"])
        return self.mean

    def to_json(self) -> str:
        """The whole state as standard JSON (no NaN/Infinity tokens); `from_json` restores it exactly."""
        history = [dict(h, individuals=[dict(ind, fitness=_encode(ind["fitness"])) for ind in h["individuals"]],
                        **({"fitness": [_encode(v) for v in h["fitness"]]} if "fitness" in h else {}))
                   for h in self.history]
        state = {
            "format": FORMAT,
            "space": [list(d) for d in self.space],
            "generations": [list(g) for g in self.generations],
            "population": self.population,
            "seed": self.seed,
            "name": self.name,
            "start": self.start,
            "generation": self.generation,
            "mean_rescaled": self._mean_u,
            "history": history,
        }
        if not self._paper():  # the paper's GA: its keys only
            c = self.config
            state.update(init=c.init, bounds={k: list(v) for k, v in self.bounds.items()},
                         step_size=c.step_size, seeds=c.seeds, covariance=c.covariance,
                         trial_seeds=c.trial_seeds, final=c.final, recombination=c.recombination,
                         boundary=c.boundary, step=self._step, path=self._path, cov=self._cov)
        return json.dumps(state, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> "GeneticAlgorithm":
        """Restore a GA written by `to_json`; asking and telling then continue identically."""
        state = json.loads(text)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"Invalid GA state: format {state.get('format') if isinstance(state, dict) else None!r} "
                             f"(must be {FORMAT!r})")
        ga = cls([tuple(d) for d in state["space"]], [tuple(g) for g in state["generations"]],
                 state["population"], seed=state["seed"], name=state["name"], start=state["start"],
                 init=state.get("init", "mean"), bounds=state.get("bounds"),
                 step_size=state.get("step_size", "schedule"), seeds=state.get("seeds", 1),
                 covariance=state.get("covariance", "identity"),
                 trial_seeds=state.get("trial_seeds", "individual"), final=state.get("final", "mean"),
                 recombination=state.get("recombination", "equal"), boundary=state.get("boundary", "free"))
        ga._step, ga._path = float(state.get("step", 1.0)), [float(p) for p in state.get("path", ga._path)]
        ga._cov = [[float(v) for v in row] for row in state.get("cov", ga._cov)]
        if len(state["mean_rescaled"]) != len(ga.space):
            raise ValueError(f"Invalid GA state: mean_rescaled has {len(state['mean_rescaled'])} values "
                             f"(must have {len(ga.space)})")
        ga._mean_u = [float(u) for u in state["mean_rescaled"]]
        ga.generation = int(state["generation"])
        ga.history = [dict(h, individuals=[dict(ind, fitness=_decode(ind["fitness"])) for ind in h["individuals"]],
                           **({"fitness": [_decode(v) for v in h["fitness"]]} if "fitness" in h else {}))
                      for h in state["history"]]
        return ga
