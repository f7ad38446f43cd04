"""One trial: build a task and an optimizer, step, record every evaluation's loss (docs/paper.md §3, §4).

The same loop serves the GA's short trials and the full-length runs::

    for each optimizer step:
        batch = task.sample()             # one noise sample / minibatch per step
        opt.step(closure)                 # closure: zero grads, loss = task.loss(batch), backward,
                                          #          record (loss, wall time), return loss
        σ after every K-th optimizer step; every check_every evaluations: stop on a NaN/inf loss,
        save a checkpoint when due

Every closure evaluation is one *step* of the budget (docs/paper.md §3 "What a step is"): L-BFGS
evaluates twice per iteration on the same batch and both losses count. The run stops once `steps`
evaluations are recorded (later ones are not). On the CPU each loss is read at once with `item()`;
on an accelerator losses stay device tensors until a check (no host sync per step), and `times[i]`
is when evaluation i was *queued*, exact to within `check_every` evaluations. A diverged run stops
at the check that sees a NaN/inf loss: `losses`/`times` end with the first one and `final_loss` is
+inf, so it ranks last.

Checkpoints (long full runs, `checkpoint=PATH`): at a check (between optimizer steps, so never
inside an L-BFGS step's two evaluations) at least `checkpoint_every_s` seconds after the last save,
the run atomically saves its task and optimizer state, what it recorded, its elapsed seconds and its
`fingerprint`, and a SHA-256 `state_digest` of all that. A run that finds a checkpoint with its
fingerprint continues from it and records exactly what an uninterrupted run would (`times` continue
from the saved seconds). Loading runs no code from the file (`torch.load(weights_only=True)`: tensors,
numbers, strings and plain containers only); another trial's checkpoint, and one that is truncated or
whose content does not match its digest, is refused (`CheckpointError`, one line naming the file).
The caller deletes the file once the run's record is durable.

Observers (full runs, `observe_every=K`): σ, LODO's Hessian-approximation error (docs/paper.md §1.2,
Fig. 2 left), is `task.hessian_error(opt.preconditioner)` on the task's fixed probes after every K-th
optimizer step, for a task with `hessian_error` and an optimizer with a `preconditioner` (LODO and
its ablations); one σ costs ~3 LODO steps on the bowl, so full runs' K ≥ 200 keeps it near 1.5 %
(`benchmarks/sigma_overhead.py`). A task with 2 numbers in all (Rosenbrock) records its parameters at
every evaluation (Fig. 3's trajectories). Both are checkpointed, so a resumed run records them bit for bit.

`run_job` runs one `Job` (a GA individual or a full-length run) and summarises it for the driver.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
import traceback
import warnings

import numpy as np
import torch

import lodo
import lodo.batched
import tasks
import tasks.batched
from tasks import Task
from tuner.trial import prune as pruning
from tuner.trial import recipe as recipes
from tuner.driver.rundir import atomic_write


@dataclasses.dataclass(frozen=True)
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
    held_out: dict | None = None          # with `evaluate=True`: task.evaluate() after the last step
    running: tuple | None = None          # with `prune`: the running loss at each prune point reached
    pruned: dict | None = None            # a pruned trial: {"evaluation", "running_loss", "threshold"}


@dataclasses.dataclass(frozen=True)
class Job:
    """One trial to run: a GA individual (kind "tuning") or a full-length run (kind "full")."""

    key: tuple
    task: str
    optimizer: str
    hparams: dict
    steps: int
    seed: int
    task_options: dict = dataclasses.field(default_factory=dict)
    kind: str = "tuning"
    time_limit: float | None = None
    checkpoint: str | None = None      # full runs: mid-run checkpoint file (`run_trial(checkpoint=...)`)
    metric: str | None = None          # the schedule's objective metric: `task.evaluate()` after the trial
    recipe: dict = dataclasses.field(default_factory=dict)  # the schedule's recipe for it (tuner.trial.recipe)
    prune: tuple = ()                  # tuning: ((evaluation, threshold or None), ...) (tuner.trial.prune)

    def describe(self) -> str:
        """The job in words: "LODO generation 2 index 5 (seed 123)", "Adam full run 1 (seed 1)"."""
        if self.kind == "tuning" and len(self.key) == 4:
            return f"{self.optimizer} generation {self.key[2]} index {self.key[3]} (seed {self.seed})"
        if self.kind == "full" and len(self.key) == 3:
            return f"{self.optimizer} full run {self.key[2]} (seed {self.seed})"
        return f"{self.optimizer} {self.kind} job {self.key!r} (seed {self.seed})"


@dataclasses.dataclass(frozen=True)
class BatchJob:
    """Jobs of one (task, optimizer, kind, steps) run as one batched trial, lane i = `jobs[i]`
    (`run_batched_trial`); `run_job` sends back one result per job, in order, under "batch"."""

    jobs: tuple[Job, ...]

    def __post_init__(self):
        if not self.jobs:
            raise ValueError("Invalid jobs: () (a batch needs at least one job)")
        first = self.jobs[0]
        for job in self.jobs:
            if (job.task, job.optimizer, job.kind, job.steps, job.task_options, job.prune) != \
                    (first.task, first.optimizer, first.kind, first.steps, first.task_options, first.prune):
                raise ValueError(f"Invalid jobs: {job.key} and {first.key} differ in task, optimizer, kind, "
                                 "steps or task_options (a batch shares them)")

    key = property(lambda self: ("batch",) + tuple(job.key for job in self.jobs))
    describe = lambda self: f"a batch of {len(self.jobs)}: " + ", ".join(j.describe() for j in self.jobs)  # noqa: E731
    task = property(lambda self: self.jobs[0].task)
    optimizer = property(lambda self: self.jobs[0].optimizer)
    kind = property(lambda self: self.jobs[0].kind)
    steps = property(lambda self: self.jobs[0].steps)
    task_options = property(lambda self: self.jobs[0].task_options)


SIGMA_EVERY = 200      # σ every ≥ 200 optimizer steps: ~1.5 % of a LODO run on the bowl (measured)
SIGMA_POINTS = 200     # ... and at most ~200 σ points in a full run (and in its record)
TRAJECTORY_SIZE = 2    # tasks with this many parameters in all record their trajectory
CURVE_POINTS = 100     # a record's decimated loss curve
#: the grad mode of a batched trial's stepping loop: nothing in it needs autograd (the tasks give
#: closed-form gradients), and inference mode dispatches each of a step's few hundred small kernels
#: faster than no_grad (benchmarks/trial_loop.py swaps it back to measure; same numbers either way)
STEP_MODE = torch.inference_mode


def observe_every_for(steps: int) -> int:
    """The σ interval K of a full run of `steps` evaluations: max(SIGMA_EVERY, ⌈steps / SIGMA_POINTS⌉)."""
    return max(SIGMA_EVERY, math.ceil(steps / SIGMA_POINTS))


def positive_int(name: str, value, optional: bool = False) -> int | None:
    """`value` if it is an integer >= 1 (or None when `optional`), else a ValueError naming `name`."""
    if (value is None and optional) or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(f"Invalid {name}: {value!r} (must be {'None or ' if optional else ''}an integer >= 1)")


def last_fraction_mean(losses: np.ndarray, fraction: float = 0.1) -> float:
    """Mean of the last ceil(fraction·len) losses: "the average training loss over the last 10 %"."""
    if len(losses) == 0:
        return math.inf
    count = max(1, math.ceil(fraction * len(losses)))
    return float(np.mean(losses[-count:]))


def time_budget_loss(losses: np.ndarray, times: np.ndarray, budget: float, fraction: float = 0.1) -> float:
    """The paper's time milestone (e.g. 300 s on the noisy bowl): the mean loss of the evaluations with
    (1 − fraction)·budget < t ≤ budget; +inf (ranks last) if a loss in the budget is NaN/inf or none is in it."""
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


def _with_run_length(optimizer: str, hparams: dict | None, steps: int) -> dict:
    """`hparams` plus `total_steps=steps` for an optimizer with that option (LARS's (1 − progress)²
    decay over the run), unless `hparams` sets it."""
    return {"total_steps": steps, **(hparams or {})} if "total_steps" in lodo.options(optimizer) else dict(hparams or {})


def _build_optimizer(optimizer, hparams, params, seed, steps) -> torch.optim.Optimizer:
    if isinstance(optimizer, torch.optim.Optimizer):
        if hparams:
            raise ValueError(f"Invalid hparams: {hparams!r} (only for an optimizer given by name)")
        return optimizer
    settings = sorted({k for g in params if isinstance(g, dict) for k in g if k != "params"})
    try:
        return lodo.create(optimizer, params, seed=seed, **_with_run_length(optimizer, hparams, steps))
    except ValueError as e:
        if settings and "group" in str(e):  # the task's per-group settings (torch fills in the rest)
            raise ValueError(f"Invalid param_groups: {optimizer} cannot honour the task's per-group "
                             f"{', '.join(settings)} ({str(e).splitlines()[0]})") from None
        raise


class CheckpointError(ValueError):
    """A checkpoint that belongs to another trial or cannot be read (one-line message)."""


def _identity(x) -> str:
    """A name for the fingerprint: a string as is, a class or factory as "module:qualname", an object's type."""
    if isinstance(x, str):
        return x
    if callable(x) and hasattr(x, "__qualname__") and hasattr(x, "__module__"):
        return f"{x.__module__}:{x.__qualname__}"
    return type(x).__name__


