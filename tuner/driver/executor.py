"""Ray execution: a pool of long-lived trial actors fed by a cheap `ray.wait` loop.

Why not one Ray task (or Tune trial) per individual: a noisy-bowl individual of 1000 steps takes
well under a second, about what Tune spends per trial. Long-lived actors (one per worker slot,
declaring `num_cpus`/`num_gpus`, fractions allowed) keep torch imported and warm; the driver keeps
up to `queue_depth` calls queued on each actor so none idles between individuals, and actors send
back only summaries (fitness, seconds, a decimated curve), never 100k raw losses. A long job (at
least `LONG_JOB` individual-steps: a batched chunk, a full run) goes only to an idle actor: queued
behind another long job it would wait minutes while another worker frees up (measured on the main
job, benchmarks/RESULTS.md), and a round trip between long jobs costs nothing. Queued full runs go
longest first (Graham's LPT rule), their length estimated from the seconds per lane-step each
(task, optimizer) has taken so far (`Costs`; never measured: first), so an expensive optimizer's
full runs are not what the run waits for at the end while the other workers idle.

Failures come in two kinds, told apart by exception type, never by message:
- the individual's own: its task or optimizer raised, or its loss went NaN/inf. Not retried; the
  traceback comes back as the result's ``error`` and the caller ranks it last.
- the environment's (`environmental_errors`: the worker, its actor or its node died or is
  unreachable, Ray's memory monitor or the kernel killed it, an object was lost; torch's
  OutOfMemoryError or a MemoryError inside the trial, which `run_job` reports as
  ``environmental``). Never a result: the job is run again, on any live worker, after a back-off
  of `backoff_s` · 2^(k−1) seconds (capped at `backoff_max_s`) for its k-th failure. Actors restart
  when their process dies (`max_restarts=-1`); one that failed gets no job until a `ready` probe
  answers. After `max_attempts` (20) failures of one job, or `stall_s` (600 s) with jobs waiting
  and no live worker, `run` raises `PersistentFailure` naming the job and the cause; what finished
  before is the caller's (recorded as it came). Every retry is counted (`retries`, `retry_causes`)
  and listed in the job's result (``retries``: [{"error": type, "message": first line}]).

Memory: each actor declares `memory_per_trial` bytes as Ray's `memory` resource (see
`tuner.driver.memory`), so Ray places no more trials on a node than its memory holds. What an actor runs,
and what it sends back, is `tuner.trial.loop.run_job`.
"""
from __future__ import annotations

import collections
import contextlib
import heapq
import logging
import math
import os
import sys
import threading
import time
import _thread
from typing import Callable, Iterable

import torch

import lodo
from tuner.trial.loop import Job, run_job

logger = logging.getLogger(__name__)

# `ray` is imported inside the functions that use it: `init_ray` sets RAY_AUTH_MODE before the first import.
MAX_ATTEMPTS = 20      # environmental failures of one job before the run stops
JOIN_TIMEOUT_S = 60.0  # joining a cluster at --address (a live one answers in seconds)
BACKOFF_S, BACKOFF_MAX_S = 0.5, 30.0
STALL_S = 600.0        # jobs waiting and no live worker for this long: the run stops


def environmental_errors() -> tuple[type, ...]:
    """The Ray exceptions that say the environment failed, not the trial (a `RayTaskError`, Ray's
    wrapper of a raising call, is not among them: `run_job` catches the trial's own exceptions)."""
    from ray import exceptions as e

    return (e.RayActorError, e.WorkerCrashedError, e.LocalRayletDiedError, e.NodeDiedError, e.OutOfMemoryError,
            e.ObjectLostError, e.ObjectStoreFullError, e.OutOfDiskError, e.RaySystemError)


