"""What `run_trial` costs on top of a hand-written loop: Adam on the noisy bowl, side by side.

    python benchmarks/trial_overhead.py [--steps 5000] [--repeats 7]

Both loops run the same task and optimizer (torch Adam, eps 1e-7, docs/paper.md §2) in this process,
interleaved, single-threaded. Each repeat times one plain run and one trial run back to back, so
both see the same machine load; the overhead is the median over repeats of (trial − plain) / plain
per step. The target is ≤ 20 % of an Adam step.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from tasks.noisy_bowl import NoisyBowl
from tuner.trial.loop import run_trial

HPARAMS = {"lr": 1.164, "betas": (0.465, 0.9884), "eps": 1e-7}  # Table 6's tuned Adam, noisy bowl


def plain_loop(steps: int, seed: int) -> float:
    """The loop anyone would write: sample, zero grads, loss, backward, step. Seconds per step."""
    task = NoisyBowl(seed=seed)
    opt = torch.optim.Adam(task.parameters(), **HPARAMS)
    start = time.perf_counter()
    for _ in range(steps):
        batch = task.sample()
        opt.zero_grad()
        loss = task.loss(batch)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def trial_loop(steps: int, seed: int) -> float:
    """The same through `run_trial` (closure, per-evaluation loss and time recording). Seconds per step."""
    task = NoisyBowl(seed=seed)
    opt = torch.optim.Adam(task.parameters(), **HPARAMS)
    return run_trial(task, opt, None, steps=steps, seed=seed).seconds / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)

    plain_loop(500, 0), trial_loop(500, 0)  # warm up
    plain, trial = [], []
    for repeat in range(args.repeats):
        plain.append(plain_loop(args.steps, repeat))
        trial.append(trial_loop(args.steps, repeat))
    p, t = statistics.median(plain), statistics.median(trial)
    overhead = statistics.median((b - a) / a for a, b in zip(plain, trial))
    print(f"noisy_bowl + Adam, {args.steps} steps x {args.repeats} repeats (median), torch {torch.__version__}")
    print(f"  hand-written loop : {p * 1e6:8.2f} us/step (fastest {min(plain) * 1e6:.2f})")
    print(f"  run_trial         : {t * 1e6:8.2f} us/step (fastest {min(trial) * 1e6:.2f})")
    print(f"  overhead          : {overhead:+.1%} of an Adam step, median of paired repeats (target <= 20%)")


if __name__ == "__main__":
    main()
