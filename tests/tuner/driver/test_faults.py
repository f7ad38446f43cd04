"""Faults and trust (issue 14): environmental failures are retried and never become a fitness,
trials declare their memory to Ray, one writer per run directory, nothing in a run directory runs
code or silently changes a result. Fault injection on a real Ray: SIGKILLed workers, a lost node
(in a subprocess: `ray.cluster_utils.Cluster` needs a Ray of its own), kill -9 of the driver.

The slow ones: `pytest -m slow tests/test_faults.py`."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

import tuner
from cli import main
from tasks.noisy_bowl import NoisyBowl
from tuner.driver.executor import Executor, PersistentFailure
from tuner.driver.memory import BASE_BYTES, GiB, optimizer_values, slot_memory, trial_memory
from tuner.driver.plan import Resources
from tuner.driver.rundir import RunDir, RunDirLocked
from tuner.driver.schedule import Schedule
from tuner.trial.loop import Job, run_trial

from conftest import kill_9_when

ROOT = Path(__file__).resolve().parents[3]
SMALL = {"task": "noisy_bowl", "population": 4, "generations": [{"noise": 3, "steps": 300}] * 2,
         "optimizers": ["Adam", "LODO"], "full_run": {"steps": 3000, "seeds": 2, "time_milestone_s": None},
         "lr_scale": 1}


# -- helpers ------------------------------------------------------------------------------------
def trial_workers() -> list[int]:
    """pids of this machine's Ray trial actors (their process title is ray::TrialWorker...)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "cmdline").read_bytes().startswith(b"ray::TrialWorker"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


class Killer(threading.Thread):
    """SIGKILLs a random trial worker every `every` seconds (`kills` times), from a thread of the test."""

    def __init__(self, kills: int, every: float, run_dir: Path, seed: int = 0, first: float = 0.2):
        super().__init__(daemon=True)
        self.run_dir = run_dir  # killing starts once the run has recorded an individual (its actors are busy)
        self.old = set(trial_workers())  # earlier runs' actors, perhaps still exiting: not this run's
        self.kills, self.every, self.first, self.rng = kills, every, first, random.Random(seed)
        self.killed: list[int] = []
        self.stop = threading.Event()

    def run(self):
        while not list(self.run_dir.glob("tuning/*/g*.json")) and not self.stop.is_set():
            time.sleep(0.02)
        self.stop.wait(self.first)
        while len(self.killed) < self.kills and not self.stop.is_set():
            pids = sorted(set(trial_workers()) - self.old)
            if pids:
                victim = self.rng.choice(pids)
                try:
                    os.kill(victim, signal.SIGKILL)
                    self.killed.append(victim)
                except ProcessLookupError:
                    pass
            self.stop.wait(self.every)


def outcome(run_dir: Path) -> dict:
    """What must not depend on luck: tuned values, every individual's fitness, full-run losses."""
    rd = RunDir.open(run_dir)
    manifest = rd.manifest
    return {"tuned": rd.read_tuned()["hyperparameters"],
            "fitness": {o: [(r["generation"], r["index"], r["fitness"]) for r in rd.individuals(o)]
                        for o in manifest["optimizers"]},
            "full": {o: [(r["seed_index"], r["final_loss"], r["evaluations"], r["curve"]["loss"]) for r in rd.full_runs(o)]
                     for o in manifest["optimizers"]}}


def retried_records(run_dir: Path) -> list[dict]:
    return [r for p in list(run_dir.glob("tuning/*/g*.json")) + list(run_dir.glob("tuning/*/noise-g*.json"))
            + list(run_dir.glob("full/*/seed-*.json"))
            for r in [json.loads(p.read_text())] if r.get("retries")]


def _schedule_file(tmp_path, **changes) -> str:
    p = tmp_path / "schedule.yaml"
    p.write_text(yaml.safe_dump({**SMALL, **changes}))
    return str(p)


# -- environmental vs own failures (a task whose process runs out of memory once) ---------------
class OutOfMemoryOnce(NoisyBowl):
    """The noisy bowl, whose first sample() in a fresh marker directory raises torch's OutOfMemoryError."""

    name = "oom_once"
    marker_dir = None

    def __init__(self, seed=0, device="cpu", marker_dir=None, always=False):
        super().__init__(seed=seed, device=device)
        self.marker, self.always = Path(marker_dir) / f"seed-{seed}", always

    def sample(self):
        if self.always or not self.marker.exists():
            self.marker.touch()
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return super().sample()


