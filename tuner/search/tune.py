"""The Appendix-E GA as a Ray Tune `Searcher`, so it can tune any Tune trainable.

    searcher = GASearcher([("lr", 1e-3, "log")], [(3, 1000)] * 10, population=32,
                          metric="loss", mode="min")
    tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=320)).fit()

Like Tune's Optuna adapter, this is a thin wrapper: `suggest` hands out the current generation's
individuals one per trial (config = the hyperparameters plus ``ga_steps`` and ``ga_seed``, the
individual's training length and seed), returns None while a generation is still running, and
`Searcher.FINISHED` after the last one. `on_trial_complete` records the metric (negated for
mode "max"); an errored trial or a missing/non-finite metric ranks last (+inf), and errored trials
are counted apart (`errors`), never as a metric. `GASearcher.from_schedule` takes the space,
generations, population and objective (metric and mode) from a lodo-tune schedule, so Tune selects
on what `lodo-tune` would.
"""
from __future__ import annotations

import math
import pickle

from ray.tune.search import Searcher

from tuner.search.ga import GeneticAlgorithm


class GASearcher(Searcher):
    """`GeneticAlgorithm(space, generations, population, seed)` driven by Tune."""

    def __init__(self, space, generations, population: int, metric: str | None = None,
                 mode: str | None = None, seed: int = 0, name: str = ""):
        if mode not in (None, "min", "max"):
            raise ValueError(f"Invalid mode: {mode!r} (must be 'min' or 'max')")
        super().__init__(metric=metric, mode=mode)
        self.ga = GeneticAlgorithm(space, generations, population, seed=seed, name=name)
        self._assigned: dict[str, int] = {}   # trial_id -> index in the current generation
        self._next = 0
        self._fitness: dict[int, float] = {}
        self.errors = 0                       # trials Tune reported as errored (ranked last, not a metric)

    @classmethod
    def from_schedule(cls, schedule, optimizer: str, seed: int = 0) -> "GASearcher":
        """The GA of `schedule` (a `tuner.driver.schedule.Schedule`) for `optimizer`, selecting on its
        `objective`: metric "train_loss" (report the trial's final training loss under that name) or
        the objective's metric, with its mode."""
        from tuner.driver.schedule import space_for

        objective = schedule.objective
        return cls(space_for(schedule, optimizer), list(schedule.generations), schedule.population,
                   metric=objective.metric, mode=objective.mode, seed=seed, name=optimizer)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        if self._metric is None and metric:
            self._metric = metric
        if self._mode is None and mode:
            self._mode = mode
        return True

    def suggest(self, trial_id: str):
        if self.ga.done:
            return Searcher.FINISHED
        individuals = self.ga.ask()
        if self._next >= len(individuals):
            return None  # wait for this generation to finish
        ind = individuals[self._next]
        self._assigned[trial_id] = ind.index
        self._next += 1
        return {**ind.hparams, "ga_steps": ind.steps, "ga_seed": ind.seed}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        index = self._assigned.pop(trial_id, None)
        if index is None:
            return
        self.errors += bool(error)
        value = None if (error or not result) else result.get(self._metric)
        fitness = math.inf if value is None or not math.isfinite(float(value)) else float(value)
        if self._mode == "max" and math.isfinite(fitness):
            fitness = -fitness
        self._fitness[index] = fitness
        if len(self._fitness) == self.ga.evaluations:
            self.ga.tell(self._fitness)
            self._fitness, self._next = {}, 0

    @property
    def mean(self) -> dict[str, float]:
        """The current generation mean (the tuned values once the GA is done)."""
        return self.ga.mean

    def save(self, checkpoint_path: str) -> None:
        state = {"ga": self.ga.to_json(), "assigned": self._assigned, "next": self._next,
                 "fitness": self._fitness, "metric": self._metric, "mode": self._mode}
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.ga = GeneticAlgorithm.from_json(state["ga"])
        self._assigned, self._next, self._fitness = state["assigned"], state["next"], state["fitness"]
        self._metric, self._mode = state["metric"], state["mode"]
