"""Tuning quality of a GA schedule: tune each optimizer with it for several GA seeds, then score
the tuned values with the schedule's full runs (8 seeds, full length); optionally random search
at the same trial length and budget for comparison. In process, one core, batched trials.

    python benchmarks/improved_ga.py --schedule noisy_bowl-improved --optimizers Adam Momentum --ga-seeds 0 1 2
    python benchmarks/improved_ga.py --schedule noisy_bowl --optimizers Momentum --ga-seeds 0
    python benchmarks/improved_ga.py --schedule noisy_bowl --random 100 8000 --optimizers Yogi --ga-seeds 0 1 2
    python benchmarks/improved_ga.py --schedule noisy_bowl --set '{"population": 16, "ga": {"step_size": "csa"}}'

The GA is driven exactly as `tuner.driver.session.Session` drives it (each generation's trials as lanes
of one `run_batched_trial`, a lane's numbers independent of its batch), so the tuned values are
those `lodo-tune --schedule ...` gives for the same GA seed. Full runs use trial seeds 0..7 for
every GA seed (the values are compared, not the sessions). Random search draws uniformly in the
GA's rescaled space over `tuner.search.ga.default_bounds` (lr on noisy_bowl: [1e-3, 10], as issue 19's
runs) and keeps the trial with the lowest fitness; the same box is a uniform first generation's
(the schedule's `search.bounds` box, `tuner.search.space`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tuner.search.ga import GeneticAlgorithm, default_bounds, rescale, unrescale  # noqa: E402
from tuner.driver.schedule import load_schedule, space_for, trial_hparams  # noqa: E402
from tuner.search.space import ga_keywords  # noqa: E402
from tuner.trial.loop import run_batched_trial  # noqa: E402

torch.set_num_threads(1)
LR_BOUNDS = {"noisy_bowl": (1e-3, 10.0)}  # issue 19's plain space: lr log-uniform on [1e-3, 10]


def bounds_for(task: str, space) -> dict:
    return {d.name: (LR_BOUNDS[task] if d.name == "lr" and task in LR_BOUNDS else default_bounds(d))
            for d in space}


def evaluate(task, optimizer, hparams_list, steps, seeds):
    """Fitness of each (hparams, seed) lane: last-10 % training loss, +inf if diverged."""
    results = run_batched_trial(task, optimizer, hparams_list, steps, seeds)
    return [r.final_loss for r in results]


def tune_ga(schedule, optimizer, seed, bounds):
    space = space_for(schedule, optimizer)
    options = ga_keywords(schedule, optimizer)  # what tuner.driver.session.Session passes (the schedule's search box)
    ga = GeneticAlgorithm(space, list(schedule.generations), schedule.population,
                          seed=seed, name=optimizer, **options)
    spent = 0
    while not ga.done:
        asked = ga.ask()
        hparams = [trial_hparams(schedule, optimizer, i.hparams, i.steps) for i in asked]  # as the session runs them
        fitness = evaluate(schedule.task, optimizer, hparams, asked[0].steps, [i.seed for i in asked])
        spent += len(asked) * asked[0].steps
        ga.tell({i.index: f for i, f in zip(asked, fitness)})
    return ga.best(), spent, [h.get("sigma", h["noise"]) for h in ga.history]


def tune_random(schedule, optimizer, seed, bounds, trials, steps, chunk=25):
    space = space_for(schedule, optimizer)
    rng = np.random.default_rng([seed, 19])
    box = [tuple(rescale(v, d.scale) for v in bounds[d.name]) for d in space]
    candidates = [{d.name: unrescale(lo + (hi - lo) * rng.random(), d.scale) for d, (lo, hi) in zip(space, box)}
                  for _ in range(trials)]
    seeds = [int(s) for s in rng.integers(0, 2**31, trials)]
    run = [trial_hparams(schedule, optimizer, c, steps) for c in candidates]
    fitness = []
    for a in range(0, trials, chunk):
        fitness += evaluate(schedule.task, optimizer, run[a:a + chunk], steps, seeds[a:a + chunk])
    best = min(range(trials), key=lambda i: (fitness[i] if math.isfinite(fitness[i]) else math.inf, i))
    return candidates[best], trials * steps, []


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedule", default="noisy_bowl")
    parser.add_argument("--set", default="{}", help="JSON overrides of the schedule")
    parser.add_argument("--optimizers", nargs="+", default=["Adam", "Momentum", "RMSprop", "Yogi"])
    parser.add_argument("--ga-seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--random", nargs=2, type=int, metavar=("TRIALS", "STEPS"),
                        help="random search instead of the GA")
    parser.add_argument("--full-seeds", type=int, default=None)
    parser.add_argument("--label", default="")
    parser.add_argument("--out", default=None, help="append one JSON line per (optimizer, seed)")
    args = parser.parse_args(argv)
    schedule = load_schedule(args.schedule, json.loads(args.set) or None)
    steps, full_seeds = schedule.full_run.steps, args.full_seeds or schedule.full_run.seeds
    label = args.label or (f"random {args.random[0]}×{args.random[1]}" if args.random else args.schedule)
    for optimizer in args.optimizers:
        finals = []
        for seed in args.ga_seeds:
            t0 = time.perf_counter()
            bounds = bounds_for(schedule.task, space_for(schedule, optimizer))
            if args.random:
                best, spent, sigmas = tune_random(schedule, optimizer, seed, bounds, *args.random)
            else:
                best, spent, sigmas = tune_ga(schedule, optimizer, seed, bounds)
            tuned_s = time.perf_counter() - t0
            hp = {k: (v * schedule.lr_scale if k == "lr" else v) for k, v in best.items()}
            losses = evaluate(schedule.task, optimizer, [hp] * full_seeds, steps, list(range(full_seeds)))
            final = statistics.fmean(losses) if all(map(math.isfinite, losses)) else math.inf
            finals.append(final)
            row = {"label": label, "task": schedule.task, "optimizer": optimizer, "seed": seed, "final": final,
                   "std": statistics.pstdev(losses) if math.isfinite(final) else None, "hparams": best,
                   "individual_steps": spent, "sigmas": sigmas, "tune_s": round(tuned_s, 1),
                   "total_s": round(time.perf_counter() - t0, 1), "set": json.loads(args.set)}
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
        if len(finals) > 1 and all(map(math.isfinite, finals)):
            mean = statistics.fmean(finals)
            # median and geometric mean too: on rosenbrock one seed in twenty can dominate the mean
            geometric = statistics.geometric_mean(finals) if min(finals) > 0 else float("nan")
            print(f"# {label} {optimizer}: mean {mean:.4g}, median {statistics.median(finals):.4g}, "
                  f"geometric mean {geometric:.4g}, range {min(finals):.4g}–{max(finals):.4g} "
                  f"(spread {(max(finals) - min(finals)) / mean:.1%})", flush=True)


if __name__ == "__main__":
    main()
