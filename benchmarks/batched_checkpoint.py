"""What per-lane checkpoints cost a batched full run: 8 lanes on the noisy bowl (n = 100), side by side.

    python benchmarks/batched_checkpoint.py [--rounds 5]

Each round runs `run_batched_trial` twice back to back in this process, one thread: without
checkpoints and with one per lane at the default cadence (300 s, as `run_job` uses), so both see
the same load (which goes first alternates); the ratio is the median over rounds of (with / without) stepping seconds. A run this
short never reaches 300 s, so that ratio is the per-check bookkeeping; a save's own cost is timed
apart, for the state of a 100k-evaluation run (8 lanes' task and optimizer state, losses and times
of 100k evaluations each), and amortised over the cadence.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from tuner.trial.loop import LANE, fingerprint, run_batched_trial, save_checkpoint
import lodo.batched
import tasks.batched

SEEDS = list(range(8))
STEPS = {"Adam": 20000, "LODO": 3000}
EVERY_S = 300.0  # run_job's default cadence


def stepping_seconds(optimizer: str, checkpoints) -> float:
    results = run_batched_trial("noisy_bowl", optimizer, [{}] * len(SEEDS), STEPS[optimizer], SEEDS,
                                checkpoints=checkpoints, checkpoint_every_s=EVERY_S)
    return max(r.seconds for r in results)


def save_seconds(optimizer: str, folder: str, evaluations: int = 100_000, repeats: int = 3) -> float:
    """Seconds to save all 8 lanes' checkpoints of a run `evaluations` long (the largest a full run writes)."""
    task = tasks.batched.create("noisy_bowl", SEEDS)
    opt = lodo.batched.create(optimizer, task.x, [{}] * len(SEEDS), SEEDS)
    states = [{"fingerprint": fingerprint("noisy_bowl", optimizer, {}, evaluations, s, form=LANE),
               "task": task.lane_state(row), "optimizer": opt.lane_state(row), "recorded": evaluations,
               "losses": torch.rand(evaluations, dtype=torch.float64), "times": torch.rand(evaluations, dtype=torch.float64),
               "elapsed": 1.0, "trajectory": None, "optimizer_steps": evaluations, "sigma": torch.zeros(200, 2)}
              for row, s in enumerate(SEEDS)]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for row, state in enumerate(states):
            save_checkpoint(os.path.join(folder, f"seed-{row}.ckpt"), state)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        for optimizer in STEPS:
            ratios = []
            for r in range(args.rounds):
                paths = [os.path.join(folder, f"{optimizer}-{r}-{i}.ckpt") for i in range(len(SEEDS))]
                if r % 2:  # alternate which goes first, so that neither is always the one after a warm-up
                    saving, plain = stepping_seconds(optimizer, paths), stepping_seconds(optimizer, None)
                else:
                    plain, saving = stepping_seconds(optimizer, None), stepping_seconds(optimizer, paths)
                ratios.append(saving / plain)
            save = save_seconds(optimizer, folder)
            print(f"{optimizer}: 8 lanes x {STEPS[optimizer]} steps, with/without checkpoints (300 s cadence) "
                  f"= {statistics.median(ratios):.3f} (rounds: {', '.join(f'{x:.3f}' for x in ratios)}); "
                  f"one save of 8 lanes at 100k evaluations {save * 1e3:.0f} ms = {100 * save / EVERY_S:.3f} % of {EVERY_S:.0f} s")


if __name__ == "__main__":
    main()
