"""Ray execution: a pool of long-lived trial actors fed by a cheap `ray.wait` loop.

Why not one Ray task (or Tune trial) per individual: a noisy-bowl individual of 1000 steps takes
well under a second, about what Tune spends per trial. Long-lived actors (one per worker slot,
declaring `num_cpus`/`num_gpus`, fractions allowed) keep torch imported and warm; the driver keeps
up to `queue_depth` calls queued on each actor so none idles between individuals, and actors send
back only summaries (fitness, seconds, a decimated curve), never 100k raw losses.

Fault tolerance: actors restart when their process dies (`max_restarts=-1`); a call lost with
its actor is resubmitted (up to `max_attempts`). A trial that *raises* is not retried: its
traceback comes back as the result's ``error`` and the caller ranks it last.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import os
import time
import traceback
from typing import Callable, Iterable

import numpy as np

CURVE_POINTS = 100
SIGMA_POINTS = 200  # σ points kept in a full-run record (= tuner.trial.SIGMA_POINTS; not imported: no torch here)
_RESTART_WAITS, _RESTART_WAIT_S = 120, 0.5  # resubmissions to an actor that is restarting (≤ 60 s)


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


def execute(job: Job, device: str = "cpu", trial=None, checkpoint_every_s: float = 300) -> dict:
    """Run one job in this process and summarise it (what an actor sends back).

    A full run with a time milestone T must reach both milestones: it first runs `steps`
    evaluations; if that took less than T, a second run with the same seed (so the same
    trajectory) continues until T with a step cap of 1.5× the measured rate (doubled and rerun
    if hit before T), and the time
    milestone is read off it (mean over the last 10 % of T).

    A job with a `checkpoint` path saves its step-milestone run there every `checkpoint_every_s`
    seconds and continues from it when it exists (an interrupted full run resumes mid-way); the
    timed second run is not checkpointed. Deleting the file once the record is written is the
    driver's job (`tuner.api`). With several machines the run directory must be shared storage.

    A full run's step-milestone run also records σ every `observe_every_for(steps)` optimizer
    steps (LODO family on the noisy bowl) and the Rosenbrock trajectory (`observations`);
    tuning individuals record neither.
    """
    start = time.perf_counter()
    try:
        from tuner.trial import observe_every_for

        if trial is None:
            from tuner.trial import run_trial as trial
        kwargs = dict(task_options=dict(job.task_options), device=device)
        saving = dict(checkpoint=job.checkpoint, checkpoint_every_s=checkpoint_every_s) if job.checkpoint else {}
        if job.kind == "full":
            saving["observe_every"] = observe_every_for(job.steps)
        res = trial(job.task, job.optimizer, dict(job.hparams), job.steps, job.seed, **kwargs, **saving)
        timed = None
        if job.kind == "full" and job.time_limit is not None and not res.diverged and res.seconds < job.time_limit:
            cap = max(job.steps, math.ceil(1.5 * len(res.losses) * job.time_limit / max(res.seconds, 1e-9)))
            hparams = dict(job.hparams)
            if "total_steps" in _options(job.optimizer):  # LARS: the same decay as the step run
                hparams.setdefault("total_steps", job.steps)
            for _ in range(4):  # the rate estimate was too low if the cap is hit before T: double it
                timed = trial(job.task, job.optimizer, hparams, cap, job.seed,
                              time_limit=job.time_limit, **kwargs)
                if timed.diverged or len(timed.losses) < cap:
                    break
                cap *= 2
    except Exception:
        return {"error": traceback.format_exc(), "seconds": time.perf_counter() - start, "pid": os.getpid()}
    out = {
        "final_loss": math.inf if res.diverged else float(res.final_loss),
        "diverged": bool(res.diverged),
        "seconds": time.perf_counter() - start,
        "trial_seconds": float(res.seconds),
        "steps_per_second": float(res.steps_per_second),
        "evaluations": int(len(res.losses)),
        "curve": decimate(res.losses, res.times),
        "pid": os.getpid(),
    }
    if job.kind == "full":
        out.update(observations(res))
    if job.kind == "full" and job.time_limit is not None:
        from tuner.trial import time_budget_loss

        source = timed if timed is not None else res
        out["time_loss"] = math.inf if source.diverged else time_budget_loss(source.losses, source.times,
                                                                             job.time_limit)
        out["time_evaluations"] = int(np.sum(source.times <= job.time_limit))
    return out


def _options(optimizer: str) -> list[str]:
    import lodo

    return lodo.options(optimizer) if optimizer in lodo.available() else []


def _worker_class():
    import ray

    class TrialWorker:
        """One worker slot: torch and BLAS pinned to this slot's CPUs."""

        def __init__(self, threads: int, device: str):
            import torch

            torch.set_num_threads(threads)
            self.device = device

        def ready(self) -> int:
            return os.getpid()

        def whoami(self) -> dict:
            import torch

            return {"pid": os.getpid(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    "threads": torch.get_num_threads()}

        def run(self, job: Job) -> dict:
            return execute(job, self.device)

    return ray.remote(TrialWorker)


def init_ray(address: str | None = None, workers: int | None = None, cpus_per_trial: float = 1,
             num_gpus: int | None = None) -> None:
    """Join `address` or start a local Ray with `workers` × `cpus_per_trial` CPUs (default: all cores)."""
    import ray

    if ray.is_initialized():
        return
    kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if address:
        ray.init(address=address, **kw)
    else:
        cpus = os.cpu_count() if workers is None else max(1, math.ceil(workers * cpus_per_trial))
        ray.init(num_cpus=cpus, num_gpus=num_gpus, **kw)


class Executor:
    """A pool of trial actors. `run(jobs, on_result)` may be fed new jobs from `on_result`."""

    def __init__(self, workers: int | None = None, cpus_per_trial: float = 1, gpus_per_trial: float = 0,
                 device: str = "cpu", queue_depth: int = 2, max_attempts: int = 3):
        if cpus_per_trial <= 0:
            raise ValueError(f"Invalid cpus_per_trial: {cpus_per_trial} (must be > 0)")
        if gpus_per_trial < 0:
            raise ValueError(f"Invalid gpus_per_trial: {gpus_per_trial} (must be >= 0)")
        if workers is not None and workers < 1:
            raise ValueError(f"Invalid workers: {workers} (must be >= 1)")
        self.cpus_per_trial, self.gpus_per_trial = cpus_per_trial, gpus_per_trial
        self.device, self.queue_depth, self.max_attempts = device, queue_depth, max_attempts
        self.requested = workers
        self.actors: list = []
        self.compute_seconds = 0.0
        self.busy_wall = 0.0
        self.resubmitted = 0
        self.size = 0

    def slots(self) -> int:
        """Worker slots the cluster's resources allow for this trial size (capped by `workers`)."""
        import ray

        res = ray.cluster_resources()
        n = int(res.get("CPU", 0) // self.cpus_per_trial + 1e-9)
        if self.gpus_per_trial > 0:
            n = min(n, int(res.get("GPU", 0) / self.gpus_per_trial + 1e-9))
        if self.requested is not None:
            n = min(n, self.requested)
        if n < 1:
            raise ValueError(f"the Ray cluster ({res.get('CPU', 0)} CPUs, {res.get('GPU', 0)} GPUs) "
                             f"cannot fit one trial of {self.cpus_per_trial} CPUs / {self.gpus_per_trial} GPUs")
        return n

    def start(self) -> "Executor":
        import ray

        if self.actors:
            return self
        threads = max(1, int(self.cpus_per_trial))
        env = {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        cls = _worker_class().options(num_cpus=self.cpus_per_trial, num_gpus=self.gpus_per_trial,
                                      max_restarts=-1, max_task_retries=0,
                                      runtime_env={"env_vars": env})
        self.actors = [cls.remote(threads, self.device) for _ in range(self.slots())]
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

    def run(self, jobs: Iterable[Job], on_result: Callable[[Job, dict], Iterable[Job] | None]) -> None:
        """Run `jobs`; `on_result(job, result)` may return further jobs to queue (a GA's next
        generation). Results carry ``error`` (a traceback) when the trial raised or its worker
        died `max_attempts` times."""
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError, WorkerCrashedError

        self.start()
        pending = collections.deque((j, 1) for j in jobs)
        inflight: dict = {}
        load = [0] * len(self.actors)
        t0 = time.perf_counter()
        while pending or inflight:
            while pending:
                a = min(range(len(self.actors)), key=lambda i: load[i])
                if load[a] >= self.queue_depth:
                    break
                job, attempt = pending.popleft()
                inflight[self.actors[a].run.remote(job)] = (job, a, attempt)
                load[a] += 1
            [ref], _ = ray.wait(list(inflight), num_returns=1)
            job, a, attempt = inflight.pop(ref)
            load[a] -= 1
            try:
                result = ray.get(ref)
            except (RayActorError, WorkerCrashedError) as e:
                restarting = isinstance(e, ActorUnavailableError)  # the actor is coming back: not a new death
                if attempt < self.max_attempts or (restarting and attempt < _RESTART_WAITS):
                    if restarting:
                        time.sleep(_RESTART_WAIT_S)  # a loaded machine may take seconds to restart it
                    self.resubmitted += 1
                    pending.appendleft((job, attempt + 1))
                    continue
                result = {"error": f"worker died {attempt} times: {type(e).__name__}: {e}", "seconds": 0.0}
            self.compute_seconds += result.get("seconds", 0.0)
            more = on_result(job, result)
            if more:
                pending.extend((j, 1) for j in more)
        self.busy_wall += time.perf_counter() - t0

    def efficiency(self) -> float:
        """Σ individuals' compute seconds / (wall seconds × workers), over the time `run` was busy."""
        if self.busy_wall <= 0 or not self.size:
            return float("nan")
        return self.compute_seconds / (self.busy_wall * self.size)