def _oom_job(tmp_path, i, always=False):
    return Job(("tuning", "Adam", 0, i), OutOfMemoryOnce, "Adam", {"lr": 0.1}, 300, seed=i,
               task_options={"marker_dir": str(tmp_path), "always": always})


def test_out_of_memory_in_a_trial_is_retried_and_never_becomes_its_fitness(ray_session, tmp_path):
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not importable on workers
    ex = Executor(workers=2, backoff_s=0.01)
    results = {}
    try:
        ex.run([_oom_job(tmp_path, i) for i in range(3)], lambda j, r: results.__setitem__(j.key[3], r))
    finally:
        ex.stop()
    assert ex.retries == 3 and ex.retry_causes == {"OutOfMemoryError": 3}
    for i in range(3):  # the result is the undisturbed trial's, with the failure listed beside it
        assert "error" not in results[i]
        assert results[i]["retries"] == [{"error": "OutOfMemoryError", "message": "CUDA out of memory (simulated)"}]
        assert results[i]["final_loss"] == run_trial("noisy_bowl", "Adam", {"lr": 0.1}, 300, i).final_loss


def test_an_environmental_failure_that_persists_stops_the_run_naming_the_individual(ray_session, tmp_path):
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ex = Executor(workers=1, backoff_s=0.01, max_attempts=4)
    seen = []
    try:
        with pytest.raises(PersistentFailure) as info:
            ex.run([_oom_job(tmp_path, 7, always=True)], lambda j, r: seen.append(r))
    finally:
        ex.stop()
    assert not seen and len(info.value.causes) == 4
    assert str(info.value) == ("Adam generation 0 index 7 (seed 7): the environment failed it 4 times "
                               "(last: OutOfMemoryError: CUDA out of memory (simulated))")


# -- (a) SIGKILLed workers during a small GA + full runs ----------------------------------------
def _run(rd, schedule, address, seed=3, workers=2):
    return tuner.run("noisy_bowl", schedule=Schedule.from_dict(schedule), seed=seed, run_dir=rd,
                     resources=Resources(workers=workers, address=address))


def test_killed_workers_leave_tuned_values_and_full_runs_unchanged(ray_session, tmp_path):
    reference = _run(tmp_path / "calm", SMALL, ray_session)
    killer = Killer(kills=2, every=0.5, run_dir=tmp_path / "killed", seed=1)
    killer.start()
    try:
        killed = _run(tmp_path / "killed", SMALL, ray_session)
    finally:
        killer.stop.set()
        killer.join()
    assert len(killer.killed) == 2
    assert killed.errors == reference.errors == 0 and killed.retries >= 1  # a kill may hit a restarting actor
    assert outcome(tmp_path / "killed") == outcome(tmp_path / "calm")  # exact: nobody ranked last by a kill
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["retries"] == killed.retries == sum(summary["retry_causes"].values())
    # every retry is in the records of the jobs it hit (a batch's retry is in each of its lanes' records)
    assert sum(len(r["retries"]) for r in retried_records(tmp_path / "killed")) >= killed.retries
    from tuner.report.report import write_report

    text = write_report(tmp_path / "killed").read_text()
    assert f"{killed.retries} retries of " in text and "Last session: " in text


@pytest.mark.slow  # ~2-3 min: 12 kills over a 3-optimizer GA and 6 full runs
def test_many_killed_workers_leave_every_result_unchanged(ray_session, tmp_path):
    schedule = {**SMALL, "population": 8, "optimizers": ["Adam", "Momentum", "LODO"],
                "generations": [{"noise": 3, "steps": 1000}] * 3,
                "full_run": {"steps": 20000, "seeds": 2, "time_milestone_s": None}}
    _run(tmp_path / "calm", schedule, ray_session, seed=11)
    killer = Killer(kills=12, every=1.5, run_dir=tmp_path / "killed", seed=2)
    killer.start()
    try:
        killed = _run(tmp_path / "killed", schedule, ray_session, seed=11)
    finally:
        killer.stop.set()
        killer.join()
    print(f"kills survived: {len(killer.killed)}, retries {killed.retries} ({killed.retries} hit a trial in flight, "
          "the others an actor still restarting from an earlier kill)")
    assert len(killer.killed) == 12 and killed.errors == 0 and killed.retries >= 1
    assert outcome(tmp_path / "killed") == outcome(tmp_path / "calm")


