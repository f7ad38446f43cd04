"""Ray execution: a pool of long-lived trial actors fed by a cheap `ray.wait` loop.

Why not one Ray task (or Tune trial) per individual: a noisy-bowl individual of 1000 steps takes
well under a second, about what Tune spends per trial. Long-lived actors (one per worker slot,
declaring `num_cpus`/`num_gpus`, fractions allowed) keep torch imported and warm; the driver keeps
up to `queue_depth` calls queued on each actor so none idles between individuals, and actors send
back only summaries (fitness, seconds, a decimated curve), never 100k raw losses.

Fault tolerance: actors restart when their process dies (`max_restarts=-1`); a call lost with
its actor is resubmitted (up to `max_attempts`). A trial that *raises* is not retried: its
traceback comes back as the result's ``error`` and the caller ranks it last. What an actor runs,
and what it sends back, is `tuner.trial.run_job`.
"""
from __future__ import annotations

import collections
import math
import os
import sys
import time
from typing import Callable, Iterable

import torch

from tuner.trial import Job, run_job

# `ray` is imported inside the functions that use it: `init_ray` sets RAY_AUTH_MODE before the first import.
_RESTART_WAITS, _RESTART_WAIT_S = 120, 0.5  # resubmissions to an actor that is restarting (≤ 60 s)


def _worker_class():
    import ray

    class TrialWorker:
        """One worker slot: torch and BLAS pinned to this slot's CPUs."""

        def __init__(self, threads: int, device: str):
            torch.set_num_threads(threads)
            self.device = device

        def ready(self) -> int:
            return os.getpid()

        def whoami(self) -> dict:
            return {"pid": os.getpid(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    "threads": torch.get_num_threads()}

        def run(self, job: Job) -> dict:
            return run_job(job, self.device)

    return ray.remote(TrialWorker)


def init_ray(address: str | None = None, workers: int | None = None, cpus_per_trial: float = 1,
             num_gpus: int | None = None) -> bool:
    """Join `address` or start a local Ray with `workers` × `cpus_per_trial` CPUs (default: all cores);
    False if Ray was already running. A local Ray gets RAY_AUTH_MODE=token unless set: Ray's default,
    chosen explicitly so that Ray does not warn. Ray reads it on its first import: call this before that."""
    if not (address or os.environ.get("RAY_ADDRESS")) and "ray" not in sys.modules:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if ray.is_initialized():
        return False
    kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if address:
        ray.init(address=address, **kw)
    else:
        cpus = os.cpu_count() if workers is None else max(1, math.ceil(workers * cpus_per_trial))
        ray.init(num_cpus=cpus, num_gpus=num_gpus, **kw)
    return True


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
        self.requested, self.actors = workers, []
        self.compute_seconds = self.busy_wall = 0.0
        self.resubmitted = self.size = 0

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
                                      max_restarts=-1, max_task_retries=0, runtime_env={"env_vars": env})
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
                _enqueue(pending, more)
        self.busy_wall += time.perf_counter() - t0

    def efficiency(self) -> float:
        """Σ individuals' compute seconds / (wall seconds × workers), over the time `run` was busy."""
        if self.busy_wall <= 0 or not self.size:
            return float("nan")
        return self.compute_seconds / (self.busy_wall * self.size)


def _enqueue(pending: collections.deque, jobs) -> None:
    """Queue `jobs`: a GA generation's ahead of the queued full runs (which unlock nothing), so a
    tuning chain never waits behind long full runs; otherwise first in, first out."""
    for job in jobs:
        if job.kind == "full":
            pending.append((job, 1))
            continue
        at = next((i for i, (queued, _) in enumerate(pending) if queued.kind == "full"), len(pending))
        pending.insert(at, (job, 1))