class PersistentFailure(RuntimeError):
    """An environmental failure that outlasted the retries: `.job`, `.causes` (one dict per failure)."""

    def __init__(self, job: Job, causes: list[dict], why: str):
        self.job, self.causes = job, causes
        last = causes[-1] if causes else {"error": "none", "message": ""}
        super().__init__(f"{job.describe()}: {why} (last: {last['error']}: {last['message']})")


def _cause(error: str, message: str, actor: int | None = None) -> dict:
    line = next((ln.strip() for ln in str(message).splitlines() if ln.strip()), "")
    return {"error": error, "message": line[:300], **({"worker": actor} if actor is not None else {})}


def _worker_class():
    import ray

    class TrialWorker:
        """One worker slot: torch and BLAS pinned to this slot's CPUs."""

        def __init__(self, threads: int, device: str, optimizer_specs=(), cwd: str | None = None):
            if cwd:  # the driver's working directory (`init_ray` started Ray from ours): a task's relative paths
                with contextlib.suppress(OSError):  # a node without that folder keeps Ray's
                    os.chdir(cwd)
            torch.set_num_threads(threads)
            self.device = device
            if optimizer_specs:  # the schedule's own optimizers (lodo.register is per process)
                for spec in optimizer_specs:
                    lodo.register(spec)

        def ready(self) -> int:
            return os.getpid()

        def whoami(self) -> dict:
            return {"pid": os.getpid(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    "threads": torch.get_num_threads()}

        def run(self, job: Job) -> dict:
            return run_job(job, self.device)

    return ray.remote(TrialWorker)


def _join(ray, address: str, kw: dict) -> None:
    """`ray.init(address=...)` within `JOIN_TIMEOUT_S`: an address that accepts connections but is no
    Ray cluster keeps Ray's start waiting for minutes, and refuses to join are one line
    (`PlanError("resources.address")`), not a traceback. Ray's waits are in C, so the timer's interrupt
    lands when one of them returns (tens of seconds later at most); a Ctrl-C stays the user's."""
    from tuner.driver.plan import PlanError

    fired, guard, waiting = threading.Event(), threading.Lock(), [True]

    def interrupt():
        with guard:  # never once ray.init has returned: the interrupt then lands inside the try below
            if waiting[0]:
                fired.set()
                _thread.interrupt_main()

    timer = threading.Timer(JOIN_TIMEOUT_S, interrupt)
    timer.daemon = True
    timer.start()
    try:
        ray.init(address=address, **kw)
        with guard:
            waiting[0] = False
    except KeyboardInterrupt:
        if not fired.is_set():
            raise
        ray.shutdown()
        raise PlanError("resources.address", f"{address[:80]!r}: Ray could not join a cluster there within "
                                             f"{JOIN_TIMEOUT_S:g} s") from None
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        ray.shutdown()
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise PlanError("resources.address", f"{address[:80]!r}: Ray could not join it ({type(e).__name__}: {first})") from None
    finally:
        timer.cancel()


def init_ray(address: str | None = None, workers: int | None = None, cpus_per_trial: float = 1,
             num_gpus: int | None = None, runtime_env: dict | None = None) -> bool:
    """Join `address` or start a local Ray with `workers` × `cpus_per_trial` CPUs (default: all cores);
    False if Ray was already running. A local Ray gets RAY_AUTH_MODE=token unless set: Ray's default,
    chosen explicitly so that Ray does not warn. Ray reads it on its first import: call this before that.
    `runtime_env` (a user task's `TaskSpec.runtime_env`, local py_modules) is the job's: Ray takes local
    paths only in `ray.init`. A Ray already running keeps its own (start it with this runtime_env)."""
    if not (address or os.environ.get("RAY_ADDRESS")) and "ray" not in sys.modules:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if ray.is_initialized():
        return False
    kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if runtime_env:
        kw["runtime_env"] = runtime_env
    with _started_from(_HOME):
        if address:
            _join(ray, address, kw)
        else:
            cpus = os.cpu_count() if workers is None else max(1, math.ceil(workers * cpus_per_trial))
            ray.init(address="local", num_cpus=cpus, num_gpus=num_gpus, **kw)  # a new local Ray, never a stray one
    return True


# The folder holding our packages (the repository of an editable install, else site-packages).
_HOME = os.path.dirname(os.path.dirname(os.path.abspath(lodo.__file__)))


@contextlib.contextmanager
def _started_from(folder: str):
    """Run the block (`ray.init`) with `folder` as the working directory. Ray puts the driver's working
    directory first on every worker's sys.path, so a user's folder holding a `tasks.py`, `tuner.py`,
    `lodo.py`, `cli.py` or `schedules/` would shadow ours in the workers (docs/tasks.md); ours
    cannot. The actors change back to the driver's (`Executor.start` hands it over)."""
    try:
        here = os.getcwd()
    except OSError:  # the working directory was deleted: nothing to shadow or to return to
        yield
        return
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)


