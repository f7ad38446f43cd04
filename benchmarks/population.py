"""Population-batched trials vs sequential unbatched trials (issue 15's speed targets).

Individual-steps per second on the noisy bowl: one `run_batched_trial` of P lanes against P
sequential `run_trial` calls (same seeds, hyperparameters at the registry defaults), interleaved
in rounds in one process on one thread; each ratio is the median over rounds. "steps" counts the
stepping loop only (TrialResult.seconds: what a GA trial repeats); "wall" also counts building
the tasks and optimizers (a bowl's setup is a QR of an n×n Gaussian per lane, the same both ways).
Above `--max-sequential` lanes the sequential side runs that many trials and scales their time
(a lone trial's rate does not depend on P).

    python benchmarks/population.py                                    # Adam, Momentum, LODO; n 100, 1000; P 8, 32, 128
    python benchmarks/population.py --dims 100 --optimizers RMSprop Yogi --rounds 3

    python benchmarks/population.py --device cuda --dims 100 1000      # both sides on the GPU

Targets (P = 32, n = 100): ≥ 8× for Adam, Momentum and LODO.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from tuner.trial.loop import run_batched_trial
from tuner.trial.loop import run_trial


DEVICE = "cpu"  # --device


def batched(optimizer: str, lanes: int, dim: int, steps: int) -> tuple[float, float]:
    """(stepping seconds, wall seconds) of one batched trial of `lanes` lanes."""
    start = time.perf_counter()
    results = run_batched_trial("noisy_bowl", optimizer, [{}] * lanes, steps, list(range(lanes)),
                                task_options=dict(dim=dim), device=DEVICE)
    return max(r.seconds for r in results), time.perf_counter() - start


def sequential(optimizer: str, lanes: int, dim: int, steps: int, max_sequential: int) -> tuple[float, float]:
    """(stepping seconds, wall seconds) of `lanes` sequential trials (scaled from `max_sequential`)."""
    runs = min(lanes, max_sequential)
    start = time.perf_counter()
    seconds = sum(run_trial("noisy_bowl", optimizer, {}, steps, seed, task_options=dict(dim=dim), device=DEVICE).seconds
                  for seed in range(runs))
    return seconds * lanes / runs, (time.perf_counter() - start) * lanes / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", nargs="+", default=["Adam", "Momentum", "LODO"])
    parser.add_argument("--lanes", nargs="+", type=int, default=[8, 32, 128])
    parser.add_argument("--dims", nargs="+", type=int, default=[100, 1000])
    parser.add_argument("--steps", type=int, default=300, help="steps per trial at n = 100 (a third of it at n = 1000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-sequential", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where both sides run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = args.device

    print(f"noisy_bowl, float64, {args.device}, {args.threads} thread(s), {args.rounds} rounds, median ratios")
    print(f"{'optimizer':>9} {'n':>5} {'P':>4} {'batched steps/s':>16} {'sequential steps/s':>19} "
          f"{'ratio (steps)':>14} {'ratio (wall)':>13}")
    for dim in args.dims:
        steps = args.steps if dim <= 100 else max(10, args.steps // 3)
        for optimizer in args.optimizers:
            run_batched_trial("noisy_bowl", optimizer, [{}] * 2, 10, [0, 1], task_options=dict(dim=dim), device=DEVICE)
            run_trial("noisy_bowl", optimizer, {}, 10, 0, task_options=dict(dim=dim), device=DEVICE)  # warm-ups
            for lanes in args.lanes:
                rates, ratios, walls = [], [], []
                for r in range(args.rounds):
                    pair = [lambda: batched(optimizer, lanes, dim, steps),
                            lambda: sequential(optimizer, lanes, dim, steps, args.max_sequential)]
                    if r % 2:  # alternate which side goes first
                        (s_seq, w_seq), (s_bat, w_bat) = pair[1](), pair[0]()
                    else:
                        (s_bat, w_bat), (s_seq, w_seq) = pair[0](), pair[1]()
                    rates.append((lanes * steps / s_bat, lanes * steps / s_seq))
                    ratios.append(s_seq / s_bat)
                    walls.append(w_seq / w_bat)
                batched_rate = statistics.median(b for b, _ in rates)
                sequential_rate = statistics.median(s for _, s in rates)
                print(f"{optimizer:>9} {dim:>5} {lanes:>4} {batched_rate:>16,.0f} {sequential_rate:>19,.0f} "
                      f"{statistics.median(ratios):>13.1f}× {statistics.median(walls):>12.1f}×", flush=True)


if __name__ == "__main__":
    main()