# -- (b) a node lost mid-run, on a two-node cluster on this machine -----------------------------
_TWO_NODES = r"""
import json, sys, threading, time
from pathlib import Path
from ray.cluster_utils import Cluster
import ray, tuner
from tuner.driver.plan import Resources
from tuner.driver.schedule import Schedule
sys.path.insert(0, "tests")
from test_faults import SMALL, outcome, trial_workers

out = Path(sys.argv[1])
schedule = Schedule.from_dict({**SMALL, "population": 6, "generations": [{"noise": 3, "steps": 1500}] * 2,
                               "full_run": {"steps": 20000, "seeds": 2, "time_milestone_s": None}})
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
worker = cluster.add_node(num_cpus=1)
ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
cluster.wait_for_nodes()
run = lambda name: tuner.run("noisy_bowl", schedule=schedule, seed=4, run_dir=out / name,
                             resources=Resources(workers=2))
calm = run("calm")
lost = {}
def remove_later():
    while len(list((out / "lost").glob("tuning/*/g*.json"))) < 8:
        time.sleep(0.05)
    lost["nodes_before"] = len([n for n in ray.nodes() if n["Alive"]])
    cluster.remove_node(worker)
    lost["removed_after_records"] = len(list((out / "lost").glob("tuning/*/g*.json")))
threading.Thread(target=remove_later, daemon=True).start()
disturbed = run("lost")
lost.update(nodes_after=len([n for n in ray.nodes() if n["Alive"]]), retries=disturbed.retries,
            errors=disturbed.errors, calm_workers=calm.workers, same=outcome(out / "lost") == outcome(out / "calm"))
print(json.dumps(lost))
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.slow  # ~2 min: a Ray cluster of its own, in a subprocess (the shared session stays)
def test_a_node_lost_mid_run_changes_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", _TWO_NODES, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lost = json.loads(proc.stdout.strip().splitlines()[-1])
    print(lost)
    assert lost["nodes_before"] == 2 and lost["nodes_after"] == 1 and lost["calm_workers"] == 2
    assert lost["errors"] == 0 and lost["retries"] >= 1 and lost["same"]


# -- (c) kill -9 of the driver during full runs, then --resume ----------------------------------
def _no_speed(text: str, fmt: str):
    if fmt == "json":
        drop = lambda x: {k: drop(v) for k, v in x.items() if "second" not in k} if isinstance(x, dict) else x  # noqa: E731
        return drop(json.loads(text))
    return [line.rsplit("|", 2)[0] if line.startswith("| ") else line for line in text.splitlines()]

@pytest.mark.slow  # ~1-2 min: two subprocess drivers and an uninterrupted run
def test_kill_9_during_full_runs_then_resume_gives_identical_report_and_exports(ray_session, tmp_path):
    schedule = _schedule_file(tmp_path, optimizers=["Adam", "LODO"],
                              full_run={"steps": 30000, "seeds": 2, "time_milestone_s": None})
    common = ["--task", "noisy_bowl", "--schedule", schedule, "--workers", "2", "--seed", "6",
              "--address", ray_session, "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rd = tmp_path / "killed"
    kill_9_when([*common, "--run-dir", str(rd)], lambda: bool(list(rd.glob("full/*/seed-*.json"))), env=env, timeout=300)
    assert (rd / ".lock").exists() and len(list(rd.glob("full/*/seed-*.json"))) < 4  # a stale lock, runs missing
    resumed = subprocess.run([sys.executable, "-m", "cli", "--resume", str(rd), "--address", ray_session, "--quiet"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert main([*common, "--run-dir", str(tmp_path / "straight")]) == 0
    for fmt in ("markdown", "json"):  # all but the wall-clock speed (steps/s), which no two runs share
        assert _no_speed(tuner.export_table(rd, fmt), fmt) == _no_speed(tuner.export_table(tmp_path / "straight", fmt), fmt)
    assert outcome(rd) == outcome(tmp_path / "straight")
    strip = lambda p: [ln.rsplit("|", 2)[0] for ln in p.read_text().splitlines()  # noqa: E731
                       if "Run directory" not in ln and "retries" not in ln.lower()]
    assert strip(rd / "report.md") == strip(tmp_path / "straight" / "report.md")


# -- (d) truncated and tampered files: one line, exit 2, never code from the file ----------------
class _Bomb:
    """A pickle that would create a file when loaded by pickle (torch.load(weights_only=False))."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run (tuning + full runs), copied per case."""
    import ray

    tmp = tmp_path_factory.mktemp("finished")
    if not ray.is_initialized():
        ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    schedule = {**SMALL, "generations": [{"noise": 3, "steps": 100}] * 2, "full_run": {"steps": 300, "seeds": 1,
                                                                                       "time_milestone_s": None}}
    _run(tmp / "run", schedule, ray.get_runtime_context().gcs_address)
    return tmp / "run"


