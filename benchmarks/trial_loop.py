"""The batched stepping loop's own overhead: today's loop against the one before, side by side.

Two changes to what every batched step pays besides its optimizer's arithmetic, both leaving every
number as it was:

- the loop runs in `torch.inference_mode` instead of `torch.no_grad` (`tuner.trial.loop.STEP_MODE`):
  no version-counter and autograd-key work per kernel, and a step is a few hundred small kernels;
- `BatchedNoisyBowl.sample` draws each lane's noise into row views made once, not P fresh views
  per step (iterating a tensor makes one `select` per row, ~1.6 µs each).

Both forms run the same batched trial (noisy bowl, n = 100, lanes at seeds 0..P−1, the main job's
tuned values) in alternating order for `--rounds` rounds on one thread; the script prints the
median ratio of stepping seconds (before / now) and whether every lane's losses are bit-identical.

    python benchmarks/trial_loop.py
    python benchmarks/trial_loop.py --optimizers LODO --lanes 8 --steps 3000 --rounds 7
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

import tuner.trial.loop
from tasks.batched import BatchedNoisyBowl
from tuner.trial.loop import run_batched_trial

#: the main job's tuned values at seed 0 (benchmarks/RESULTS.md, "The main job")
TUNED = {"Adam": dict(lr=1.738, beta1=0.5934, beta2=0.9988), "Momentum": dict(lr=1.068, momentum=0.6502),
         "RMSprop": dict(lr=0.6030, rho=0.9993, momentum=0.4381),
         "Yogi": dict(lr=4.942, beta1=0.5184, beta2=0.99987), "L-BFGS": dict(lr=1.299, tau=11531.0),
         "O-LBFGS": dict(lr=0.6885, tau=79433.0), "LODO": dict(lr=0.1356, meta_lr=0.000847, beta=0.2361),
         "L2LBGDBGD": {}}


def sample_before(self) -> None:
    """`BatchedNoisyBowl.sample` as it was: a fresh view of every row, every step."""
    for row, generator in zip(self._noise, self.generators):
        row.normal_(0.0, self._noise_std, generator=generator)
    self.centre.add_(self._noise)


def timed(form: str, optimizer: str, lanes: int, steps: int) -> tuple[float, list]:
    now = form == "now"
    tuner.trial.loop.STEP_MODE = step_mode if now else torch.no_grad
    BatchedNoisyBowl.sample = sample_now if now else sample_before
    results = run_batched_trial("noisy_bowl", optimizer, [TUNED[optimizer]] * lanes, steps, list(range(lanes)))
    return max(r.seconds for r in results), results


step_mode, sample_now = tuner.trial.loop.STEP_MODE, BatchedNoisyBowl.sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", nargs="+", default=list(TUNED))
    parser.add_argument("--lanes", nargs="+", type=int, default=[8, 32])
    parser.add_argument("--steps", type=int, default=2000, help="evaluations per lane")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"noisy_bowl n = 100, 1 thread, {args.rounds} alternating rounds, {args.steps} evaluations per lane")
    print(f"{'optimizer':>10} {'P':>4} {'before s':>9} {'now s':>7} {'before / now':>13}  identical")
    for optimizer in args.optimizers:
        for lanes in args.lanes:
            timed("now", optimizer, 2, 20)  # warm-up
            ratios, pairs, same = [], [], True
            for r in range(args.rounds):
                order = ("now", "before") if r % 2 else ("before", "now")
                out = {form: timed(form, optimizer, lanes, args.steps) for form in order}
                ratios.append(out["before"][0] / out["now"][0])
                pairs.append((out["before"][0], out["now"][0]))
                same &= all(np.array_equal(a.losses, b.losses, equal_nan=True)
                            for a, b in zip(out["before"][1], out["now"][1]))
            before = statistics.median(b for b, _ in pairs)
            now = statistics.median(n for _, n in pairs)
            print(f"{optimizer:>10} {lanes:>4} {before:>9.2f} {now:>7.2f} {statistics.median(ratios):>12.2f}×  "
                  f"{'yes' if same else 'NO'}", flush=True)
    tuner.trial.loop.STEP_MODE, BatchedNoisyBowl.sample = step_mode, sample_now


if __name__ == "__main__":
    main()