class Executor:
    """A pool of trial actors. `run(jobs, on_result)` may be fed new jobs from `on_result`.
    `on_event(event)`, when set, is told each resubmission: {"event": "retry", "job": job.key,
    "attempt": the next attempt, "cause": "RayActorError: ..."} (also logged by this module)."""

    on_event: Callable[[dict], None] | None = None

    def __init__(self, workers: int | None = None, cpus_per_trial: float = 1, gpus_per_trial: float = 0,
                 device: str = "cpu", queue_depth: int = 2, max_attempts: int = MAX_ATTEMPTS,
                 memory_per_trial: int | None = None, backoff_s: float = BACKOFF_S,
                 backoff_max_s: float = BACKOFF_MAX_S, stall_s: float = STALL_S, optimizer_specs=()):
        if cpus_per_trial <= 0:
            raise ValueError(f"Invalid cpus_per_trial: {cpus_per_trial} (must be > 0)")
        if gpus_per_trial < 0:
            raise ValueError(f"Invalid gpus_per_trial: {gpus_per_trial} (must be >= 0)")
        if workers is not None and workers < 1:
            raise ValueError(f"Invalid workers: {workers} (must be >= 1)")
        if memory_per_trial is not None and memory_per_trial <= 0:
            raise ValueError(f"Invalid memory_per_trial: {memory_per_trial} (must be > 0 bytes or None)")
        self.cpus_per_trial, self.gpus_per_trial = cpus_per_trial, gpus_per_trial
        self.memory_per_trial = None if memory_per_trial is None else int(memory_per_trial)
        self.device, self.queue_depth, self.max_attempts = device, queue_depth, max_attempts
        self.backoff_s, self.backoff_max_s, self.stall_s = backoff_s, backoff_max_s, stall_s
        self.requested, self.actors = workers, []
        self.optimizer_specs = tuple(optimizer_specs)  # lodo.OptimizerSpecs each actor registers
        self.compute_seconds = self.busy_wall = 0.0
        self.costs = Costs()  # seconds per lane-step so far, per (task, optimizer): orders the queued full runs
        self.resubmitted = self.size = 0
        self.retry_causes: collections.Counter = collections.Counter()  # error type -> retries

    @property
    def retries(self) -> int:
        """Environmental failures retried so far (each one a job run again)."""
        return self.resubmitted

    @staticmethod
    def nodes() -> list[dict]:
        """The alive nodes' resources ({"CPU", "GPU", "memory", ...})."""
        import ray

        return [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]

    def slots(self) -> int:
        """Worker slots the nodes' resources allow for this trial size (capped by `workers`):
        on each node, min(CPUs / cpus_per_trial, GPUs / gpus_per_trial, memory / memory_per_trial)."""
        def fit(res: dict) -> int:
            n = int(res.get("CPU", 0) // self.cpus_per_trial + 1e-9)
            if self.gpus_per_trial > 0:
                n = min(n, int(res.get("GPU", 0) / self.gpus_per_trial + 1e-9))
            if self.memory_per_trial:
                n = min(n, int(res.get("memory", 0) // self.memory_per_trial))
            return n

        nodes = self.nodes()
        n = sum(fit(r) for r in nodes)
        if self.requested is not None:
            n = min(n, self.requested)
        if n < 1:
            cpus, gpus = sum(r.get("CPU", 0) for r in nodes), sum(r.get("GPU", 0) for r in nodes)
            mem = max((r.get("memory", 0) for r in nodes), default=0) / (1 << 30)
            need = f" / {self.memory_per_trial / (1 << 30):.1f} GiB" if self.memory_per_trial else ""
            raise ValueError(f"the Ray cluster ({cpus} CPUs, {gpus} GPUs, largest node {mem:.1f} GiB memory) "
                             f"cannot fit one trial of {self.cpus_per_trial} CPUs / {self.gpus_per_trial} GPUs{need}")
        return n

    def start(self) -> "Executor":
        import ray

        if self.actors:
            return self
        threads = max(1, int(self.cpus_per_trial))
        env = {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        memory = {"memory": self.memory_per_trial} if self.memory_per_trial else {}
        cls = _worker_class().options(num_cpus=self.cpus_per_trial, num_gpus=self.gpus_per_trial, **memory,
                                      max_restarts=-1, max_task_retries=0, runtime_env={"env_vars": env})
        cwd = os.getcwd()
        self.actors = [cls.remote(threads, self.device, self.optimizer_specs, cwd) for _ in range(self.slots())]
        self.size = len(self.actors)
        ray.get([a.ready.remote() for a in self.actors])
        return self

    @property
    def workers(self) -> int:
        return len(self.actors)

    def stop(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []

    def _backoff(self, failures: int) -> float:
        return min(self.backoff_max_s, self.backoff_s * 2 ** (failures - 1))

    def run(self, jobs: Iterable[Job], on_result: Callable[[Job, dict], Iterable[Job] | None]) -> None:
        """Run `jobs`; `on_result(job, result)` may return further jobs to queue (a GA's next
        generation). Results carry ``error`` (a traceback) when the trial raised, and ``retries``
        when the environment failed it first; `PersistentFailure` when it failed too often.

        One `ray.wait` loop: release retries whose back-off is over, keep every live actor busy,
        then take the next answer — a probe of an actor that failed, or a job's result."""
        self.start()
        queue = _Queue(self, jobs)
        t0 = time.perf_counter()
        while queue.busy():
            queue.release_due()
            queue.submit()
            queue.check_stall()
            ref = queue.wait()
            if ref is None:
                continue
            if ref in queue.probes:
                queue.answer_probe(ref)
                continue
            job, result = queue.collect(ref)
            if result is None:
                continue
            self.compute_seconds += result.get("seconds", 0.0)
            self.costs.add(job, result.get("seconds"))
            queue.add(on_result(job, result))
        self.busy_wall += time.perf_counter() - t0

    def _retried(self, job: Job, attempt: int, cause: dict) -> None:
        """Report a retry of `job` after an environmental failure: a log line and an `on_event` event."""
        logger.info("worker lost while running %s (%s); retried (attempt %d of %d)", _label(job), cause["error"],
                    attempt, self.max_attempts)
        if self.on_event is not None:
            self.on_event({"event": "retry", "job": list(job.key), "attempt": attempt,
                           "cause": f"{cause['error']}: {cause['message']}"})

    def efficiency(self) -> float:
        """Σ individuals' compute seconds / (wall seconds × workers), over the time `run` was busy."""
        if self.busy_wall <= 0 or not self.size:
            return float("nan")
        return self.compute_seconds / (self.busy_wall * self.size)


LONG_JOB = 20_000  # individual-steps (lanes × steps) from which a job is sent to idle actors only


def _lane_steps(job) -> int:
    """Individual-steps of `job`: lanes × steps (a Job is one lane)."""
    return len(getattr(job, "jobs", (job,))) * job.steps


def _long(job) -> bool:
    """Whether `job` (a Job or a BatchJob) is long enough to wait for an idle actor rather than queue behind a busy one."""
    return _lane_steps(job) >= LONG_JOB


def _label(job: Job) -> str:
    """"Adam generation 3 individual 5" or "Adam full run 2" (for log lines)."""
    key = tuple(job.key)
    if key[:1] == ("batch",):
        return _label(job.jobs[0]) + (f" (and {len(job.jobs) - 1} more in its batch)" if len(job.jobs) > 1 else "")
    if job.kind == "full" and len(key) == 3:
        return f"{job.optimizer} full run {key[2]}"
    if len(key) == 4:
        return f"{job.optimizer} generation {key[2]} individual {key[3]}"
    return f"{job.optimizer} job {key}"


class Costs:
    """Seconds per lane-step of each (task, optimizer), summed over its finished jobs; a queued job's
    estimated wall = that rate × lanes × steps (+inf for a pair never measured, e.g. an optimizer
    whose full runs start with given values, so the unknown go first). Lanes of a 32-lane tuning
    chunk run cheaper per step than an 8-lane full run's, but alike for every optimizer, so the
    estimates order the queue even where they are off in absolute terms."""

    def __init__(self):
        self.seconds: dict[tuple, float] = collections.defaultdict(float)
        self.lane_steps: dict[tuple, int] = collections.defaultdict(int)

    def add(self, job, seconds) -> None:
        if seconds is not None and math.isfinite(seconds) and seconds > 0:
            key = (job.task, job.optimizer)
            self.seconds[key] += float(seconds)
            self.lane_steps[key] += _lane_steps(job)

    def estimate(self, job) -> float:
        key = (job.task, job.optimizer)
        if not self.lane_steps.get(key):
            return math.inf
        return self.seconds[key] / self.lane_steps[key] * _lane_steps(job)


def _enqueue(pending: collections.deque, jobs, estimate: Callable[[object], float]) -> None:
    """Queue `jobs`: a GA generation's ahead of the queued full runs (which unlock nothing), so a
    tuning chain never waits behind long full runs, in arrival order; full runs behind them, the
    longest `estimate` first (ties in arrival order): list scheduling's LPT rule, so the run does
    not end on one worker with one long chunk while the others idle."""
    for job in jobs:
        if job.kind == "full":
            cost = estimate(job)
            at = next((i for i, (queued, _, _) in enumerate(pending)
                       if queued.kind == "full" and estimate(queued) < cost), len(pending))
        else:
            at = next((i for i, (queued, _, _) in enumerate(pending) if queued.kind == "full"), len(pending))
        pending.insert(at, (job, [], None))


class _Queue:
    """One `Executor.run`'s jobs in their states: pending (next to submit; a retry goes first),
    delayed (retries waiting out their back-off), in flight (by Ray object ref), and the actors
    that failed (probed with `ready` calls, re-probed with back-off; no jobs until one answers)."""

    def __init__(self, ex: "Executor", jobs: Iterable[Job]):
        self.ex = ex
        self.environmental = environmental_errors()
        self.pending: collections.deque = collections.deque()  # (job, causes so far, actor it failed on)
        self.delayed: list = []   # heap of (due, seq, job, causes, actor)
        self.inflight: dict = {}  # ref -> (job, actor, causes)
        self.probes: dict = {}    # ref -> actor
        self.reprobe: list = []   # heap of (due, actor, failures)
        self.down: dict[int, int] = {}  # actor -> failed probes
        self.load = [0] * len(ex.actors)
        self.seq = 0
        self.last_event = time.monotonic()
        self.add(jobs)

    def add(self, jobs) -> None:
        if jobs:
            _enqueue(self.pending, jobs, self.ex.costs.estimate)

    def busy(self) -> bool:
        return bool(self.pending or self.inflight or self.delayed)

    def probe(self, a: int) -> None:
        self.probes[self.ex.actors[a].ready.remote()] = a

    def release_due(self) -> None:
        """Retries whose back-off is over go to the front; failed actors due again are probed."""
        now = time.monotonic()
        while self.delayed and self.delayed[0][0] <= now:
            _, _, job, causes, failed_on = heapq.heappop(self.delayed)
            self.pending.appendleft((job, causes, failed_on))
        while self.reprobe and self.reprobe[0][0] <= now:
            self.probe(heapq.heappop(self.reprobe)[1])

    def submit(self) -> None:
        """Pending jobs to the least loaded live actors (a long job alone, others `queue_depth` deep;
        a retry avoids the actor it failed on when another is free)."""
        while self.pending:
            depth = 1 if _long(self.pending[0][0]) else self.ex.queue_depth
            live = [i for i in range(len(self.ex.actors)) if i not in self.down and self.load[i] < depth]
            if not live:
                break
            job, causes, failed_on = self.pending.popleft()
            a = min([i for i in live if i != failed_on] or live, key=lambda i: self.load[i])
            self.inflight[self.ex.actors[a].run.remote(job)] = (job, a, causes)
            self.load[a] += 1

    def check_stall(self) -> None:
        if (self.pending or self.delayed) and not self.inflight \
                and time.monotonic() - self.last_event > self.ex.stall_s:
            job, causes = (self.pending[0][:2] if self.pending else self.delayed[0][2:4])
            raise PersistentFailure(job, causes, f"no live worker for {self.ex.stall_s:.0f} s")

    def wait(self):
        """The next ready ref (a probe's or a job's), or None after a timeout."""
        import ray

        now = time.monotonic()
        dues = [q[0][0] for q in (self.delayed, self.reprobe) if q]
        timeout = max(0.0, min(dues) - now) if dues else None
        waiting = list(self.inflight) + list(self.probes)
        if not waiting:
            time.sleep(min(timeout if timeout is not None else 1.0, 1.0))
            return None
        ready, _ = ray.wait(waiting, num_returns=1, timeout=min(timeout, 5.0) if timeout is not None else 5.0)
        return ready[0] if ready else None

    def answer_probe(self, ref) -> None:
        import ray

        a = self.probes.pop(ref)
        try:
            ray.get(ref)
            self.down.pop(a, None)
            self.last_event = time.monotonic()
        except self.environmental:
            self.down[a] = self.down.get(a, 0) + 1
            heapq.heappush(self.reprobe, (time.monotonic() + self.ex._backoff(self.down[a]), a, self.down[a]))

    def collect(self, ref) -> tuple[Job, dict | None]:
        """A job's answer: its result, or None when the environment failed it (then it waits out its
        back-off in `delayed`, or `PersistentFailure` after `max_attempts`)."""
        import ray

        job, a, causes = self.inflight.pop(ref)
        self.load[a] -= 1
        try:
            result = ray.get(ref)
            cause = result.pop("environmental", None)
            if cause is not None:
                cause = _cause(cause["error"], cause["message"], a)
        except self.environmental as e:
            cause = _cause(type(e).__name__, str(e), a)
            if a not in self.down:  # no more jobs to it until it answers
                self.down[a] = 0
                self.probe(a)
        if cause is not None:
            causes = causes + [cause]
            ex = self.ex
            ex.resubmitted += 1
            ex.retry_causes[cause["error"]] += 1
            ex._retried(job, len(causes) + 1, cause)
            if len(causes) >= ex.max_attempts:
                raise PersistentFailure(job, causes, f"the environment failed it {len(causes)} times")
            self.seq += 1
            heapq.heappush(self.delayed, (time.monotonic() + ex._backoff(len(causes)), self.seq, job, causes, a))
            return job, None
        self.last_event = time.monotonic()
        if causes:
            result["retries"] = [{k: v for k, v in c.items() if k != "worker"} for c in causes]
        return job, result
