"""Cost of one LODO training step relative to one Adam training step.

A training step is the whole loop body: sample, zero_grad, loss, backward, optimizer step.
LODO and Adam run side by side in one process on two copies of the same task, interleaved in
rounds; each ratio is the median over rounds of (LODO seconds per step) / (Adam seconds per step).

    python benchmarks/step_cost.py                 # (a) noisy bowl n = 100 float64, (b) image CNN batch 256
    python benchmarks/step_cost.py --threads 1 --skip-cnn
    python benchmarks/step_cost.py --threads 1 --skip-cnn --baseline /tmp/lodo_old.py   # and an older lodo.py

Targets: (a) ≤ 4, (b) ≤ 1.15.
"""
from __future__ import annotations

import argparse
import importlib.util
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


def load_lodo(path: str) -> type:
    """The LODO class of another copy of lodo.py (e.g. `git show HEAD:lodo/lodo.py > old.py`)."""
    spec = importlib.util.spec_from_file_location("baseline_lodo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LODO


def compare(name: str, options: dict, steps: int, rounds: int, warmup: int,
            lodo_classes: dict | None = None) -> dict[str, tuple[float, float]]:
    """For each LODO class (default {"LODO": LODO}): median seconds per step, and the median over
    rounds of its per-round ratio to Adam; "Adam" maps to (median seconds per step, 1.0)."""
    factories = {"Adam": lambda params: torch.optim.Adam(params, lr=1e-3, eps=1e-7)}
    for label, cls in (lodo_classes or {"LODO": LODO}).items():
        factories[label] = lambda params, cls=cls: cls(params, seed=0)
    runs = {}
    for label, factory in factories.items():
        task = tasks.create(name, seed=0, **options)
        runs[label] = (task, factory(task.parameters()))
    for task, optimizer in runs.values():
        seconds_per_step(task, optimizer, warmup)
    times = {label: [] for label in runs}
    for _ in range(rounds):
        for label, (task, optimizer) in runs.items():
            times[label].append(seconds_per_step(task, optimizer, steps))
    return {label: (statistics.median(t), statistics.median(a / b for a, b in zip(t, times["Adam"])))
            for label, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--bowl-steps", type=int, default=500, help="steps per round on the noisy bowl")
    parser.add_argument("--cnn-steps", type=int, default=2, help="steps per round on the image CNN")
    parser.add_argument("--skip-cnn", action="store_true")
    parser.add_argument("--baseline", metavar="LODO_PY",
                        help="also time the LODO class of this copy of lodo.py, interleaved (noisy bowl)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU: {cpu_name()}")

    classes = {"LODO": LODO}
    if args.baseline:
        classes["baseline"] = load_lodo(args.baseline)
    result = compare("noisy_bowl", {}, args.bowl_steps, args.rounds, warmup=200, lodo_classes=classes)
    adam = result["Adam"][0]
    for label in classes:
        lodo, ratio = result[label]
        print(f"(a) noisy bowl n=100 float64: Adam {adam * 1e6:.1f} us/step, {label} {lodo * 1e6:.1f} us/step, "
              f"ratio {ratio:.2f} (target <= 4)")

    if not args.skip_cnn:
        result = compare("image_generation", {"synthetic": True, "batch_size": 256}, args.cnn_steps, args.rounds,
                         warmup=2)
        (adam, _), (lodo, ratio) = result["Adam"], result["LODO"]
        print(f"(b) image CNN batch 256 float32: Adam {1 / adam:.3f} steps/s, LODO {1 / lodo:.3f} steps/s, "
              f"ratio {ratio:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
