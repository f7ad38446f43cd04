"""The trial loop against an earlier version of itself, side by side in one process.

Loads `tuner/trial/loop.py` as it was at git revision `--before` next to today's, runs the same
trials with both in alternating order for `--rounds` rounds on one thread, and prints, per case,
the median ratio of seconds (now / before; < 1 is faster) and whether every loss is bit-identical.
Cases: `run_trial` (one lane) and `run_batched_trial` (P lanes) on the noisy bowl.

    python benchmarks/loop_versions.py --before HEAD~1
    python benchmarks/loop_versions.py --before HEAD~1 --steps 3000 --lanes 32 --rounds 7
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import tuner.trial.loop as now

ROOT = Path(__file__).resolve().parents[1]
HPARAMS = {"Adam": dict(lr=1.738, beta1=0.5934, beta2=0.9988), "LODO": dict(lr=0.1356, meta_lr=0.000847, beta=0.2361)}


def load_version(rev: str):
    """tuner/trial/loop.py at `rev`, imported as a module of its own."""
    source = subprocess.run(["git", "show", f"{rev}:tuner/trial/loop.py"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "loop_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("loop_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["loop_before"] = module
    spec.loader.exec_module(module)
    return module


def cases(steps: int, lanes: int):
    for opt, h in HPARAMS.items():
        yield f"run_trial {opt}", lambda m, o=opt, h=h: [m.run_trial("noisy_bowl", o, h, steps, 0).losses]
        yield f"batched {opt} P={lanes}", lambda m, o=opt, h=h: [
            r.losses for r in m.run_batched_trial("noisy_bowl", o, [h] * lanes, steps, list(range(lanes)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default="HEAD~1")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lanes", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    before = load_version(args.before)
    print(f"now / before ({args.before}), median of {args.rounds} rounds, {args.steps} steps, one thread")
    for name, run in cases(args.steps, args.lanes):
        ratios, same = [], True
        for r in range(args.rounds):
            timed = {}
            for label, module in ((("now", now), ("before", before)) if r % 2 else (("before", before), ("now", now))):
                t0 = time.perf_counter()
                timed[label] = (run(module), time.perf_counter() - t0)
            same &= all(np.array_equal(a, b) for a, b in zip(timed["now"][0], timed["before"][0]))
            ratios.append(timed["now"][1] / timed["before"][1])
        print(f"{name:24s} {statistics.median(ratios):.3f}   losses bit-identical: {same}")


if __name__ == "__main__":
    main()
