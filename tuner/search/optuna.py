"""Other searchers than the GA: random search, TPE and CMA-ES, Optuna's samplers behind the GA's
ask/tell interface, so the session, run directory, resume, batching and reports treat them alike.

    budget     = Σ_g population_g · seeds · steps_g  the GA schedule's individual-steps (Schedule.individual_steps)
    trials     = max(MIN_TRIALS, budget // steps)    steps: `trial_steps`, the GA's trial length (noisy_bowl: 800,000 / 8,000 = 100);
                 both settable: `search: {trials: N, steps: S}` (`budget` says what a run gets, at its start)
    rounds     = trials in rounds of R (default: the population for random search, 8 for TPE and
                 CMA-ES, which learn only between rounds; the last one may be smaller),
                 asked together, evaluated in parallel, told together
    trial i of round r:  hyperparameters from the sampler (`tuner.search.space`'s bounded space: log-uniform
                 per log-scaled value, 1 − log-uniform per decay), trial seed individual_seed(seed, name, r, i)
    fitness    = the schedule's objective (as the GA's: by default the mean training loss over the last
                 10 % of the steps; a maximised metric negated); NaN/inf is told as WORST, a finite
                 value worse than any loss, so every sampler keeps its bookkeeping
    tuned      = the best trial's hyperparameters

The samplers are Optuna's (`RandomSampler`, `TPESampler`, `CmaEsSampler(popsize=R)`: a round is a
CMA-ES generation), seeded from (tuner seed, optimizer, searcher), driven through `study.ask` / `study.tell`
on an in-memory study. Optuna and cmaes are the optional extra `lodo-tune[search]`; nothing here
imports them until a searcher is built. Replaying the recorded rounds (ask R, tell the recorded
fitness) rebuilds the sampler exactly, which is how a resumed run continues bit-identically.
"""
from __future__ import annotations

import importlib
import logging
import math
import warnings
from collections import namedtuple
from typing import Mapping, Sequence

from tuner.search import SEARCHERS
from tuner.search.ga import Individual, individual_seed
from tuner.driver.schedule import Schedule
from tuner.search.space import Bounded, log_interval, value

SAMPLERS = tuple(s for s in SEARCHERS if s != "ga")   # the searchers backed by Optuna
INSTALL = 'pip install "lodo-tune[search]"  (or: pip install optuna cmaes)'
WORST = 1e300                            # what a NaN/inf trial is told: worse than any loss, still finite
logger = logging.getLogger(__name__)

Round = namedtuple("Round", "size steps")
"""One round of trials: how many are asked together and how many steps each trains."""


class SearcherUnavailable(ImportError):
    """The optional extra a searcher needs is not installed; str(error) says how to install it."""


def require(searcher: str):
    """The `optuna` module for `searcher` (CMA-ES also needs `cmaes`); SearcherUnavailable otherwise."""
    needed = ("optuna", "cmaes") if searcher == "cmaes" else ("optuna",)
    modules = []
    for name in needed:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            raise SearcherUnavailable(f"searcher {searcher!r} needs {name}, which is not installed: {INSTALL}") from None
    return modules[0]


def trial_steps(schedule: Schedule) -> int:
    """The GA's trial length a searcher's trials default to: the last generation's, or with
    `ga: final: finalists` the second-to-last's (the finalists retrain; they do not search)."""
    rows = schedule.generations
    return rows[-2].steps if schedule.ga.get("final") == "finalists" else rows[-1].steps


MODEL_ROUND = 8
"""TPE's and CMA-ES's default round: a sampler learns only between rounds, so 100 trials in rounds
of 32 give it 3 updates (the first round is its random start); rounds of 8 give it 12 and still
fill a batched trial per worker on a small machine (benchmarks/RESULTS.md, tuning quality)."""


MIN_TRIALS = 20
"""The fewest trials a searcher gets by default: a small schedule's budget // steps can be a handful
(9 trials of TPE are 8 random draws and one suggestion); every bundled schedule's is above it
(noisy_bowl 100, rosenbrock 320, resnet18_cifar10 44), so their searchers' trials are unchanged."""


