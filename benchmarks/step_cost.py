"""Cost of one LODO training step relative to one Adam training step (issue 2's speed target).

A training step is the whole loop body: sample, zero_grad, loss, backward, optimizer step.
LODO and Adam run side by side in one process on two copies of the same task, interleaved in
rounds; each ratio is the median over rounds of (LODO seconds per step) / (Adam seconds per step).

    python benchmarks/step_cost.py                 # (a) noisy bowl n = 100 float64, (b) image CNN batch 256
    python benchmarks/step_cost.py --threads 1 --skip-cnn

Targets: (a) ≤ 4, (b) ≤ 1.15.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

import tasks
from lodo.lodo import LODO


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def training_step(task, optimizer) -> None:
    batch = task.sample()
    optimizer.zero_grad()
    task.loss(batch).backward()
    optimizer.step()


def seconds_per_step(task, optimizer, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        training_step(task, optimizer)
    return (time.perf_counter() - start) / steps


def compare(name: str, options: dict, steps: int, rounds: int, warmup: int) -> tuple[float, float, float]:
    """Median seconds per step of Adam and LODO, and the median of their per-round ratio."""
    runs = {}
    for label in ("Adam", "LODO"):
        task = tasks.create(name, seed=0, **options)
        params = task.parameters()
        optimizer = torch.optim.Adam(params, lr=1e-3, eps=1e-7) if label == "Adam" else LODO(params, seed=0)
        runs[label] = (task, optimizer)
    for task, optimizer in runs.values():
        seconds_per_step(task, optimizer, warmup)
    times = {"Adam": [], "LODO": []}
    for _ in range(rounds):
        for label, (task, optimizer) in runs.items():
            times[label].append(seconds_per_step(task, optimizer, steps))
    ratios = [lodo / adam for lodo, adam in zip(times["LODO"], times["Adam"])]
    return statistics.median(times["Adam"]), statistics.median(times["LODO"]), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--bowl-steps", type=int, default=500, help="steps per round on the noisy bowl")
    parser.add_argument("--cnn-steps", type=int, default=2, help="steps per round on the image CNN")
    parser.add_argument("--skip-cnn", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU: {cpu_name()}")

    adam, lodo, ratio = compare("noisy_bowl", {}, args.bowl_steps, args.rounds, warmup=200)
    print(f"(a) noisy bowl n=100 float64: Adam {adam * 1e6:.1f} us/step, LODO {lodo * 1e6:.1f} us/step, "
          f"ratio {ratio:.2f} (target <= 4)")

    if not args.skip_cnn:
        adam, lodo, ratio = compare("image_generation", {"synthetic": True, "batch_size": 256},
                                    args.cnn_steps, args.rounds, warmup=2)
        print(f"(b) image CNN batch 256 float32: Adam {1 / adam:.3f} steps/s, LODO {1 / lodo:.3f} steps/s, "
              f"ratio {ratio:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