def _truncate(p: Path):
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


def _edit_fitness(p: Path):
    rec = json.loads(p.read_text())
    rec["fitness"] = rec["fitness"] * 0.5  # a better fitness: would silently change the GA
    p.write_text(json.dumps(rec))


def _rewrite(p: Path, **changes):
    """Another run's record, as that run wrote it (its own sha256 would match it: none here)."""
    rec = {k: v for k, v in json.loads(p.read_text()).items() if k != "sha256"}
    p.write_text(json.dumps({**rec, **changes}))


def _edit_manifest(p: Path):
    m = json.loads(p.read_text())
    m["schedule"] = ["not", "a", "schedule"]
    p.write_text(json.dumps(m))


RECORD_CASES = {
    "truncated record": ("tuning/Adam/g01-i02.json", _truncate, "cannot be read"),
    "tampered record": ("tuning/LODO/g00-i01.json", _edit_fitness, "does not match its sha256"),
    "record of another GA": ("tuning/Adam/g00-i00.json", lambda p: _rewrite(p, seed=1), "does not match this run's GA"),
    "record of another full run": ("full/Adam/seed-0.json", lambda p: _rewrite(p, steps=10),
                                   "does not match this run's full run 0"),
    "truncated manifest": ("manifest.json", _truncate, "unreadable manifest.json"),
    "manifest with a list for a schedule": ("manifest.json", _edit_manifest, "schedule"),
    "tuned.json not JSON at all": ("tuned.json", lambda p: p.write_bytes(b"\x80\x04\x95pickle"), "cannot be read"),
}


FAST_RECORD_CASES = ("truncated record", "tampered record", "truncated manifest", "tuned.json not JSON at all")


@pytest.mark.parametrize("case", [c if c in FAST_RECORD_CASES else pytest.param(c, marks=pytest.mark.slow)
                                  for c in RECORD_CASES])
def test_a_damaged_run_dir_file_is_one_line_exit_2_naming_it(case, finished_run, ray_session, tmp_path, capsys):
    rd = tmp_path / "run"
    shutil.copytree(finished_run, rd)
    name, damage, expected = RECORD_CASES[case]
    damage(rd / name)
    argv = ["--resume", str(rd), "--address", ray_session, "--quiet"] if "tuned" not in name else ["export", str(rd)]
    kept = lambda p: p.is_file() and p.name not in (".lock", "log.jsonl")  # noqa: E731
    before = {p: p.read_bytes() for p in rd.rglob("*") if kept(p)}
    log_before = (rd / "log.jsonl").read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lodo-tune: error: ") and err.count("\n") == 1, err
    assert expected in err and (name.split("/")[-1] in err or "manifest" in name), err
    after = {p: p.read_bytes() for p in rd.rglob("*") if kept(p)}
    assert after == before  # nothing rewritten, nothing deleted
    assert (rd / "log.jsonl").read_bytes().startswith(log_before)  # the run log only gains lines


def _checkpointed(finished_run, tmp_path, monkeypatch) -> Path:
    """A copy of the finished run whose full run Adam/0 was interrupted: its record gone, a checkpoint left."""
    from conftest import interrupt_after
    from tuner.driver.session import Session
    from tuner.trial.loop import run_job

    rd = tmp_path / "run"
    shutil.copytree(finished_run, rd)
    (rd / "full" / "Adam" / "seed-0.json").unlink()
    m = RunDir.open(rd).manifest
    session = Session(RunDir(rd), Schedule.from_dict(m["schedule"]), m["seed"])
    hp = json.loads((rd / "tuned.json").read_text())["hyperparameters"]["Adam"]
    [job] = session.start_full("Adam", hp)
    with monkeypatch.context() as patch:
        interrupt_after(patch, NoisyBowl, 250)
        assert "Interrupted" in run_job(job, checkpoint_every_s=0)["error"]
    return Path(job.checkpoint)


