"""Shared test helpers and fixtures: one Ray session for the whole test run, tiny data-set files
in the real formats, and a way to interrupt a trial between two optimizer steps."""
import gzip
import hashlib
import io
import os
import pickle
import signal
import subprocess
import sys
import struct
import tarfile
import time
from pathlib import Path

# Keep the test workers from oversubscribing this machine's few cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Ray's own default, set explicitly before test modules import ray (as tuner.driver.executor.init_ray does).
os.environ.setdefault("RAY_AUTH_MODE", "token")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def _ray_shutdown_at_exit():
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def ray_session(_ray_shutdown_at_exit):
    """The one local Ray of the test run, started on first use and kept until the end; its address,
    so that subprocesses (`lodo-tune --address`) can join it. Two logical GPUs: Ray only does their
    bookkeeping (CUDA_VISIBLE_DEVICES), no device is touched. (Only the image-task smoke test runs
    a Ray of its own, because its workers need another environment: offline, tiny-file checksums.)"""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    return ray.get_runtime_context().gcs_address


class Interrupted(Exception):
    """Stands in for a kill between two optimizer steps."""


def interrupt_after(monkeypatch, cls, steps: int) -> dict:
    """Make `cls.sample` raise `Interrupted` on its (steps + 1)-th call; returns the call counter."""
    calls = {"n": 0}
    original = cls.sample

    def sample(self):
        calls["n"] += 1
        if calls["n"] > steps:
            raise Interrupted
        return original(self)

    monkeypatch.setattr(cls, "sample", sample)
    return calls


# A task module the project has never seen (written to a file by the user-task tests): least squares
# on a fixed random target, a fresh batch per step, held-out metric the distance to the target.
LINEAR_FIT_TASK = '''
import torch
from tasks import Task

class LinearFit(Task):
    """Least squares on a fixed random target, a fresh batch per step; held-out: the distance."""
    name = "linear_fit"

    def __init__(self, seed=0, device="cpu", dim=4):
        super().__init__(seed=seed, device=device)
        self.target = torch.randn(dim, generator=torch.Generator().manual_seed(7))
        self.w = torch.randn(dim, generator=torch.Generator().manual_seed(seed)).requires_grad_()
        self.generator = torch.Generator().manual_seed(seed + 1)

    def parameters(self):
        return [self.w]

    def sample(self):
        return torch.randn(16, self.w.numel(), generator=self.generator)

    def loss(self, batch):
        return ((batch @ (self.w - self.target)) ** 2).mean()

    def evaluate(self):
        return {"distance": float((self.w - self.target).norm())}

    def state_dict(self):
        return {"w": self.w.detach().clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.w.copy_(state["w"])
        self.generator.set_state(state["generator"])
'''


def drive_session(session, jobs, stop_after=None) -> int:
    """Run a `tuner.driver.session.Session`'s `jobs` and what they unlock in this process (no Ray), first
    in first out, as workers would; stop after `stop_after` jobs (an interruption). Returns how many ran."""
    from tuner.trial.loop import run_job

    queue, done = list(jobs), 0
    while queue and (stop_after is None or done < stop_after):
        job = queue.pop(0)
        queue += session.on_result(job, run_job(job))
        done += 1
    return done


def train_by_hand(task, opt, steps: int) -> list[float]:
    """The loop anyone would write (sample, zero grads, loss, backward, step): the reference that
    the trial loop and tasks' resume are compared with. Returns each step's loss."""
    losses = []
    for _ in range(steps):
        batch = task.sample()
        opt.zero_grad()
        loss = task.loss(batch)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def kill_9_when(argv: list[str], ready, *, env: dict, timeout: float) -> None:
    """Start `python -m cli *argv` from the repository root and SIGKILL it as soon as `ready()` holds
    (a driver killed the way an OOM killer or a lost machine kills it); fails if it finished first."""
    proc = subprocess.Popen([sys.executable, "-m", "cli", *argv], cwd=Path(__file__).resolve().parent.parent,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and not ready():
            assert proc.poll() is None, "the run finished before it could be killed"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_idx_gz(path: Path, array: np.ndarray, magic: int) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_tiny_mnist(folder: Path, rng: np.random.Generator, n_train=70, n_test=5) -> dict:
    arrays = {
        "train-images-idx3-ubyte.gz": (rng.integers(0, 256, (n_train, 28, 28)), 2051),
        "train-labels-idx1-ubyte.gz": (rng.integers(0, 10, (n_train,)), 2049),
        "t10k-images-idx3-ubyte.gz": (rng.integers(0, 256, (n_test, 28, 28)), 2051),
        "t10k-labels-idx1-ubyte.gz": (rng.integers(0, 10, (n_test,)), 2049),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, (array, magic) in arrays.items():
        write_idx_gz(folder / name, array, magic)
    return {name: array for name, (array, _) in arrays.items()}


def write_tiny_cifar10(path: Path, rng: np.random.Generator, per_batch=3) -> dict:
    batches = {}
    with tarfile.open(path, "w:gz") as archive:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
            if name == "batches.meta":
                entry = {b"label_names": [b"airplane"] * 10}
            else:
                entry = {b"data": rng.integers(0, 256, (per_batch, 3072)).astype(np.uint8),
                         b"labels": [int(v) for v in rng.integers(0, 10, per_batch)]}
                batches[name] = entry
            payload = pickle.dumps(entry, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return batches