def rounds(schedule: Schedule) -> tuple[Round, ...]:
    """The rounds a non-GA searcher runs: `search.trials` trials (default max(MIN_TRIALS, budget //
    steps), whole trials) of `search.steps` steps (default: `trial_steps`), R = `search.round` at a
    time (default: the population for random search, MODEL_ROUND for TPE and CMA-ES)."""
    s = schedule.search
    steps = s.steps or trial_steps(schedule)
    trials = s.trials or max(MIN_TRIALS, schedule.individual_steps() // steps)  # the GA's budget: Σ_g P_g · seeds · steps_g
    size = min(s.round or (MODEL_ROUND if s.searcher in ("tpe", "cmaes") else schedule.population), trials)
    full, rest = divmod(trials, size)
    return tuple(Round(size, steps) for _ in range(full)) + ((Round(rest, steps),) if rest else ())


def budget(schedule: Schedule) -> str:
    """What a non-GA searcher gets, in words (printed at a run's start): "tpe: 100 trials of 8000 steps
    in rounds of 8 (default: the GA's 800000 individual-steps // 8000; set search.trials, search.steps)"."""
    s, plan = schedule.search, rounds(schedule)
    trials, steps = sum(r.size for r in plan), plan[0].steps
    ga = schedule.individual_steps()
    why = []
    if s.trials is None:
        derived = ga // steps
        why.append(f"the GA's {ga} individual-steps // {steps} = {derived}" if derived >= MIN_TRIALS
                   else f"at least {MIN_TRIALS} (the GA's {ga} individual-steps // {steps} = {derived})")
    if s.steps is None:
        why.append("steps: the GA's trial length")
    text = f"{s.searcher}: {trials} trials of {steps} steps in rounds of {plan[0].size} per optimizer"
    return text + (f" (default: {'; '.join(why)}; set search.trials and search.steps)" if why else " (the schedule's)")


def sampler_seed(seed: int, name: str, searcher: str) -> int:
    """The sampler's seed, fixed by (tuner seed, optimizer, searcher): another stream than the trial
    seeds, and not shared between searchers (TPE's and CMA-ES's random start would be random search's)."""
    return individual_seed(seed, f"{searcher} sampler:{name}", 0, 0)


def _param(dim: Bounded) -> str:
    """The Optuna parameter of a dimension: its name ("log"), or "1-name" for y = 1 − x ("decay")."""
    return dim.name if dim.scale == "log" else f"1-{dim.name}"


class SamplerSearch:
    """Random search, TPE or CMA-ES over a bounded space, with `tuner.search.ga.GeneticAlgorithm`'s interface:

    >>> search = SamplerSearch("tpe", space, [Round(32, 8000)] * 3 + [Round(4, 8000)], seed=0, name="Adam")
    >>> while not search.done:
    ...     trials = search.ask()
    ...     search.tell({t.index: evaluate(t) for t in trials})
    >>> search.best()

    `generation` counts the rounds told, `generations` are the rounds, `population` is R,
    `history` one entry per round (its trials, the best so far), `mean` the best trial so far
    (the defaults before any), as state.json and the run log record it.
    """

    def __init__(self, searcher: str, space: Sequence[Bounded], rounds: Sequence[Round], seed: int = 0,
                 name: str = ""):
        if searcher not in SAMPLERS:
            raise ValueError(f"Invalid searcher: {searcher!r} (must be one of {', '.join(SAMPLERS)})")
        if not space:
            raise ValueError("Invalid space: [] (must name at least one hyperparameter)")
        if not rounds or any(r.size < 1 or r.steps < 1 for r in rounds):
            raise ValueError(f"Invalid rounds: {list(rounds)!r} (must be non-empty, sizes and steps >= 1)")
        optuna = require(searcher)
        self.searcher, self.space, self.seed, self.name = searcher, tuple(space), int(seed), name
        self.generations = tuple(Round(int(r.size), int(r.steps)) for r in rounds)
        self.population = self.generations[0].size
        self.generation = 0
        self.history: list[dict] = []
        self._best: tuple[float, int, int, dict] | None = None   # (fitness, round, index, hparams)
        self._asked: list[Individual] | None = None
        self._trials: list = []
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "Trial N finished" line per trial
        self._distributions = {_param(d): optuna.distributions.FloatDistribution(*log_interval(d), log=True)
                               for d in self.space}
        if searcher == "cmaes" and len(self.space) == 1:
            logger.warning("%s: CMA-ES needs two or more hyperparameters; Optuna samples this one at random",
                           name or "(unnamed)")
        self.study = optuna.create_study(sampler=self._sampler(optuna), direction="minimize")

    def _sampler(self, optuna):
        seed = sampler_seed(self.seed, self.name, self.searcher)
        with warnings.catch_warnings():  # multivariate/constant_liar are "experimental" in Optuna 4
            warnings.simplefilter("ignore")
            if self.searcher == "random":
                return optuna.samplers.RandomSampler(seed=seed)
            if self.searcher == "tpe":  # constant liar: a round's trials are asked before any is told
                return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
            return optuna.samplers.CmaEsSampler(seed=seed, popsize=self.population)

    @property
    def sizes(self) -> list[int]:
        """Trials per round (as `GeneticAlgorithm.sizes`: trials per generation)."""
        return [r.size for r in self.generations]

    @property
    def done(self) -> bool:
        return self.generation >= len(self.generations)

    @property
    def mean(self) -> dict[str, float]:
        """The current tuned value: the best trial so far (the defaults before any finite one)."""
        return dict(self._best[3]) if self._best else {d.name: d.default for d in self.space}

    def ask(self) -> list[Individual]:
        """The current round's trials; repeated calls return the same list until `tell`."""
        if self.done:
            raise RuntimeError(f"all {len(self.generations)} rounds are told; nothing left to ask")
        if self._asked is None:
            size, steps = self.generations[self.generation]
            self._trials = [self.study.ask(self._distributions) for _ in range(size)]
            self._asked = [Individual(self.generation, i, individual_seed(self.seed, self.name, self.generation, i),
                                      {d.name: value(d, t.params[_param(d)]) for d in self.space}, steps)
                           for i, t in enumerate(self._trials)]
        return list(self._asked)

    def tell(self, fitness: Mapping[int, float] | Sequence[float]) -> dict[str, float]:
        """Record every trial's fitness of the current round (lower is better), in index order;
        NaN/inf are told as WORST. Returns the best trial so far and advances the round."""
        if self.done:
            raise RuntimeError(f"all {len(self.generations)} rounds are told; nothing left to tell")
        asked = self.ask()
        table = {int(k): v for k, v in fitness.items()} if isinstance(fitness, Mapping) else dict(enumerate(fitness))
        expected = set(range(len(asked)))
        if set(table) != expected:
            missing, extra = sorted(expected - set(table)), sorted(set(table) - expected)
            raise ValueError(f"Invalid fitness: indices missing {missing}, unexpected {extra} "
                             f"(must give one value per index 0..{len(asked) - 1})")
        values = [float(table[i]) for i in range(len(asked))]
        for trial, v in zip(self._trials, values):
            self.study.tell(trial, v if math.isfinite(v) else WORST)
        for ind, v in zip(asked, values):
            if math.isfinite(v) and (self._best is None or (v, ind.generation, ind.index) < self._best[:3]):
                self._best = (v, ind.generation, ind.index, dict(ind.hparams))
        self.history.append({
            "generation": self.generation, "searcher": self.searcher, "steps": asked[0].steps,
            "individuals": [{"index": ind.index, "seed": ind.seed, "hparams": dict(ind.hparams), "fitness": v}
                            for ind, v in zip(asked, values)],
            "best": self.mean, "best_fitness": self._best[0] if self._best else math.inf,
        })
        self.generation += 1
        self._asked, self._trials = None, []
        return self.mean

    def best(self) -> dict[str, float]:
        """The tuned values: the best trial's hyperparameters (lowest fitness, ties by round and index)."""
        if self._best is None and self.done:
            warnings.warn(f"{self.searcher} {self.name or '(unnamed)'}: no trial has a finite fitness; "
                          "keeping the defaults", RuntimeWarning, stacklevel=2)
        return self.mean
