"""Selection that cannot tell: is a generation's spread of fitness more than the noise of one trial?

After a generation is told, its best individual is trained once more on another seed (one extra trial,
`tuning/<optimizer>/noise-gGG.json`; the GA's state and every individual's seed stay as they were, so
the tuned values do not change). Then

    spread = median fitness − best fitness     how far the best stands out from the typical individual
    noise  = |re-run − best fitness|           how far the best moves on another seed

and the generation is *indistinguishable* when spread ≤ RATIO · noise: on another seed the best
loses at least half its lead over the median, so it is as much the luckiest draw as the best values,
and selection follows the noise. (One re-run is one sample of the noise: on a generation of pure
noise the rule fires about two times in three; on a noise-free task it never does.) The run log (`selection_noise`) and
report.md say so for that optimizer and generation. What helps: longer trials (the loss has not yet
separated the values), more seeds per individual (`ga: seeds: k`), or a `horizon` for a
hyperparameter whose best value depends on the run's length. The schedule's `noise_check: false`
turns the extra trial off.
"""
from __future__ import annotations

import math
from pathlib import Path

from tuner.search.ga import individual_seed
from tuner.driver.rundir import RunDir, atomic_write_json, read_record, record_digest, safe_name

RATIO = 2.0
HELP = ("longer trials (more steps in this generation's row), more seeds per individual (ga: seeds: k), "
        "or a horizon for a hyperparameter whose best value depends on the run's length")


def path(rd: RunDir, optimizer: str, generation: int) -> Path:
    return rd.path / "tuning" / safe_name(optimizer) / f"noise-g{generation:02d}.json"


def read(rd: RunDir, optimizer: str, generation: int) -> dict | None:
    p = path(rd, optimizer, generation)
    return read_record(p, ("generation", "index", "seed", "fitness")) if p.is_file() else None


def write(rd: RunDir, optimizer: str, record: dict) -> None:
    atomic_write_json(path(rd, optimizer, record["generation"]), {**record, "sha256": record_digest(record)})


def records(rd: RunDir, optimizer: str) -> list[dict]:
    """Every noise check of `optimizer`, by generation."""
    d = rd.path / "tuning" / safe_name(optimizer)
    found = [read_record(p) for p in sorted(d.glob("noise-g*.json"))] if d.is_dir() else []
    return sorted(found, key=lambda r: r["generation"])


def seed(tuner_seed: int, optimizer: str, generation: int) -> int:
    """The re-run's trial seed: a stream of its own, never an individual's."""
    return individual_seed(tuner_seed, f"noise check:{optimizer}", generation, 0)


def best(individuals: list[dict]) -> dict | None:
    """The generation's best trial (lowest finite fitness, ties by index); None when none is finite
    or fewer than two are (nothing to tell apart)."""
    finite = [i for i in individuals if math.isfinite(i["fitness"])]
    return min(finite, key=lambda i: (i["fitness"], i["index"])) if len(finite) >= 2 else None


def verdict(fitness: list[float], best_fitness: float, rerun: float) -> dict:
    """{"spread", "noise", "indistinguishable"} of a generation (its trials' `fitness`) whose best
    (`best_fitness`) scored `rerun` on another seed; indistinguishable None when the re-run is not finite."""
    finite = sorted(v for v in fitness if math.isfinite(v))
    n = len(finite)
    median = finite[n // 2] if n % 2 else 0.5 * (finite[n // 2 - 1] + finite[n // 2])
    spread = median - best_fitness
    if not math.isfinite(rerun):
        return {"spread": spread, "noise": None, "indistinguishable": None}
    noise = abs(rerun - best_fitness)
    return {"spread": spread, "noise": noise, "indistinguishable": spread <= RATIO * noise}