def _resealed(state: dict, **changes) -> dict:
    from tuner.trial.loop import state_digest

    state = {**state, **changes}
    return {**state, "digest": state_digest(state)}


def _flip(p: Path):
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))


CHECKPOINT_CASES = {
    "truncated": (_truncate, "cannot be read safely"),
    "one bit flipped": (_flip, None),  # damaged or unreadable: either way refused
    "code inside (a pickle bomb)": (None, "cannot be read safely"),
    "edited, digest not updated": (lambda p: torch.save({**torch.load(p, weights_only=True), "recorded": 100}, p),
                                   "is damaged (its content does not match its digest)"),
    "another trial's": (lambda p: torch.save(_resealed(torch.load(p, weights_only=True), fingerprint="x"), p),
                        "belongs to another trial"),
}


@pytest.mark.parametrize("case", [c if c in ("truncated", "code inside (a pickle bomb)", "edited, digest not updated")
                                  else pytest.param(c, marks=pytest.mark.slow) for c in CHECKPOINT_CASES])
def test_a_damaged_checkpoint_is_one_line_exit_2_and_runs_no_code(case, finished_run, ray_session, tmp_path,
                                                                   monkeypatch, capsys):
    ckpt = _checkpointed(finished_run, tmp_path, monkeypatch)
    damage, expected = CHECKPOINT_CASES[case]
    marker = tmp_path / "bomb-went-off"
    if damage is None:
        torch.save({**torch.load(ckpt, weights_only=True), "bomb": _Bomb(marker)}, ckpt)
    else:
        damage(ckpt)
    before = ckpt.read_bytes()
    assert main(["--resume", str(tmp_path / "run"), "--address", ray_session, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lodo-tune: error: --resume: Invalid checkpoint: '{ckpt}' ") and err.count("\n") == 1, err
    assert expected is None or expected in err
    assert not marker.exists() and ckpt.read_bytes() == before  # no code ran; the file is left for the user
    assert not (tmp_path / "run" / "full" / "Adam" / "seed-0.json").exists()


@pytest.mark.slow  # the resume path is covered fast by tests/test_session.py
def test_an_intact_checkpoint_resumes_to_the_uninterrupted_record(finished_run, ray_session, tmp_path, monkeypatch):
    ckpt = _checkpointed(finished_run, tmp_path, monkeypatch)
    assert torch.load(ckpt, weights_only=True)["recorded"] == 200  # loads with weights_only=True
    assert main(["--resume", str(tmp_path / "run"), "--address", ray_session, "--quiet"]) == 0
    assert outcome(tmp_path / "run") == outcome(finished_run) and not ckpt.exists()


# -- (e) one writer per run directory ------------------------------------------------------------
def test_the_lock_names_its_holder_and_a_stale_lock_blocks_nothing(tmp_path):
    rd = RunDir(tmp_path / "r")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / ".lock").write_text('{"pid": 999999, "host": "gone"}')  # left by a killed process
    lock = rd.lock()
    holder = json.loads((tmp_path / "r" / ".lock").read_text())
    assert holder["pid"] == os.getpid() and holder["host"] and holder["started"]
    with pytest.raises(RunDirLocked, match=rf"is in use by process {os.getpid()} on {holder['host']} \(started "):
        RunDir(tmp_path / "r").lock()
    with pytest.raises(RunDirLocked):
        RunDir.check_unlocked(tmp_path / "r")
    lock.release()
    RunDir.check_unlocked(tmp_path / "r")
    RunDir(tmp_path / "r").lock().release()


@pytest.mark.slow  # end to end through Ray or a CLI subprocess: `make test-slow`
def test_a_second_run_on_a_directory_in_use_exits_2_and_the_first_is_unharmed(ray_session, tmp_path, capsys):
    schedule = _schedule_file(tmp_path, generations=[{"noise": 3, "steps": 1000}] * 2,
                              full_run={"steps": 2000, "seeds": 1, "time_milestone_s": None})
    rd = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "cli", "--task", "noisy_bowl", "--schedule", schedule,
                              "--workers", "2", "--seed", "2", "--address", ray_session, "--quiet", "--run-dir", str(rd)],
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(rd.glob("tuning/*/g*.json")):
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    for argv in (["--task", "noisy_bowl", "--schedule", schedule, "--run-dir", str(rd)], ["--resume", str(rd)]):
        assert main(argv + ["--address", ray_session, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"is in use by process {first.pid} on " in err, err
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert len(list(rd.glob("tuning/*/g*.json"))) == 16 and len(list(rd.glob("full/*/seed-*.json"))) == 2
    assert json.loads((rd / "summary.json").read_text())["ran"] == 16
    reference = tmp_path / "reference"
    assert main(["--task", "noisy_bowl", "--schedule", schedule, "--workers", "2", "--seed", "2",
                 "--address", ray_session, "--quiet", "--run-dir", str(reference)]) == 0
    assert outcome(rd) == outcome(reference)


# -- memory-aware scheduling ---------------------------------------------------------------------
def test_the_memory_estimate_follows_the_documented_formula():
    n = 11_173_962  # ResNet-18 for CIFAR-10 (independently: torchvision's resnet18 less its 1000-way head)
    theta = 16 * (2 * n // 4) * 4 * 4  # N · ñ · k
    assert optimizer_values("LODO", n) == 5 * theta + n  # benchmarks/lodo_memory.py
    assert 3 * theta * 4 / GiB == pytest.approx(16.0, abs=0.05)  # θ + 2 Adam moments in float32: the paper's 16 GiB
    assert optimizer_values("Adam", n) == 2 * n and optimizer_values("BFGS", 100) == 4 * 100 ** 2
    assert optimizer_values("SomeUserOptimizer", n) == 4 * n  # unknown to the estimator: the default
    assert trial_memory("noisy_bowl", "Adam") == BASE_BYTES + 8 * (2 * 100 + 200) + 8 * (6 * 100 ** 2 + 110 * 100)
    lodo_resnet = trial_memory("resnet18_cifar10", "LODO")
    assert 30 < lodo_resnet / GiB < 42 and trial_memory("resnet18_cifar10", "Adam") < lodo_resnet / 4


def test_a_users_task_and_registered_optimizer_get_an_estimate():
    import lodo
    from lodo.registry import OptimizerSpec

    spec = OptimizerSpec("AdamW-faults", "torch.optim.AdamW", {"lr": {"default": 1e-3, "scale": "log"}})
    lodo.register(spec)
    try:
        need, worst = slot_memory(str(ROOT / "examples/digits/digits.py") + ":digits", ["AdamW-faults", "LODO"])
    finally:
        lodo.unregister("AdamW-faults")
    assert worst == "LODO" and BASE_BYTES < need < BASE_BYTES + (1 << 30)


def test_actors_declare_their_memory_and_slots_stop_where_memory_ends(ray_session):
    import ray

    node = max(n["Resources"]["memory"] for n in ray.nodes() if n["Alive"])
    ex = Executor(workers=2, memory_per_trial=int(node * 0.6))  # room for one such trial only
    assert ex.slots() == 1
    available = lambda: ray.available_resources().get("memory", 0)  # noqa: E731
    settle(lambda: available() == ray.cluster_resources().get("memory", 0))  # earlier tests' actors released
    before = available()
    small = Executor(workers=2, memory_per_trial=1 << 30).start()
    try:  # Ray's view of resources is eventually consistent: wait for the reservations to show
        settle(lambda: before - available() == pytest.approx(2 * (1 << 30), rel=1e-6))
        assert before - available() == pytest.approx(2 * (1 << 30), rel=1e-6)
    finally:
        small.stop()


def settle(condition, timeout: float = 30.0) -> None:
    """Wait until `condition()` holds or `timeout` seconds pass (the caller asserts it)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)


def test_a_trial_that_fits_on_no_node_is_refused_before_anything_starts(ray_session, tmp_path, capsys):
    rd = tmp_path / "big"
    assert main(["--task", "resnet18_cifar10", "--optimizers", "LODO", "--run-dir", str(rd),
                 "--address", ray_session, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lodo-tune: error: --memory-per-trial: a trial of LODO on resnet18_cifar10 needs ")
    assert "GiB, more than the largest Ray node has (" in err and err.count("\n") == 1
    assert not rd.exists()
    assert main(["--task", "noisy_bowl", "--memory-per-trial", "100000", "--run-dir", str(rd),
                 "--address", ray_session, "--quiet"]) == 2
    assert "a trial (resources.memory_per_trial) needs 100000.0 GiB" in capsys.readouterr().err and not rd.exists()
