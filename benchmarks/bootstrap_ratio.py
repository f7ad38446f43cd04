"""How sure a ratio of two searchers' mean losses is: a percentile bootstrap over searcher seeds.

    python benchmarks/improved_ga.py --schedule rosenbrock-improved --optimizers Momentum --ga-seeds $(seq -s' ' 0 39) --out ga.jsonl
    python benchmarks/bootstrap_ratio.py ga.jsonl runs/tq_rb40/cmaes --optimizers Momentum

A GA side is the JSON lines `improved_ga.py --out` writes (optimizer, seed, final); the other side
a searcher's folder of `tuning_quality.py` cells (<optimizer>/seed-<k>/cell.json, full_loss).
Each resample draws every side's seeds with replacement; the ratio of the two means is reported
with its 5–95 % interval. On Rosenbrock one seed in twenty can decide a mean, so a ratio whose
interval holds 1 is not a difference.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np


def ga_losses(path: Path, optimizer: str) -> dict[int, float]:
    rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {int(r["seed"]): float(r["final"]) for r in rows if r["optimizer"] == optimizer}


def cell_losses(folder: Path, optimizer: str) -> dict[int, float]:
    out = {}
    for cell in sorted((folder / optimizer).glob("seed-*/cell.json")):
        loss = json.loads(cell.read_text()).get("full_loss")
        if loss is not None:
            out[int(cell.parent.name.split("-")[1])] = float(loss)
    return out


def interval(a: np.ndarray, b: np.ndarray, resamples: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """mean(a)/mean(b) and its 5–95 % percentile-bootstrap interval."""
    rng = np.random.default_rng(seed)
    ratios = [a[rng.integers(0, len(a), len(a))].mean() / b[rng.integers(0, len(b), len(b))].mean()
              for _ in range(resamples)]
    low, high = np.percentile(ratios, [5, 95])
    return float(a.mean() / b.mean()), float(low), float(high)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ga", type=Path, help="improved_ga.py --out JSON lines")
    p.add_argument("cells", type=Path, help="a tuning_quality.py searcher folder, e.g. runs/tq_rb40/tpe")
    p.add_argument("--optimizers", nargs="+", required=True)
    args = p.parse_args(argv)
    for optimizer in args.optimizers:
        ga, other = ga_losses(args.ga, optimizer), cell_losses(args.cells, optimizer)
        a = np.array([v for v in ga.values() if math.isfinite(v)])
        b = np.array([v for v in other.values() if math.isfinite(v)])
        if not len(a) or not len(b):
            p.error(f"no finite losses for {optimizer} in {args.ga if not len(a) else args.cells}")  # exit 2
        ratio, low, high = interval(a, b)
        print(f"{optimizer}: GA / {args.cells.name} mean loss {ratio:.2f} (5–95 %: {low:.2f}–{high:.2f}; "
              f"seeds {len(a)} / {len(b)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
