"""What the bowl's exact gradients cost a batched trial, side by side in one process, one thread.

    python benchmarks/exact_gradients.py [--rounds 3]

`exact_gradients` (tasks/batched.py) gives each lane's loss and gradient as the unbatched autograd
rounds them; RMSprop and L2LBGDBGD ask for it. Three forms, interleaved per round: the per-lane
loop of mv's (the fallback, and the only form before 2026-12-04), the batched products the exact
path now uses, and the closed form (one bmm with H) the other optimizers take. Prints the median
over rounds of the first lane's stepping seconds (`TrialResult.seconds`, the batch clock).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import lodo.batched
import tasks.batched
from tuner.trial.loop import run_batched_trial

CASES = [("L2LBGDBGD", 8, 2000), ("RMSprop", 8, 3000), ("RMSprop", 32, 3000)]
FORMS = {"per-lane loop": (True, False), "batched exact": (True, None), "closed form": (False, None)}


def timed(optimizer: str, lanes: int, steps: int, exact: bool, batched_products) -> float:
    """One batched trial with the exact path on or off and its products forced to a form."""
    cls = lodo.batched._OPTIMIZERS[optimizer]
    init, saved = tasks.batched.BatchedNoisyBowl.__init__, cls.exact_gradients

    def init_with_form(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._batched_products_exact = batched_products  # None: checked at the first call

    tasks.batched.BatchedNoisyBowl.__init__, cls.exact_gradients = init_with_form, exact
    try:
        return run_batched_trial("noisy_bowl", optimizer, [{}] * lanes, steps, list(range(lanes)))[0].seconds
    finally:
        tasks.batched.BatchedNoisyBowl.__init__, cls.exact_gradients = init, saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"noisy_bowl, float64, 1 thread, median of {args.rounds} rounds; first lane's stepping seconds")
    for optimizer, lanes, steps in CASES:
        if optimizer not in lodo.batched.available():
            continue
        seconds = {form: [] for form in FORMS}
        for _ in range(args.rounds):
            for form, (exact, products) in FORMS.items():
                seconds[form].append(timed(optimizer, lanes, steps, exact, products))
        medians = {form: statistics.median(values) for form, values in seconds.items()}
        cells = ", ".join(f"{form} {value:.2f} s" for form, value in medians.items())
        print(f"{optimizer:>10} {lanes:>3} × {steps}: {cells}; loop / batched exact "
              f"{medians['per-lane loop'] / medians['batched exact']:.2f}×")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s)")
