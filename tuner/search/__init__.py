"""Searching: the Appendix-E GA and Optuna's samplers behind one ask/tell interface (`Searcher`),
and the GA as a Ray Tune searcher (`tune.GASearcher`).

`SEARCHERS` is the one list of searcher names, with how reports spell them.
"""
from __future__ import annotations

from typing import Mapping, Protocol, Sequence

#: every searcher a schedule's `search.searcher` may name → how tables and reports spell it
SEARCHERS = {"ga": "GA", "random": "random search", "tpe": "TPE", "cmaes": "CMA-ES"}


class Searcher(Protocol):
    """What a session asks of a searcher (pycma's ask/tell). `ask()` gives the current
    generation's individuals (`ga.Individual`: index, values, trial seed); `tell(fitness)` takes
    their losses once all are in (lower is better; index → loss) and returns the new mean;
    `sizes` is the number of trials per generation, `done` is true after the last one, `mean` the
    current centre and `best()` the tuned values. A searcher is deterministic given its seed, so a
    session resumes it by replaying the recorded fitness. `ga.GeneticAlgorithm` and
    `optuna.SamplerSearch` implement it."""

    @property
    def sizes(self) -> list[int]: ...

    @property
    def done(self) -> bool: ...

    @property
    def mean(self) -> dict[str, float]: ...

    def ask(self) -> Sequence: ...

    def tell(self, fitness: Mapping[int, float] | Sequence[float]) -> dict[str, float]: ...

    def best(self) -> dict[str, float]: ...
