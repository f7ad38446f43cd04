"""What recording σ every K steps costs a LODO run on the noisy bowl (target: ≤ 5 %).

σ = `task.hessian_error(opt.preconditioner)` on the task's 100 fixed probes (n = 100) is one
batched G·(H v) product, about 3 LODO steps. Full runs take it every `observe_every_for(steps)`
= max(200, ⌈steps / 200⌉) optimizer steps, so ≤ ~1.5 % (K = 200) and less for longer runs.

Runs `run_trial("noisy_bowl", "LODO", ...)` without σ and with σ every K steps, interleaved
round by round in this one process (so drift hits both alike), one thread; prints each
configuration's median and minimum seconds and the slowdowns median(with σ) / median(without) − 1
and min / min − 1 (the minimum is the least disturbed by other processes on a shared machine).
It also times one σ and one LODO step directly.

    python benchmarks/sigma_overhead.py                       # K = 100, 200, 500; 5000 steps, 7 rounds
    python benchmarks/sigma_overhead.py --every 100 --steps 2000 --rounds 3
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import lodo  # noqa: E402
import tasks  # noqa: E402
from tuner.trial.loop import run_trial  # noqa: E402

TARGET = 0.05


def sigma_and_step_cost(steps: int = 500, repeats: int = 200) -> tuple[float, float]:
    """Seconds of one σ and of one LODO step on the bowl (after `steps` warm-up steps)."""
    task = tasks.create("noisy_bowl", seed=0)
    opt = lodo.create("LODO", task.parameters(), seed=0)
    batch = None

    def closure():
        opt.zero_grad()
        loss = task.loss(batch)
        loss.backward(create_graph=getattr(opt, "create_graph", False))
        return loss

    def steps_of(k):
        nonlocal batch
        for _ in range(k):
            batch = task.sample()
            opt.step(closure)

    steps_of(steps)
    t0 = time.perf_counter()
    steps_of(repeats)
    step = (time.perf_counter() - t0) / repeats
    t0 = time.perf_counter()
    for _ in range(repeats):
        task.hessian_error(opt.preconditioner)
    sigma = (time.perf_counter() - t0) / repeats
    opt.zero_grad(set_to_none=True)
    return sigma, step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000, help="evaluations per run (default 5000)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--every", default="100,200,500", help="comma-separated K values (default 100,200,500)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    everies = [int(k) for k in args.every.split(",")]

    sigma, step = sigma_and_step_cost()
    print(f"one σ (100 probes, n = 100): {sigma * 1e6:.0f} µs; one LODO step: {step * 1e6:.0f} µs "
          f"(σ = {sigma / step:.2f} steps)")
    configs = [None] + everies
    seconds: dict = {k: [] for k in configs}
    run_trial("noisy_bowl", "LODO", {}, min(args.steps, 500), seed=0)  # warm up
    for r in range(args.rounds):
        order = configs if r % 2 == 0 else configs[::-1]
        for k in order:
            res = run_trial("noisy_bowl", "LODO", {}, args.steps, seed=0, observe_every=k)
            seconds[k].append(res.seconds)
    base, base_min = statistics.median(seconds[None]), min(seconds[None])
    print(f"LODO, noisy_bowl, {args.steps} steps, {args.rounds} interleaved rounds (median / min):")
    print(f"  without σ: {base:.3f} s / {base_min:.3f} s")
    worst = 0.0
    for k in everies:
        med, least = statistics.median(seconds[k]), min(seconds[k])
        slowdown, slowdown_min = med / base - 1, least / base_min - 1
        worst = max(worst, slowdown)
        print(f"  σ every {k:>5} steps: {med:.3f} s / {least:.3f} s, slowdown {100 * slowdown:+.1f} % / "
              f"{100 * slowdown_min:+.1f} % (predicted {100 * sigma / (k * step):.1f} %)")
    print(f"target ≤ {100 * TARGET:.0f} % (median): {'met' if worst <= TARGET else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
