"""One trial: build a task and an optimizer, step, record every evaluation's loss (docs/paper.md §3, §4).

The same loop serves the GA's short trials and the full-length runs::

    for each optimizer step:
        batch = task.sample()             # one noise sample / minibatch per step
        opt.step(closure)                 # closure: zero grads, loss = task.loss(batch), backward,
                                          #          record (loss, wall time), return loss

Every closure evaluation is one *step* of the budget (docs/paper.md §3 "What a step is"): L-BFGS evaluates
twice per iteration on the same batch and both losses count. The run stops once `steps`
evaluations are recorded (evaluations beyond that are not recorded).

On an accelerator losses stay device tensors and move to the host every `check_every`
evaluations, so there is no host sync per step (on the CPU each is read at once with `item()`,
which is cheaper than keeping tensors). Divergence (a NaN/inf loss) is checked every
`check_every` evaluations: a diverged run stops at that check, its `losses`/`times` end with the
first non-finite loss (later evaluations are dropped, nothing is padded) and its `final_loss` is
+inf, so it ranks last. `times[i]` on an accelerator is when evaluation i was *queued*; the queue
is drained at every check, so the times are exact to within `check_every` evaluations.

Mid-run checkpoints (long full-length runs): with `checkpoint=PATH`, at a check (every
`check_every` evaluations, always between optimizer steps, so never inside an L-BFGS step's two
evaluations) at least `checkpoint_every_s` seconds after the last save, the run saves
{task and optimizer state, losses/times so far, elapsed seconds, fingerprint} atomically (temp
file + fsync + os.replace: a kill -9 leaves the old checkpoint or the new one). A run that finds
a checkpoint with its fingerprint continues from it and records exactly the losses an
uninterrupted run would; `times` continue from the saved elapsed seconds. A checkpoint of
another trial is refused. `run_trial` leaves the file in place when it returns: the caller
deletes it once the run's record is durable (`tuner.api` does, after writing the record).

Observers (full runs, `observe_every=K`): σ, LODO's Hessian-approximation error (docs/paper.md §1.2,
the paper's Fig. 2 left), is `task.hessian_error(opt.preconditioner)` on the task's fixed probes,
recorded after every K-th optimizer step when the task has `hessian_error` and the optimizer a
`preconditioner` (the LODO family); it costs ~3 LODO steps on the bowl, so full runs' K ≥ 200
keeps it near 1.5 % of the run (`benchmarks/sigma_overhead.py`). A task with 2 numbers in all (Rosenbrock) also
records the flat parameter vector at every evaluation (Fig. 3's trajectories). Both go into the
checkpoint, so a resumed run records them bit for bit as an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

import tasks
from tasks import Task


@dataclass(frozen=True)
class TrialResult:
    """What one trial recorded: `losses[i]` is evaluation i's loss, `times[i]` its wall seconds since start."""

    losses: np.ndarray
    times: np.ndarray
    final_loss: float
    seconds: float
    steps_per_second: float
    diverged: bool
    sigma: np.ndarray | None = None       # (m, 2): rows (evaluations so far, σ) every K optimizer steps
    trajectory: np.ndarray | None = None  # (len(losses), 2): the parameters (x, y) at each evaluation


SIGMA_EVERY = 200      # σ every ≥ 200 optimizer steps: ~1.5 % of a LODO run on the bowl (measured)
SIGMA_POINTS = 200     # ... and at most ~200 σ points in a full run
TRAJECTORY_SIZE = 2    # tasks with this many parameters in all record their trajectory


def observe_every_for(steps: int) -> int:
    """The σ interval K of a full run of `steps` evaluations: max(SIGMA_EVERY, ⌈steps / SIGMA_POINTS⌉)."""
    return max(SIGMA_EVERY, math.ceil(steps / SIGMA_POINTS))