LANE = "batched lane"  # the `form` of a batched run's per-lane checkpoint (its state is the batched program's)


def fingerprint(task, optimizer, hparams, steps, seed, task_options=None, time_limit=None, form=None,
                recipe=None) -> str:
    """What determines a trial's losses, as canonical JSON: a checkpoint resumes only its own trial.
    `form=LANE` marks a lane of a batched run, whose saved state only the batched program can continue."""
    key = {"task": _identity(task), "task_options": task_options or {}, "optimizer": _identity(optimizer),
           "hparams": hparams or {}, "steps": steps, "seed": seed, "time_limit": time_limit,
           **({"recipe": recipe} if recipe else {})}
    return json.dumps({**key, "form": form} if form else key, sort_keys=True, default=repr)


def is_lane_checkpoint(path) -> bool:
    """Whether `path` holds a batched lane's checkpoint (its fingerprint's form is LANE). A peek: tensors
    memory-mapped, nothing verified (`load_checkpoint` does that); False for no file or an unreadable one."""
    if not path or not os.path.isfile(path):
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return json.loads(state["fingerprint"]).get("form") == LANE
    except Exception:
        return False


_SAFE_LEAVES = (str, int, float, bool, type(None), torch.Tensor)


def _digest(obj, h, where: str = "state") -> None:
    """Feed `obj` to hash `h` canonically; TypeError naming the entry for what a checkpoint may not
    hold (anything but tensors, numbers, strings, None, lists, tuples and dicts)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where} has a key {k!r} of type {type(k).__name__} (keys must be str or int)")
            h.update(repr(k).encode())
            _digest(obj[k], h, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__[0]}{len(obj)}".encode())
        for i, v in enumerate(obj):
            _digest(v, h, f"{where}[{i}]")
    elif isinstance(obj, _SAFE_LEAVES):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    else:
        raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__name__}; a checkpoint holds only "
                        "tensors, numbers, strings, None, lists, tuples and dicts")


def state_digest(state: dict) -> str:
    """SHA-256 of a checkpoint's content (its "digest" entry excluded)."""
    h = hashlib.sha256()
    _digest({k: v for k, v in state.items() if k != "digest"}, h)
    return h.hexdigest()


