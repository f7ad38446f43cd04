"""A batched optimizer against its form in an older `lodo/batched.py`, side by side in one process.

For a speed-up that must not change a number: both forms run the same batched trial (same task,
lanes, seeds, hyperparameters) in alternating order for `--rounds` rounds on one thread; the script
prints the median ratio of stepping seconds (baseline / current) and whether every lane's losses
and divergence are bit-identical between the two.

    git show 509cabf:lodo/batched.py > /tmp/batched_old.py
    python benchmarks/batched_baseline.py --baseline /tmp/batched_old.py --optimizers L-BFGS O-LBFGS
    python benchmarks/batched_baseline.py --baseline /tmp/batched_old.py --task rosenbrock --lanes 8 --steps 2000

Hyperparameters: the main job's tuned values where this script knows them (`TUNED`), else the
registry defaults; `--spread` instead gives lane i the learning rate of lane 0 times 2^(i − P/2),
so a batch also holds lanes that diverge or reject pairs.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import numpy as np
import torch

import lodo
import lodo.batched
from tuner.trial.loop import run_batched_trial

#: the main job's tuned values at seed 0 (benchmarks/RESULTS.md, "Wired through")
TUNED = {"L-BFGS": dict(lr=1.299, tau=11531.0), "O-LBFGS": dict(lr=0.6885, tau=79433.0)}


def load(path: str):
    spec = importlib.util.spec_from_file_location("baseline_batched", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lanes_hparams(optimizer: str, lanes: int, spread: bool) -> list[dict]:
    base = dict(TUNED.get(optimizer, {}))
    if not spread:
        return [base] * lanes
    lr = base.get("lr", next(h.default for h in lodo.hyperparameters(optimizer) if h.name == "lr"))
    return [{**base, "lr": lr * 2.0 ** (i - lanes // 2)} for i in range(lanes)]


def timed(forms: dict, which: str, optimizer: str, args, hparams) -> tuple[float, list]:
    lodo.batched._OPTIMIZERS[optimizer] = forms[which]
    results = run_batched_trial(args.task, optimizer, hparams, args.steps, list(range(args.lanes)))
    return max(r.seconds for r in results), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, metavar="BATCHED_PY", help="an older lodo/batched.py")
    parser.add_argument("--optimizers", nargs="+", default=["L-BFGS", "O-LBFGS"])
    parser.add_argument("--task", default="noisy_bowl")
    parser.add_argument("--lanes", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--spread", action="store_true", help="spread the lanes' learning rates over 2^±P/2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    baseline = load(args.baseline)

    print(f"{args.task}, {args.lanes} lanes × {args.steps} steps, 1 thread, {args.rounds} rounds, median ratio")
    print(f"{'optimizer':>10} {'baseline s':>11} {'current s':>10} {'speed-up':>9}  bit-identical")
    for optimizer in args.optimizers:
        current = lodo.batched._OPTIMIZERS[optimizer]
        forms = {"current": current, "baseline": baseline._OPTIMIZERS[optimizer]}
        hparams = lanes_hparams(optimizer, args.lanes, args.spread)
        seconds, identical = {"current": [], "baseline": []}, True
        try:
            for r in range(args.rounds):
                order = ("current", "baseline") if r % 2 == 0 else ("baseline", "current")
                runs = {which: timed(forms, which, optimizer, args, hparams) for which in order}
                for which, (s, _) in runs.items():
                    seconds[which].append(s)
                identical &= all(np.array_equal(a.losses, b.losses, equal_nan=True) and a.diverged == b.diverged
                                 for a, b in zip(runs["current"][1], runs["baseline"][1]))
        finally:
            lodo.batched._OPTIMIZERS[optimizer] = current
        old, new = statistics.median(seconds["baseline"]), statistics.median(seconds["current"])
        print(f"{optimizer:>10} {old:>11.2f} {new:>10.2f} {old / new:>8.2f}×  {'yes' if identical else 'NO'}", flush=True)


if __name__ == "__main__":
    main()