def last_fraction_mean(losses: np.ndarray, fraction: float = 0.1) -> float:
    """Mean of the last ceil(fraction·len) losses: "the average training loss over the last 10 %"."""
    if len(losses) == 0:
        return math.inf
    count = max(1, math.ceil(fraction * len(losses)))
    return float(np.mean(losses[-count:]))


def time_budget_loss(losses: np.ndarray, times: np.ndarray, budget: float, fraction: float = 0.1) -> float:
    """Mean loss over the last 10 % of a time budget: evaluations with (1 − fraction)·budget < t ≤ budget.

    This is the paper's time milestone (e.g. 300 s on the noisy bowl) read off a run's `times`.
    +inf (ranks last) if a loss in the budget is non-finite or no evaluation falls in the window.
    """
    if budget <= 0:
        raise ValueError(f"Invalid budget: {budget!r} (must be > 0)")
    losses, times = np.asarray(losses), np.asarray(times)
    within = times <= budget
    if not np.all(np.isfinite(losses[within])):
        return math.inf
    window = within & (times > (1.0 - fraction) * budget)
    return float(np.mean(losses[window])) if window.any() else math.inf


def report_loss(task: Task, losses: np.ndarray) -> float:
    """The reported loss: the mean over the task's `report_window` (0-based evaluation indices
    [start, stop)) when it has one and the run recorded all of it, else over the last 10 %."""
    window = getattr(task, "report_window", None)
    if window is not None and len(losses) >= window[1]:
        return float(np.mean(losses[window[0] : window[1]]))
    return last_fraction_mean(losses)


def _build_task(task, seed, task_options, device) -> Task:
    if isinstance(task, Task):
        if task_options:
            raise ValueError(f"Invalid task_options: {task_options!r} (only for a task given by name)")
        return task
    return tasks.create(task, seed=seed, device=device, **(task_options or {}))


def _build_optimizer(optimizer, hparams, params, seed, steps) -> torch.optim.Optimizer:
    """`lodo.create(optimizer, ...)`; an optimizer with a `total_steps` option (LARS's
    (1 − progress)² decay) gets the run's `steps` unless `hparams` sets it."""
    if isinstance(optimizer, torch.optim.Optimizer):
        if hparams:
            raise ValueError(f"Invalid hparams: {hparams!r} (only for an optimizer given by name)")
        return optimizer
    import lodo  # the registry; imported here so tasks-only users never need it

    hparams = dict(hparams or {})
    if "total_steps" in lodo.options(optimizer):
        hparams.setdefault("total_steps", steps)
    return lodo.create(optimizer, params, seed=seed, **hparams)


class CheckpointError(ValueError):
    """A checkpoint that belongs to another trial or cannot be read (one-line message)."""


def fingerprint(task, optimizer, hparams, steps, seed, task_options=None, time_limit=None) -> str:
    """What determines a trial's losses, as canonical JSON: a checkpoint resumes only its own trial."""
    name = lambda x: x if isinstance(x, str) else type(x).__name__  # noqa: E731
    return json.dumps({"task": name(task), "task_options": task_options or {}, "optimizer": name(optimizer),
                       "hparams": hparams or {}, "steps": steps, "seed": seed, "time_limit": time_limit},
                      sort_keys=True, default=repr)


def save_checkpoint(path, state: dict) -> None:
    """torch.save `state` to `path` atomically (temp file in the same directory, fsync, os.replace)."""
    from tuner.rundir import atomic_write

    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path, expected_fingerprint: str) -> dict | None:
    """The checkpoint at `path` (None if there is none); CheckpointError if it is another trial's."""
    if not os.path.isfile(path):
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)  # our own file, written by save_checkpoint
    except Exception as e:
        raise CheckpointError(f"Invalid checkpoint: {os.fspath(path)!r} cannot be read ({type(e).__name__})") from None
    if state.get("fingerprint") != expected_fingerprint:
        raise CheckpointError(f"Invalid checkpoint: {os.fspath(path)!r} belongs to another trial "
                              f"({state.get('fingerprint')}; this one is {expected_fingerprint}); delete it to start over")
    return state