def save_checkpoint(path, state: dict) -> None:
    """torch.save `state` and its `state_digest` to `path` atomically (temp file, fsync, os.replace).
    CheckpointError if `state` holds a type `load_checkpoint` would refuse (a Task's or optimizer's
    state_dict with, say, a numpy array: convert it with torch.from_numpy)."""
    try:
        state = {**state, "digest": state_digest(state)}
    except TypeError as e:
        raise CheckpointError(f"Invalid checkpoint state: {e}") from None
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path, expected_fingerprint: str) -> dict | None:
    """The checkpoint at `path` (None if there is none), loaded without running code from it
    (`torch.load(weights_only=True)`: tensors and plain containers only); CheckpointError (one line
    naming the file) if it cannot be read, its content does not match its digest (truncated,
    corrupted, edited) or it is another trial's."""
    if not os.path.isfile(path):
        return None
    where = repr(os.fspath(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(f"Invalid checkpoint: {where} cannot be read safely ({type(e).__name__}: {first}); "
                              "delete it to start the run over") from None
    try:
        intact = isinstance(state, dict) and state.get("digest") == state_digest(state)
    except TypeError:
        intact = False
    if not intact:
        raise CheckpointError(f"Invalid checkpoint: {where} is damaged (its content does not match its digest); "
                              "delete it to start the run over")
    if state.get("fingerprint") != expected_fingerprint:
        raise CheckpointError(f"Invalid checkpoint: {where} belongs to another trial "
                              f"({state.get('fingerprint')}; this one is {expected_fingerprint}); delete it to start over")
    return state


class _Recorder:
    """What `lanes` trials stepped together record (`run_trial`: one lane; `run_batched_trial`: P):
    each evaluation's loss, its wall time and, with `trace` on a task of TRAJECTORY_SIZE numbers in
    all, the parameters. One lane on the CPU reads each loss at once (`item()`); otherwise losses
    stay in a device buffer until `flush`, which moves them to the host and stops the lanes whose
    losses hold a NaN/inf (`running` keeps the original lane of each row still stepping). The lanes
    share one clock; a lane resumed from a checkpoint keeps its saved times and continues from its
    saved seconds (`offset`)."""

    def __init__(self, steps: int, device: torch.device, params, size: int, trace: bool, lanes: int = 1,
                 chunk: int = 102):
        """params() gives the running lanes' parameters, `size` numbers a lane (traced when
        `trace` and size == TRAJECTORY_SIZE); `chunk` rows of device buffer to start with."""
        self.steps, self.lanes, self.device, self._params = steps, lanes, device, params
        self.on_host = lanes == 1 and device.type == "cpu"
        self.losses, self.times = np.full((lanes, steps), np.nan), np.empty(steps)
        self.trajectory = np.full((lanes, steps, TRAJECTORY_SIZE), np.nan) if trace and size == TRAJECTORY_SIZE \
            else None
        self.chunk, self.chunk_rows = None, chunk  # the device buffer, made on the losses' device at the first one
        self.running = list(range(lanes))   # the original lane of each row of the batch
        self.count = self.flushed = 0       # evaluations recorded / moved to the host
        self.counts, self.stopped = [0] * lanes, [0.0] * lanes  # per lane: evaluations and seconds when it stopped
        self.offset = [0.0] * lanes         # per lane: seconds before this run (from its checkpoint)
        self.prefix: list[np.ndarray | None] = [None] * lanes  # per lane: the times saved in its checkpoint
        self.diverged = [False] * lanes
        self.kept: torch.Tensor | None = None  # after a `flush` that stopped lanes: the rows that go on
        self.start = time.perf_counter()    # evaluation i's time is times[i] = perf_counter() − start

    def clock(self, lane: int = 0) -> float:
        """Seconds lane `lane` has run, this run and before it."""
        return time.perf_counter() - self.start + self.offset[lane]

    def record(self, loss: torch.Tensor) -> None:
        """Evaluation `count`'s loss: a scalar (one lane) or one per running lane."""
        i = self.count
        if i < self.steps:
            if self.on_host:
                self.losses[0, i] = loss.item()  # no sync to wait for on the CPU
            else:
                if self.chunk is None:
                    self.chunk = torch.empty(self.chunk_rows, self.lanes, dtype=torch.float64, device=loss.device)
                elif i - self.flushed >= len(self.chunk):  # an optimizer that evaluates more often: grow
                    self.chunk = torch.cat([self.chunk, torch.empty_like(self.chunk)])
                self.chunk[i - self.flushed, :len(self.running)].copy_(loss.detach().reshape(-1))
            self.times[i] = time.perf_counter() - self.start
            if self.trajectory is not None:  # 2 numbers a lane: cheap
                self.trajectory[self.running, i] = self._params().reshape(len(self.running), -1).cpu().numpy()
            self.count = i + 1

    def flush(self, pruner=None) -> bool:
        """Move the pending losses to the host; stop the lanes that diverged in them and, with a
        `tuner.trial.prune.Pruner`, those it prunes at the points they reached (a lane pruned at a point
        is not diverged by a NaN/inf after it). `kept`: the rows that go on, None if none stopped.
        True once any lane has diverged."""
        i, j, rows = self.flushed, self.count, self.running
        if not self.on_host and j > i:
            self.losses[rows, i:j] = self.chunk[: j - i, : len(rows)].cpu().numpy().T
        now = time.perf_counter() - self.start
        for lane in rows:
            self.counts[lane], self.stopped[lane] = j, now + self.offset[lane]
        self.flushed, self.kept = j, None
        bad = ~np.isfinite(self.losses[rows, i:j]).all(axis=1)
        stop = bad.copy()
        if pruner is not None and pruner.points:
            stop[pruner.cut(self)] = True
        if stop.any():
            for row in np.flatnonzero(bad):
                if pruner is None or pruner.pruned[rows[row]] is None:
                    self.diverged[rows[row]] = True
            keep = np.flatnonzero(~stop)
            self.running = [rows[row] for row in keep]
            self.kept = torch.as_tensor(keep, device=self.device)
        return any(self.diverged)

    def stop_at(self, evaluation: int) -> None:
        """End a one-lane recording (`run_trial`) at `evaluation`: a pruned trial, not diverged by a
        NaN/inf after it."""
        self.count = self.flushed = self.counts[0] = evaluation
        self.diverged[0] = False

    def _times(self, lane: int, n: int) -> np.ndarray:
        times = self.times[:n] + self.offset[lane]
        if self.prefix[lane] is not None:
            times[: len(self.prefix[lane])] = self.prefix[lane]
        return times

    def recorded(self, lane: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(losses, times, trajectory) of `lane`, cut after the first NaN/inf loss of a diverged lane."""
        n = self.counts[lane]
        if self.diverged[lane]:
            n = int(np.argmin(np.isfinite(self.losses[lane, :n]))) + 1
        return (self.losses[lane, :n].copy(), self._times(lane, n),
                None if self.trajectory is None else self.trajectory[lane, :n].copy())

    def state_dict(self, lane: int = 0) -> dict:
        n, copy = self.count, lambda a: torch.from_numpy(np.ascontiguousarray(a[:self.count]).copy())
        return {"recorded": n, "losses": copy(self.losses[lane]), "times": copy(self._times(lane, n)),
                "elapsed": self.clock(lane),
                "trajectory": None if self.trajectory is None else copy(self.trajectory[lane])}

    def load_state_dict(self, state: dict, lane: int = 0) -> None:
        self.count = self.flushed = self.counts[lane] = n = int(state["recorded"])
        self.losses[lane, :n], self.prefix[lane] = state["losses"].numpy(), state["times"].numpy()
        if self.trajectory is not None and state.get("trajectory") is not None:
            self.trajectory[lane, :n] = state["trajectory"].numpy()
        self.offset[lane] = self.stopped[lane] = float(state["elapsed"])  # the clock continues from the checkpoint


class _Sigma:
    """σ of each running lane after every `every`-th optimizer step: `of(row)` is
    `task.hessian_error(opt.preconditioner)` for a trial of the LODO family (None: σ not recorded)."""

    def __init__(self, of, every: int | None, lanes: int = 1):
        self.of = of if every else None
        self.every = every
        self.steps = 0                          # optimizer steps so far
        self.next = every if self.of else 0     # the optimizer step of the next σ (0: never)
        self.values: list[list[tuple[int, float]]] = [[] for _ in range(lanes)]  # per lane: (evaluations, σ)

    def after_step(self, evaluations: int, running=(0,)) -> None:
        self.steps += 1
        if self.steps == self.next:  # the only per-step cost of σ: one integer comparison
            for row, lane in enumerate(running):
                self.values[lane].append((evaluations, self.of(row)))
            self.next += self.every

    def result(self, evaluations: int, lane: int = 0) -> np.ndarray | None:
        """The (evaluations, σ) rows up to `evaluations`; None when σ is not recorded."""
        rows = [(i, v) for i, v in self.values[lane] if i <= evaluations]
        return np.array(rows, dtype=float).reshape(-1, 2) if self.of is not None else None

    def state_dict(self, lane: int = 0) -> dict:
        return {"optimizer_steps": self.steps,
                "sigma": torch.tensor(self.values[lane], dtype=torch.float64).reshape(-1, 2)}

    def load_state_dict(self, state: dict, lane: int = 0) -> None:
        self.steps = int(state.get("optimizer_steps", state["recorded"]))
        self.values[lane] = [(int(i), float(v)) for i, v in state.get("sigma", torch.empty(0, 2)).tolist()]
        if self.next:
            self.next = (self.steps // self.every + 1) * self.every


class _Checkpointer:
    """Saves each running lane's {fingerprint, task, optimizer, recorder, σ} to its path at most every
    `every_s` seconds (see the module docstring), and restores lanes from them. `lane_state(row)` is
    (task state, optimizer state) of a row: the whole task's and optimizer's for `run_trial`, one
    lane's (`lane_state`) for a batch. A lane without a path saves nothing."""


    def __init__(self, paths, keys, every_s: float, lane_state, load_lane, recorder: _Recorder, sigma: _Sigma):
        self.paths, self.keys, self.every_s = list(paths), list(keys), every_s
        self.lane_state, self.load_lane, self.parts = lane_state, load_lane, (recorder, sigma)
        self.saved_at = time.perf_counter()

    def restore(self, lane: int = 0, saved: dict | None = None) -> None:
        """Continue `lane` from its checkpoint: `saved` when the caller loaded it already, else its
        file if there is one. `load_lane(lane, task state, optimizer state)` sets the states."""
        saved = saved or (self.paths[lane] and load_checkpoint(self.paths[lane], self.keys[lane]))
        if saved:
            self.load_lane(lane, saved["task"], saved["optimizer"])
            for part in self.parts:
                part.load_state_dict(saved, lane)
        self.saved_at = time.perf_counter()

    def maybe_save(self) -> None:
        """Save if `every_s` seconds have passed since the last save; call between optimizer steps."""
        if any(self.paths) and time.perf_counter() - self.saved_at >= self.every_s:
            for row, lane in enumerate(self.parts[0].running):
                if self.paths[lane]:
                    task_state, opt_state = self.lane_state(row)
                    state = {"fingerprint": self.keys[lane], "task": task_state, "optimizer": opt_state}
                    for part in self.parts:
                        state.update(part.state_dict(lane))
                    save_checkpoint(self.paths[lane], state)
            self.saved_at = time.perf_counter()


def _sigma_of(task, opt):
    """σ of a trial's preconditioner (`task.hessian_error`), for the LODO family on a task that has it."""
    of = getattr(task, "hessian_error", None)
    return (lambda row: of(opt.preconditioner)) if of is not None and hasattr(opt, "preconditioner") else None


def run_trial(task, optimizer, hparams: dict | None, steps: int, seed: int, task_options: dict | None = None,
              device="cpu", time_limit: float | None = None, check_every: int = 100, checkpoint=None,
              checkpoint_every_s: float = 300, observe_every: int | None = None, evaluate: bool = False,
              recipe: dict | None = None, prune=()) -> TrialResult:
    """Train `optimizer` on `task` for `steps` evaluations and record each evaluation's loss.

    Long: the loop reads top to bottom in one place, as nanoGPT's training loop does; half of it is this docstring.

    task: a name (built with `tasks.create(task, seed=seed, device=device, **task_options)`) or a Task.
    optimizer: a registry name (built with `lodo.create(optimizer, task.parameters(), seed=seed,
        **hparams)`) or a ready `torch.optim.Optimizer` over the task's parameters (hparams empty).
    time_limit: optional wall seconds; the run also stops once that much time has passed, and its
        final_loss is then the mean over the last 10 % of the time budget (`time_budget_loss`).
    final_loss: the mean over the task's report window or the last 10 % (`report_loss`); +inf if diverged.
    checkpoint: optional file path; save every `checkpoint_every_s` seconds (checked every
        `check_every` evaluations, between optimizer steps) and resume from it when it exists.
    observe_every: optional K; record σ every K optimizer steps (`sigma`) and, for a 2-number
        task, the parameters at every evaluation (`trajectory`) — see the module docstring.
    evaluate: record `task.evaluate()` (held-out metrics) at the end as `held_out` (not if diverged).
    recipe: the schedule's recipe for the optimizer (`tuner.trial.recipe`: lr schedule, clipping; its tuned
        values are in `hparams`); the task's `param_groups()` and the optimizer's train()/eval()
        modes (eval() around `task.evaluate()`) apply with or without one.
    prune: ((evaluation e, threshold or None), ...): the running loss at each e is recorded
        (`running`), and a trial whose running loss exceeds a threshold stops there (`tuner.trial.prune`).
    """
    positive_int("steps", steps)
    positive_int("check_every", check_every)
    positive_int("observe_every", observe_every, optional=True)
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"Invalid time_limit: {time_limit!r} (must be > 0)")
    if not checkpoint_every_s >= 0:
        raise ValueError(f"Invalid checkpoint_every_s: {checkpoint_every_s!r} (must be >= 0)")
    key = fingerprint(task, optimizer, hparams, steps, seed, task_options, time_limit, recipe=recipe) \
        if checkpoint else None
    task = _build_task(task, seed, task_options, device)
    hparams, recipe = recipes.split(recipe, hparams)
    params = list(task.parameters())
    opt = _build_optimizer(optimizer, hparams, recipes.param_groups(task, optimizer, params), seed, steps)
    create_graph = getattr(opt, "create_graph", False)
    loop = recipes.Loop(recipe, opt, params, steps, create_graph)
    recorder = _Recorder(steps, task.device, lambda: torch.cat([p.detach().reshape(-1) for p in params]),
                         sum(p.numel() for p in params), trace=observe_every is not None)
    sigma = _Sigma(_sigma_of(task, opt), observe_every)
    checkpointer = _Checkpointer([checkpoint], [key], checkpoint_every_s,
                                 lambda row: (task.state_dict(), opt.state_dict()),
                                 lambda lane, t, o: (task.load_state_dict(t), opt.load_state_dict(o)), recorder, sigma)
    if loop.saves:
        checkpointer.parts += (loop,)
    checkpointer.restore()
    pruner = pruning.Pruner(prune)

    def closure():
        opt.zero_grad()
        loss = task.loss(batch)
        loss.backward(create_graph=create_graph)
        loop.after_backward()
        recorder.record(loss)
        return loss

    with warnings.catch_warnings():
        if create_graph:  # the reference cycle torch warns about is broken by every evaluation's zero_grad
            warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True")
        while recorder.count < steps:
            batch = task.sample()
            try:
                opt.step(closure)
            except (RuntimeError, ValueError):  # e.g. a factorisation failing on NaNs: divergence, not a bug
                if recorder.flush():
                    break
                raise
            sigma.after_step(recorder.count)
            loop.after_step(recorder.count)
            if pruner.due(recorder.count) and pruner.stops(recorder):
                break
            if recorder.count - recorder.flushed >= check_every:  # a check
                if recorder.flush():
                    break
                if recorder.count < steps:
                    checkpointer.maybe_save()
            if time_limit is not None and recorder.clock() >= time_limit:
                break
        diverged = recorder.flush()
    seconds = recorder.clock()
    if create_graph:  # a gradient with a graph holds a reference cycle to its parameter
        opt.zero_grad(set_to_none=True)

    losses, times, trajectory = recorder.recorded()
    if evaluate and not diverged:
        with recipes.evaluation(opt):  # a schedule-free or averaging optimizer's evaluation weights
            held_out = {k: float(v) for k, v in task.evaluate().items()}
    else:
        held_out = None
    if diverged or pruner.pruned[0] is not None:
        final_loss = math.inf
    elif time_limit is not None and recorder.count < steps:
        final_loss = time_budget_loss(losses, times, time_limit)
    else:
        final_loss = report_loss(task, losses)
    return TrialResult(losses=losses, times=times, final_loss=final_loss, seconds=seconds,
                       steps_per_second=recorder.count / seconds if seconds > 0 else math.inf,
                       diverged=diverged, sigma=sigma.result(len(losses)), trajectory=trajectory,
                       held_out=held_out, **pruner.result())


# ---------------------------------------------------------------------------- batched trials (issue 15)
def supports_batched(task, optimizer) -> bool:
    """True if (task, optimizer), given by name, has a batched form (tasks/batched.py, lodo/batched.py)."""
    return isinstance(task, str) and isinstance(optimizer, str) and task in tasks.batched.available() \
        and optimizer in lodo.batched.available()


def batchable(job: Job) -> bool:
    """Whether `job` may run as a lane of a `BatchJob`: its (task, optimizer) has a batched form and,
    for a full run, it has no time milestone (Table 1's time milestone is the loss after the wall
    time of a single unbatched run: such runs keep `run_trial`) and no unbatched run's checkpoint to
    continue from (an unbatched run interrupted earlier continues unbatched; a batched lane's
    checkpoint, `is_lane_checkpoint`, continues batched)."""
    if not supports_batched(job.task, job.optimizer) or job.metric is not None or job.recipe:  # a recipe runs unbatched
        return False
    if job.kind != "full":
        return True
    return job.time_limit is None and not (job.checkpoint and os.path.exists(job.checkpoint)
                                           and not is_lane_checkpoint(job.checkpoint))


def run_batched_trial(task_name: str, optimizer_name: str, hparams_list: list[dict], steps: int,
                      seeds: list[int], task_options: dict | None = None, device="cpu",
                      check_every: int = 100, observe_every: int | None = None,
                      checkpoints: list | None = None, checkpoint_every_s: float = 300, prune=()) -> list[TrialResult]:
    """Run len(seeds) trials of `optimizer_name` on `task_name` as one program; one TrialResult per lane.

    Long: its docstring states the lanes' contract (what is bit for bit, checkpoints, times); the body is short.

    Lane i is `run_trial(task_name, optimizer_name, hparams_list[i], steps, seeds[i], task_options,
    observe_every=observe_every)`: the same losses (the first-order updates round as torch's, so on the
    bowl a lane's losses differ only by the closed-form gradient's rounding, ~1e-15 relative, L-BFGS
    ~1e-7; RMSprop and L2LBGDBGD, chaotic in their gradients, bit for bit), the same divergence rule,
    fitness, σ and trajectory. A lane's numbers do not depend on
    the other lanes of its batch, bit for bit (tests/test_population.py). The loop is run_trial's,
    with (P,) losses::

        for each optimizer step:
            task.sample()                          # every lane's next noise sample
            opt.step(x, closure)                   # closure: (P,) losses and (P, n) gradients, recorded

    Losses go to a device buffer and reach the host every `check_every` evaluations; at that check a
    lane whose losses hold a NaN/inf is dropped from the batch (`keep`): its losses end with the
    first non-finite one, its final_loss is +inf, and the other lanes carry on with less work.
    Observers (`observe_every=K`): σ of each lane after every K-th optimizer step, for a task with
    `hessian_error` and an optimizer with `lane_preconditioner` (LODO on the bowl), and the
    parameters at every evaluation on a task of TRAJECTORY_SIZE numbers (Rosenbrock).

    Checkpoints (`checkpoints`: a path or None per lane): at a check at least `checkpoint_every_s`
    seconds after the last save, every running lane with a path saves its own checkpoint, as
    `run_trial` does (`save_checkpoint`: atomic, with its digest), of that lane alone: its task and
    optimizer state (`lane_state`), what it recorded, its elapsed seconds, σ, and its fingerprint
    (`form=LANE`: the batched program's state, which `run_trial` refuses as another trial's). On
    start every lane's checkpoint is loaded first (`load_checkpoint`: a damaged or foreign one raises
    CheckpointError before any work) and the lanes are grouped by the point they resume from (fresh
    lanes at 0): each group runs as its own batch, one after the other, so every lane continues
    exactly as if never interrupted (a lane's numbers do not depend on its batch). A diverged lane
    saves nothing after its last check, so a resumed one diverges again, at the same evaluation.

    Times: the lanes of a group share one clock. `times[i]` of a lane is when evaluation i of the
    batch was recorded (queued, on an accelerator), in seconds since the batched run's start plus
    the lane's elapsed seconds at its checkpoint; `seconds` is when the lane stopped (the end, or
    the check that dropped it) and `steps_per_second` its recorded evaluations over that, so a
    lane's rate is the batch's rate, not P times it. There is no time_limit.

    Prune points (`prune`, as `run_trial`'s, one for all lanes): at each check, a lane's running loss
    at every point its losses reached is taken from its first e losses, so a lane records, and is
    pruned at, exactly what `run_trial` would (its losses end at e; it ran on to the check).
    """
    positive_int("steps", steps)
    positive_int("check_every", check_every)
    positive_int("observe_every", observe_every, optional=True)
    if not checkpoint_every_s >= 0:
        raise ValueError(f"Invalid checkpoint_every_s: {checkpoint_every_s!r} (must be >= 0)")
    if len(hparams_list) != len(seeds):
        raise ValueError(f"Invalid hparams_list: {len(hparams_list)} entries for {len(seeds)} seeds (must be equal)")
    paths = list(checkpoints) if checkpoints is not None else [None] * len(seeds)
    if len(paths) != len(seeds):
        raise ValueError(f"Invalid checkpoints: {len(paths)} entries for {len(seeds)} seeds (must be equal)")
    if not supports_batched(task_name, optimizer_name):
        raise ValueError(f"Invalid task/optimizer: {task_name!r}/{optimizer_name!r} has no batched form")
    hparams_list = [dict(h or {}) for h in hparams_list]
    keys = [fingerprint(task_name, optimizer_name, h, steps, s, task_options, form=LANE) if p else None
            for h, s, p in zip(hparams_list, seeds, paths)]
    saved = [load_checkpoint(p, k) if p else None for p, k in zip(paths, keys)]  # all refusals before any work
    groups: dict[tuple[int, int], list[int]] = {}
    for lane, state in enumerate(saved):
        at = (int(state["recorded"]), int(state["optimizer_steps"])) if state else (0, 0)
        groups.setdefault(at, []).append(lane)
    results: list[TrialResult | None] = [None] * len(seeds)
    for members in groups.values():
        pick = lambda values: [values[lane] for lane in members]  # noqa: E731
        for lane, res in zip(members, _run_lanes(task_name, optimizer_name, pick(hparams_list), steps, pick(seeds),
                                                 task_options, device, check_every, observe_every,
                                                 pick(paths), pick(keys), pick(saved), checkpoint_every_s,
                                                 prune)):
            results[lane] = res
    return results


def _run_lanes(task_name, optimizer_name, hparams_list, steps, seeds, task_options, device, check_every,
               observe_every, paths, keys, saved, every_s, prune=()) -> list[TrialResult]:
    """`run_batched_trial` for lanes that all start at one point: step 0, or the same (evaluations,
    optimizer steps) of their checkpoints `saved`. The loop is `run_trial`'s, with the same
    recorder, σ and checkpointer over P lanes; a check that finds a lane diverged drops it
    from the task and the optimizer (`keep`), and the others carry on."""
    task = tasks.batched.create(task_name, seeds, device=device, **(task_options or {}))
    opt = lodo.batched.create(optimizer_name, task.x, hparams_list, seeds)
    task.exact_gradients = lodo.batched.exact_gradients(optimizer_name)
    lanes = len(seeds)
    recorder = _Recorder(steps, task.device, lambda: task.x, task.x.shape[1], trace=observe_every is not None,
                         lanes=lanes, chunk=check_every + 2)  # + L-BFGS's overshoot
    of = task.hessian_error if hasattr(task, "hessian_error") and hasattr(opt, "lane_preconditioner") else None
    sigma = _Sigma(of and (lambda row: of(row, opt.lane_preconditioner(row))), observe_every, lanes)
    checkpointer = _Checkpointer(paths, keys, every_s, lambda row: (task.lane_state(row), opt.lane_state(row)),
                                 lambda lane, t, o: (task.load_lane_state(lane, t), opt.load_lane_state(lane, o)),
                                 recorder, sigma)
    pruner = pruning.Pruner(prune, lanes)
    for lane, state in enumerate(saved):
        if state:
            checkpointer.restore(lane, state)

    def closure():
        loss, grad = task.loss_and_grad()
        recorder.record(loss)
        return loss, grad

    with STEP_MODE():
        while recorder.count < steps and recorder.running:
            task.sample()
            opt.step(task.x, closure)
            sigma.after_step(recorder.count, recorder.running)
            if recorder.count - recorder.flushed >= check_every:  # a check
                recorder.flush(pruner)
                if recorder.kept is not None and recorder.running:
                    task.keep(recorder.kept)
                    opt.keep(recorder.kept)
                if recorder.running and recorder.count < steps:
                    checkpointer.maybe_save()
        if recorder.running and recorder.count > recorder.flushed:
            recorder.flush(pruner)

    results = []
    for lane in range(lanes):
        losses, times, trajectory = recorder.recorded(lane)
        seconds = recorder.stopped[lane]
        stopped_early = recorder.diverged[lane] or pruner.pruned[lane] is not None
        results.append(TrialResult(
            losses=losses, times=times, final_loss=math.inf if stopped_early else report_loss(task, losses),
            seconds=seconds, steps_per_second=recorder.counts[lane] / seconds if seconds > 0 else math.inf,
            diverged=recorder.diverged[lane], sigma=sigma.result(len(losses), lane), trajectory=trajectory,
            **pruner.result(lane)))
    return results


def decimate(losses: np.ndarray, times: np.ndarray, points: int = CURVE_POINTS) -> dict:
    """The curve as ≤ `points` bucket means: {"step": last step of bucket, "loss", "time"}."""
    losses = np.asarray(losses, dtype=float)
    n = len(losses)
    if n == 0:
        return {"step": [], "loss": [], "time": []}
    edges = np.unique(np.linspace(0, n, min(points, n) + 1).round().astype(int))
    with np.errstate(all="ignore"):
        loss = [float(np.mean(losses[a:b])) for a, b in zip(edges[:-1], edges[1:])]
    time_ = [float(times[b - 1]) if len(times) >= b else float("nan") for b in edges[1:]]
    return {"step": [int(b) for b in edges[1:]], "loss": loss, "time": time_}


def observations(res) -> dict:
    """A full run's observers for its record: σ ({"step", "value"}, ≤ SIGMA_POINTS points, evenly
    thinned) and the trajectory ([[x, y], ...] per evaluation), each only when the trial recorded it."""
    out = {}
    sigma, trajectory = getattr(res, "sigma", None), getattr(res, "trajectory", None)
    if sigma is not None:
        sigma = sigma[np.unique(np.linspace(0, len(sigma) - 1, SIGMA_POINTS).round().astype(int))] \
            if len(sigma) > SIGMA_POINTS else sigma
        out["sigma"] = {"step": [int(i) for i in sigma[:, 0]], "value": [float(v) for v in sigma[:, 1]]}
    if trajectory is not None:
        out["trajectory"] = [[float(x) for x in row] for row in trajectory]
    return out


def _builtin(task) -> bool:
    """A paper task: its held-out evaluation is not run after full runs (image_generation's validation
    NLL costs 784 forward passes per image); a user task's `evaluate()` is recorded as `held_out`."""
    return isinstance(task, str) and task in tasks.available()



def _environmental(error: BaseException, start: float) -> dict:
    """A result the environment failed (out of memory): the executor retries it, never a fitness."""
    return {"environmental": {"error": type(error).__name__, "message": str(error)},
            "seconds": time.perf_counter() - start, "pid": os.getpid()}


def _failed(error: BaseException, start: float) -> dict:
    """A result that raised (call from an except block): its traceback; a refused checkpoint is kept
    for the user to decide (`keep_checkpoint`)."""
    out = {"error": traceback.format_exc(), "seconds": time.perf_counter() - start, "pid": os.getpid(),
           "keep_checkpoint": isinstance(error, CheckpointError)}
    if isinstance(error, CheckpointError):
        out["checkpoint_error"] = str(error)
    return out

def run_job(job: Job, device: str = "cpu", checkpoint_every_s: float = 300) -> dict:
    """Run one job in this process and summarise it (what an actor sends back).

    A full run records σ and the trajectory (`observe_every_for(steps)`, `observations`). With a time
    milestone T it must reach both milestones: if its `steps` evaluations took less than T, a second
    run with the same seed (so the same trajectory) continues until T with a step cap of 1.5× the
    measured rate (doubled and rerun if hit before T); the time milestone is the mean over its last
    10 % of T. Only the step run is checkpointed (at `job.checkpoint`, if any; several machines need
    shared storage); a full run whose checkpoint a batched lane wrote (`is_lane_checkpoint`) continues
    as a one-lane batched trial, the only form that can. A raising job returns {"error": traceback, "seconds", "pid", "keep_checkpoint"}:
    keep_checkpoint is True iff the checkpoint was refused (another trial's, damaged, or a state it
    cannot hold: `checkpoint_error`, one line), so the caller must leave it. Out of memory (torch.OutOfMemoryError, MemoryError) is the environment's failure, not the job's:
    it returns {"environmental": {"error", "message"}, ...}, which the executor retries. (On the CPU
    an over-committed node's kernel kills the worker instead, which the executor sees as a death.)
    """
    if isinstance(job, BatchJob):
        return run_batch_job(job, device, checkpoint_every_s)
    if job.kind == "full" and job.time_limit is None and supports_batched(job.task, job.optimizer) \
            and is_lane_checkpoint(job.checkpoint):  # a batched lane interrupted earlier: it continues batched
        return _run_lane_alone(job, device, checkpoint_every_s)
    start = time.perf_counter()
    full = job.kind == "full"
    try:
        kwargs = dict(task_options=dict(job.task_options), device=device)
        saving = dict(checkpoint=job.checkpoint, checkpoint_every_s=checkpoint_every_s) if job.checkpoint else {}
        res = run_trial(job.task, job.optimizer, dict(job.hparams), job.steps, job.seed, **kwargs, **saving,
                        observe_every=observe_every_for(job.steps) if full else None,
                        evaluate=(full and not _builtin(job.task)) or job.metric is not None,
                        recipe=job.recipe, prune=job.prune)
        if job.metric is not None and res.held_out is not None and job.metric not in res.held_out:
            raise ValueError(f"Invalid objective.metric: {job.metric!r} is not a metric of the task's evaluate() "
                             f"(it returned: {', '.join(res.held_out) or 'nothing'})")
        timed = res
        if full and job.time_limit is not None and not res.diverged and res.seconds < job.time_limit:
            cap = max(job.steps, math.ceil(1.5 * len(res.losses) * job.time_limit / max(res.seconds, 1e-9)))
            hparams = _with_run_length(job.optimizer, job.hparams, job.steps)  # LARS: the step run's decay
            for _ in range(4):  # the rate estimate was too low if the cap is hit before T: double it
                timed = run_trial(job.task, job.optimizer, hparams, cap, job.seed, time_limit=job.time_limit,
                                  recipe=job.recipe, **kwargs)
                if timed.diverged or len(timed.losses) < cap:
                    break
                cap *= 2
    except (torch.OutOfMemoryError, MemoryError) as e:  # the node's memory, not the hyperparameters
        return _environmental(e, start)
    except Exception as e:
        return _failed(e, start)
    out = {"final_loss": math.inf if res.diverged else float(res.final_loss), "diverged": bool(res.diverged),
           "seconds": time.perf_counter() - start, "trial_seconds": float(res.seconds),
           "steps_per_second": float(res.steps_per_second), "evaluations": int(len(res.losses)),
           "curve": decimate(res.losses, res.times), "pid": os.getpid(), **pruning.summary(res)}
    if full:
        out.update(observations(res))
    if res.held_out and (full or job.metric is not None):  # evaluate() after the step run: the objective's metric
        out["held_out"] = res.held_out if full else {job.metric: res.held_out[job.metric]}
    if full and job.time_limit is not None:
        out["time_loss"] = math.inf if timed.diverged else time_budget_loss(timed.losses, timed.times, job.time_limit)
        out["time_evaluations"] = int(np.sum(timed.times <= job.time_limit))
    return out


def run_batch_job(batch: BatchJob, device: str = "cpu", checkpoint_every_s: float = 300) -> dict:
    """Run a `BatchJob` as one `run_batched_trial` (full runs with σ/trajectory, each lane checkpointed
    to its job's `checkpoint` every `checkpoint_every_s` seconds and continued from it) and summarise
    each lane as `run_job` would: {"batch": [result per job], "seconds", "pid"}. A lane's "seconds" is
    its share of the batch (batch seconds / lanes, so that the executor's compute seconds add up),
    its "lanes" the batch's size. A refused lane checkpoint (damaged, another trial's) fails the batch
    as a whole before any work, with "keep_checkpoint" as `run_job` says it. If the batched program
    raises otherwise (e.g. one lane's hyperparameters are invalid), every job runs on its own instead
    (`run_job`), so errors stay per job, as without batching."""
    start, jobs, first = time.perf_counter(), batch.jobs, batch.jobs[0]
    full = first.kind == "full"
    try:
        results = run_batched_trial(first.task, first.optimizer, [dict(j.hparams) for j in jobs], first.steps,
                                    [j.seed for j in jobs], task_options=dict(first.task_options), device=device,
                                    observe_every=observe_every_for(first.steps) if full else None,
                                    checkpoints=[j.checkpoint for j in jobs] if full else None,
                                    checkpoint_every_s=checkpoint_every_s, prune=first.prune)
    except (torch.OutOfMemoryError, MemoryError) as e:  # the environment's: the executor retries the batch
        return _environmental(e, start)
    except CheckpointError as e:  # the user decides (as run_job): every lane's checkpoint stays
        return _failed(e, start)
    except Exception:
        reason = traceback.format_exc().strip().splitlines()[-1]
        out = [dict(run_job(job, device, checkpoint_every_s), batch_error=reason) for job in jobs]
        lost = next((lane["environmental"] for lane in out if "environmental" in lane), None)
        if lost is not None:  # one lane ran out of memory on its own too: retry the batch as a whole
            return {"environmental": lost, "seconds": time.perf_counter() - start, "pid": os.getpid()}
        return {"batch": out, "seconds": time.perf_counter() - start, "pid": os.getpid()}
    seconds = time.perf_counter() - start
    return {"batch": [_lane_summary(res, seconds / len(jobs), len(jobs), full) for res in results],
            "seconds": seconds, "pid": os.getpid()}


def _lane_summary(res: TrialResult, seconds: float, lanes: int, full: bool) -> dict:
    """One lane's result, as `run_job` summarises a trial, with its share of the batch's seconds."""
    lane = {"final_loss": math.inf if res.diverged else float(res.final_loss), "diverged": bool(res.diverged),
            "seconds": seconds, "trial_seconds": float(res.seconds),
            "steps_per_second": float(res.steps_per_second), "evaluations": int(len(res.losses)),
            "curve": decimate(res.losses, res.times), "pid": os.getpid(), "lanes": lanes, **pruning.summary(res)}
    if full:
        lane.update(observations(res))
    return lane


def _run_lane_alone(job: Job, device: str, checkpoint_every_s: float) -> dict:
    """A full run whose checkpoint is a batched lane's (`is_lane_checkpoint`) run where only that form
    continues it, as a batched trial of one lane; summarised and failing as `run_job` does."""
    start = time.perf_counter()
    try:
        [res] = run_batched_trial(job.task, job.optimizer, [dict(job.hparams)], job.steps, [job.seed],
                                  task_options=dict(job.task_options), device=device,
                                  observe_every=observe_every_for(job.steps), checkpoints=[job.checkpoint],
                                  checkpoint_every_s=checkpoint_every_s)
    except (torch.OutOfMemoryError, MemoryError) as e:  # the node's memory, not the hyperparameters
        return _environmental(e, start)
    except Exception as e:
        return _failed(e, start)
    return _lane_summary(res, time.perf_counter() - start, 1, True)
