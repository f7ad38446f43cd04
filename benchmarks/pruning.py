"""Pruning hopeless GA trials (issue 38): individual-steps and full-run loss with and without the
schedule's `prune:`, side by side in one process, over a few GA seeds.

    .venv/bin/python benchmarks/pruning.py [--seeds 0 1 2] [--at 0.25 0.5] [--quantile 0.5]

noisy_bowl: a shortened Table-5 schedule (population 16, 500–2000 steps, full runs of 10,000 steps,
2 seeds) for Adam and Momentum; digits: examples/digits/schedule.yaml as shipped, for Adam and AdamW;
digits-small (`--tasks digits-small`): Adam, population 8, 50/50/100 steps, one 300-step full run.
Sessions are driven in this process (no Ray), so the numbers are the records' own.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import lodo  # noqa: E402
from tuner.driver.rundir import RunDir  # noqa: E402
from tuner.driver.schedule import Schedule, load_schedule  # noqa: E402
from tuner.driver.session import Session  # noqa: E402
from tuner.trial.loop import run_job  # noqa: E402

BOWL = {"task": "noisy_bowl", "population": 16,
        "generations": [{"noise": 3, "steps": 500}, {"noise": 3, "steps": 500}, {"noise": 2, "steps": 1000},
                        {"noise": 1.4, "steps": 1000}, {"noise": 0.9, "steps": 2000}],
        "optimizers": ["Adam", "Momentum"], "full_run": {"steps": 10000, "seeds": 2, "time_milestone_s": None},
        "lr_scale": 1}
DIGITS = "examples/digits/digits.py:digits"
NAMES = ["noisy_bowl", "digits"]  # digits-small is digits with a smaller schedule


def run(task, schedule: Schedule, seed: int, folder: Path) -> dict:
    """One session to the end; {optimizer: (individual-steps, mean full-run loss, trials pruned)}."""
    rd = RunDir.create(folder, task=task if isinstance(task, str) else "digits", schedule=schedule.to_dict(),
                       seed=seed, optimizers=list(schedule.optimizers))
    session = Session(rd, schedule, seed, full_runs=True, task=task)
    session.workers, session.batch = 1, True
    queue = session.start(list(schedule.optimizers))
    while queue:
        job = queue.pop(0)
        queue += session.on_result(job, run_job(job))
    out = {}
    for o in schedule.optimizers:
        records = [rd.read_individual(o, g, i) for g in range(len(schedule.generations))
                   for i in range(schedule.size(schedule.generations[g]))]
        steps = sum(r.get("evaluations", r["steps"]) for r in records)
        full = [r["final_loss"] for r in rd.full_runs(o)]
        out[o] = (steps, math.fsum(full) / len(full), sum("pruned" in r for r in records))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--at", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    parser.add_argument("--quantile", type=float, default=1.0)
    parser.add_argument("--tasks", nargs="+", default=["noisy_bowl", "digits"])
    args = parser.parse_args()
    prune = {"at": args.at, "quantile": args.quantile}
    digits = load_schedule(ROOT / "examples/digits/schedule.yaml", task_names=NAMES)
    for spec in digits.optimizer_specs.values():
        lodo.register(spec)
    digits_data = {**digits.to_dict(), "optimizers": ["Adam", digits.optimizer_specs["AdamW"].to_dict()]}
    small = {**digits_data, "optimizers": ["Adam"], "full_run": {"steps": 300, "seeds": 1, "time_milestone_s": None},
             "generations": [{"noise": 3, "steps": 50}, {"noise": 2, "steps": 50}, {"noise": 1, "steps": 100}]}
    cases = {"noisy_bowl": ("noisy_bowl", BOWL), "digits": (DIGITS, digits_data), "digits-small": (DIGITS, small)}
    print(f"prune: {prune}")
    print("| task | optimizer | GA seed | individual-steps without | with | fewer | pruned trials | "
          "full-run loss without | with | with / without |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    totals: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tasks:
            task, data = cases[name]
            for seed in args.seeds:
                plain = run(task, Schedule.from_dict(data, task_names=NAMES), seed, Path(tmp) / f"{name}-{seed}-plain")
                pruned = run(task, Schedule.from_dict({**data, "prune": prune}, task_names=NAMES), seed, Path(tmp) / f"{name}-{seed}-prune")
                for o in plain:
                    (s0, l0, _), (s1, l1, n) = plain[o], pruned[o]
                    totals.setdefault(name, []).append((s0, s1, l1 / l0))
                    print(f"| {name} | {o} | {seed} | {s0} | {s1} | {1 - s1 / s0:.1%} | {n} | {l0:.6g} | {l1:.6g} | "
                          f"{l1 / l0:.4f} |", flush=True)
    for name, rows in totals.items():
        s0, s1 = sum(r[0] for r in rows), sum(r[1] for r in rows)
        ratios = [r[2] for r in rows]
        print(f"{name}: {1 - s1 / s0:.1%} fewer individual-steps; full-run loss with / without: mean "
              f"{math.fsum(ratios) / len(ratios):.4f}, range {min(ratios):.4f}-{max(ratios):.4f}")


if __name__ == "__main__":
    main()