def run_trial(
    task,
    optimizer,
    hparams: dict | None,
    steps: int,
    seed: int,
    task_options: dict | None = None,
    device="cpu",
    time_limit: float | None = None,
    check_every: int = 100,
    checkpoint=None,
    checkpoint_every_s: float = 300,
    observe_every: int | None = None,
) -> TrialResult:
    """Train `optimizer` on `task` for `steps` evaluations and record each evaluation's loss.

    task: a name (built with `tasks.create(task, seed=seed, device=device, **task_options)`) or a Task.
    optimizer: a registry name (built with `lodo.create(optimizer, task.parameters(), seed=seed,
        **hparams)`) or a ready `torch.optim.Optimizer` over the task's parameters (hparams empty).
    time_limit: optional wall seconds; the run also stops once that much time has passed, and its
        final_loss is then the mean over the last 10 % of the time budget (`time_budget_loss`).
    final_loss: the task's report window or the last 10 % of the evaluations (`report_loss`);
        +inf if a loss was NaN/inf.
    checkpoint: optional file path; save every `checkpoint_every_s` seconds (checked every
        `check_every` evaluations, between optimizer steps) and resume from it when it exists.
    observe_every: optional K; record σ every K optimizer steps (`sigma`) and, for a 2-number
        task, the parameters at every evaluation (`trajectory`) — see the module docstring.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"Invalid steps: {steps!r} (must be an integer >= 1)")
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"Invalid time_limit: {time_limit!r} (must be > 0)")
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"Invalid check_every: {check_every!r} (must be an integer >= 1)")
    if not checkpoint_every_s >= 0:
        raise ValueError(f"Invalid checkpoint_every_s: {checkpoint_every_s!r} (must be >= 0)")
    if observe_every is not None and (isinstance(observe_every, bool) or not isinstance(observe_every, int)
                                      or observe_every < 1):
        raise ValueError(f"Invalid observe_every: {observe_every!r} (must be None or an integer >= 1)")
    key = fingerprint(task, optimizer, hparams, steps, seed, task_options, time_limit) if checkpoint else None
    task = _build_task(task, seed, task_options, device)
    opt = _build_optimizer(optimizer, hparams, task.parameters(), seed, steps)
    create_graph = getattr(opt, "create_graph", False)
    observing = observe_every is not None
    sigma_of = getattr(task, "hessian_error", None) if observing and hasattr(opt, "preconditioner") else None
    params = [p for p in task.parameters()]
    tracing = observing and sum(p.numel() for p in params) == TRAJECTORY_SIZE
    sigma: list[tuple[int, float]] = []  # (evaluations so far, σ) after every K-th optimizer step
    trajectory = np.full((steps, TRAJECTORY_SIZE), np.nan) if tracing else None
    next_sigma = observe_every if sigma_of is not None else 0  # the optimizer step of the next σ (0: never)
    optimizer_steps = 0

    losses = np.empty(steps)
    times = np.empty(steps)
    on_host = task.device.type == "cpu"
    pending: list[torch.Tensor] = []  # accelerators: losses of evaluations [flushed, recorded), not yet on the host
    recorded = flushed = 0
    batch = None
    elapsed = 0.0  # seconds already spent before this process (a resumed checkpoint)
    saved = checkpoint and load_checkpoint(checkpoint, key)
    if saved:
        task.load_state_dict(saved["task"])
        opt.load_state_dict(saved["optimizer"])
        recorded = flushed = int(saved["recorded"])
        losses[:recorded] = saved["losses"].numpy()
        times[:recorded] = saved["times"].numpy()
        elapsed = float(saved["elapsed"])
        optimizer_steps = int(saved.get("optimizer_steps", recorded))
        sigma = [(int(i), float(v)) for i, v in saved.get("sigma", torch.empty(0, 2)).tolist()]
        if trajectory is not None and saved.get("trajectory") is not None:
            trajectory[:recorded] = saved["trajectory"].numpy()
        if next_sigma:
            next_sigma = (optimizer_steps // observe_every + 1) * observe_every

    def save() -> None:
        """Everything a resumed run needs; called between optimizer steps right after a flush."""
        save_checkpoint(checkpoint, {
            "fingerprint": key, "task": task.state_dict(), "optimizer": opt.state_dict(),
            "recorded": recorded, "losses": torch.from_numpy(losses[:recorded].copy()),
            "times": torch.from_numpy(times[:recorded].copy()), "elapsed": time.perf_counter() - start,
            "optimizer_steps": optimizer_steps,
            "sigma": torch.tensor(sigma, dtype=torch.float64).reshape(-1, 2),
            "trajectory": None if trajectory is None else torch.from_numpy(trajectory[:recorded].copy()),
        })

    def closure():
        nonlocal recorded
        opt.zero_grad()
        loss = task.loss(batch)
        loss.backward(create_graph=create_graph)
        if recorded < steps:
            if on_host:
                losses[recorded] = loss.item()  # no sync to wait for on the CPU
            else:
                pending.append(loss.detach())
            times[recorded] = time.perf_counter() - start
            if trajectory is not None:  # 2 numbers: cheap
                trajectory[recorded] = torch.cat([p.detach().reshape(-1) for p in params]).cpu().numpy()
            recorded += 1
        return loss

    def flush() -> bool:
        """Move the pending losses to the host; True if a loss since the last flush is NaN/inf."""
        nonlocal flushed
        if pending:
            losses[flushed:recorded] = torch.stack(pending).double().cpu().numpy()
            pending.clear()
        chunk = losses[flushed:recorded]
        flushed = recorded
        return not np.isfinite(chunk).all()

    def train() -> bool:
        """Step until `steps` evaluations are recorded, the time limit passes or a loss is NaN/inf."""
        nonlocal batch, optimizer_steps, next_sigma
        saved_at = time.perf_counter()
        while recorded < steps:
            batch = task.sample()
            try:
                opt.step(closure)
            except (RuntimeError, ValueError):  # e.g. a factorisation failing on NaNs: divergence, not a bug
                if flush():
                    return True
                raise
            optimizer_steps += 1
            if optimizer_steps == next_sigma:  # the only per-step cost of σ: one integer comparison
                sigma.append((recorded, sigma_of(opt.preconditioner)))
                next_sigma += observe_every
            if recorded - flushed >= check_every:
                if flush():
                    return True
                if checkpoint and recorded < steps and time.perf_counter() - saved_at >= checkpoint_every_s:
                    save()
                    saved_at = time.perf_counter()
            if time_limit is not None and time.perf_counter() - start >= time_limit:
                break
        return flush()

    with warnings.catch_warnings():
        if create_graph:  # the reference cycle torch warns about is broken by every evaluation's zero_grad
            warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True")
        start = time.perf_counter() - elapsed  # a resumed run's clock continues from the checkpoint
        diverged = train()
    seconds = time.perf_counter() - start
    if create_graph:  # a gradient with a graph holds a reference cycle to its parameter
        opt.zero_grad(set_to_none=True)

    losses, times = losses[:recorded], times[:recorded]
    if diverged:
        first_bad = int(np.argmin(np.isfinite(losses)))
        losses, times = losses[: first_bad + 1], times[: first_bad + 1]
        sigma = [(i, v) for i, v in sigma if i <= first_bad + 1]
        final_loss = math.inf
    elif time_limit is not None and recorded < steps:
        final_loss = time_budget_loss(losses, times, time_limit)
    else:
        final_loss = report_loss(task, losses)
    return TrialResult(
        losses=losses,
        times=times,
        final_loss=final_loss,
        seconds=seconds,
        steps_per_second=recorded / seconds if seconds > 0 else math.inf,
        diverged=diverged,
        sigma=np.array(sigma, dtype=float).reshape(-1, 2) if sigma_of is not None else None,
        trajectory=trajectory[: len(losses)] if trajectory is not None else None,
    )
