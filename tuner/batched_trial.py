"""A batched trial: P individuals of one optimizer on one task as one program (issue 15).

Lane i is the trial `tuner.trial.run_trial(task, optimizer, hparams_list[i], steps, seeds[i],
task_options)`: the same losses (to rounding), the same divergence rule and the same fitness.
The loop is run_trial's, with (P,) losses::

    for each optimizer step:
        task.sample()                          # every lane's next noise sample
        opt.step(x, closure)                   # closure: (P,) losses and (P, n) gradients, recorded

Losses go to a device buffer and reach the host every `check_every` evaluations; at that check a
lane whose losses hold a NaN/inf is dropped from the batch (`keep`): its losses end with the
first non-finite one, its final_loss is +inf, and the other lanes carry on with less work.

Times: all lanes share one clock. `times[i]` of a lane is when evaluation i of the whole batch
was recorded (queued, on an accelerator), in seconds since the batched run's start; `seconds` is
when the lane stopped (the end, or the check that dropped it) and `steps_per_second` its
recorded evaluations over that, so a lane's rate is the batch's rate, not P times it.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

import lodo.batched
import tasks.batched
from tuner.trial import TrialResult, report_loss


def supports_batched(task_name: str, optimizer_name: str) -> bool:
    """True if (task, optimizer) has a batched form."""
    return task_name in tasks.batched.available() and optimizer_name in lodo.batched.available()


def run_batched_trial(task_name: str, optimizer_name: str, hparams_list: list[dict], steps: int,
                      seeds: list[int], task_options: dict | None = None, device="cpu",
                      check_every: int = 100) -> list[TrialResult]:
    """Run len(seeds) trials of `optimizer_name` on `task_name` as one batch; one TrialResult per lane."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"Invalid steps: {steps!r} (must be an integer >= 1)")
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"Invalid check_every: {check_every!r} (must be an integer >= 1)")
    if len(hparams_list) != len(seeds):
        raise ValueError(f"Invalid hparams_list: {len(hparams_list)} entries for {len(seeds)} seeds (must be equal)")
    if not supports_batched(task_name, optimizer_name):
        raise ValueError(f"Invalid task/optimizer: {task_name!r}/{optimizer_name!r} has no batched form")
    task = tasks.batched.create(task_name, seeds, device=device, **(task_options or {}))
    opt = lodo.batched.create(optimizer_name, task.x, [dict(h or {}) for h in hparams_list], seeds)

    lanes = len(seeds)
    running = list(range(lanes))      # the original lane of each row of the batch
    losses = np.full((lanes, steps), np.nan)
    times = np.empty(steps)
    counts, stopped = [0] * lanes, [0.0] * lanes
    diverged = [False] * lanes
    chunk = torch.empty(check_every + 2, lanes, dtype=torch.float64, device=task.device)  # + L-BFGS's overshoot
    recorded = flushed = 0

    def closure():
        nonlocal recorded
        loss, grad = task.loss_and_grad()
        if recorded < steps:
            chunk[recorded - flushed, : loss.shape[0]].copy_(loss)
            times[recorded] = time.perf_counter() - start
            recorded += 1
        return loss, grad

    def flush() -> None:
        """Losses since the last check to the host; drop the lanes that diverged in them."""
        nonlocal flushed, running
        values = chunk[: recorded - flushed, : len(running)].cpu().numpy()
        losses[running, flushed:recorded] = values.T
        now = time.perf_counter() - start
        for row, lane in enumerate(running):
            counts[lane], stopped[lane] = recorded, now
        flushed = recorded
        bad = ~np.isfinite(values).all(axis=0)
        if bad.any():
            for row in np.flatnonzero(bad):
                diverged[running[row]] = True
            keep = np.flatnonzero(~bad)
            running = [running[row] for row in keep]
            if running:
                index = torch.as_tensor(keep, device=task.device)
                task.keep(index)
                opt.keep(index)

    start = time.perf_counter()
    while recorded < steps and running:
        task.sample()
        opt.step(task.x, closure)
        if recorded - flushed >= check_every:
            flush()
    if running and recorded > flushed:
        flush()

    results = []
    for lane in range(lanes):
        lane_losses, lane_times = losses[lane, : counts[lane]], times[: counts[lane]]
        if diverged[lane]:
            first_bad = int(np.argmin(np.isfinite(lane_losses)))
            lane_losses, lane_times = lane_losses[: first_bad + 1], lane_times[: first_bad + 1]
            final_loss = math.inf
        else:
            final_loss = report_loss(task, lane_losses)
        seconds = stopped[lane]
        results.append(TrialResult(
            losses=lane_losses.copy(), times=lane_times.copy(), final_loss=final_loss, seconds=seconds,
            steps_per_second=counts[lane] / seconds if seconds > 0 else math.inf, diverged=diverged[lane]))
    return results
