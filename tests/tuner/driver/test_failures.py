"""Failures are failures (issue 37): a trial that raises is an error, never a divergence; an
optimizer most of whose generation raised stops there, is not tuned (status failed, exit code 4),
the other optimizers' results stand, and --resume continues it once the cause is fixed."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import lodo
from tuner.report.report import write_report
from tuner.report.results import collect, pm, summarise_full
from tuner.report.export import export
from tuner.driver.rundir import RunDir
from tuner.driver.schedule import Schedule
from tuner.driver.session import Session

from conftest import drive_session

ROOT = Path(__file__).resolve().parents[3]
BROKEN = {"on": True}
MESSAGE = "Optimizer was not in train mode when step is called"  # schedulefree's, when the user forgot .train()


class Fragile(torch.optim.SGD):
    """SGD whose step raises while BROKEN is on: a user's optimizer with a mistake the user can fix."""

    def step(self, closure=None):
        if BROKEN["on"]:
            raise RuntimeError(MESSAGE)
        return super().step(closure)


@pytest.fixture
def fragile():
    spec = lodo.register(name="Fragile", optimizer=Fragile, hyperparameters={"lr": {"default": 0.01, "scale": "log"}})
    BROKEN["on"] = True
    yield spec
    lodo.unregister(spec.name)


def _schedule(**changes) -> Schedule:
    return Schedule.from_dict({"task": "noisy_bowl", "population": 4, "generations": [{"noise": 1, "steps": 20}] * 2,
                               "optimizers": ["Adam", "Fragile"], "lr_scale": 1.0,
                               "full_run": {"steps": 30, "seeds": 2, "time_milestone_s": None}, **changes})


def _session(path, schedule) -> Session:
    rd = RunDir(path) if path.exists() else RunDir.create(path, task="noisy_bowl", schedule=schedule.to_dict(),
                                                          seed=0, optimizers=list(schedule.optimizers))
    return Session(rd, schedule, 0, full_runs=True)


def test_an_optimizer_whose_every_trial_raises_fails_the_others_stand_and_resume_continues_it(fragile, tmp_path):
    schedule = _schedule()
    session = _session(tmp_path / "run", schedule)
    drive_session(session, session.start(schedule.optimizers))
    rd = session.rd
    why = {"stage": "tuning", "generation": 0, "errors": 4, "trials": 4, "error": f"RuntimeError: {MESSAGE}",
           "traceback": "errors/Fragile/g00-i00.txt"}
    assert session.failed == {"Fragile": why}
    tuned = json.loads((rd.path / "tuned.json").read_text())
    assert tuned["failed"] == {"Fragile": why} and "Fragile" not in tuned["hyperparameters"]  # no values as tuned
    assert MESSAGE in (rd.path / why["traceback"]).read_text()
    assert len(rd.individuals("Fragile")) == 4 and rd.full_runs("Fragile") == []  # stopped at generation 0
    assert len(rd.individuals("Adam")) == 8 and len(rd.full_runs("Adam")) == 2    # the others' results stand
    assert [e["optimizer"] for e in rd.log.read() if e["event"] == "failed"] == ["Fragile"]

    data = collect(rd.path)
    assert data["tuned"]["Fragile"]["status"] == "failed" and data["tuned"]["Fragile"]["hyperparameters"] is None
    assert data["tuned"]["Fragile"]["tuning"]["errors"] == 4 and data["tuned"]["Fragile"]["tuning"]["diverged"] == 0
    assert data["tuned"]["Adam"]["status"] == "done"
    report = write_report(rd.path).read_text()
    assert f"**Fragile failed** and is not tuned: failed at generation 0: RuntimeError: {MESSAGE} " \
           "(errors/Fragile/g00-i00.txt)" in report
    assert "| Fragile | 4 of 4 | 0 of 4 | — | — |" in report
    assert f"| Fragile | — | failed at generation 0: RuntimeError: {MESSAGE}" in export(rd.path, "markdown")
    assert json.loads(export(rd.path, "json"))["tuned"]["Fragile"]["status"] == "failed"

    adam = {p: p.stat().st_mtime_ns for p in (rd.path / "tuning" / "Adam").glob("g*.json")}
    BROKEN["on"] = False  # the user fixes the cause and resumes
    resumed = _session(tmp_path / "run", schedule)
    jobs = resumed.start(schedule.optimizers)
    assert sorted(j.key for j in jobs if j.key[0] == "tuning") == [("tuning", "Fragile", 0, i) for i in range(4)]
    drive_session(resumed, jobs)
    assert resumed.failed == {} and "failed" not in json.loads((rd.path / "tuned.json").read_text())
    assert len(rd.full_runs("Fragile")) == 2 and collect(rd.path)["tuned"]["Fragile"]["status"] == "done"
    assert {p: p.stat().st_mtime_ns for p in (rd.path / "tuning" / "Adam").glob("g*.json")} == adam  # kept

    straight = _session(tmp_path / "straight", schedule)  # never broken: the resumed run ends where it would
    drive_session(straight, straight.start(schedule.optimizers))
    assert resumed.hyperparameters["Fragile"] == straight.hyperparameters["Fragile"]
    assert [r["final_loss"] for r in rd.full_runs("Fragile")] == [r["final_loss"] for r in straight.rd.full_runs("Fragile")]


def test_errors_and_divergences_are_counted_apart(tmp_path):
    schedule = Schedule.from_dict({"task": "noisy_bowl", "population": 4, "generations": [{"noise": 1, "steps": 5}],
                                   "optimizers": ["Adam"], "lr_scale": 1.0, "noise_check": False,
                                   "full_run": {"steps": 10, "seeds": 3, "time_milestone_s": None}})
    session = _session(tmp_path / "run", schedule)
    outcomes = {0: {"final_loss": 1.0}, 1: {"final_loss": math.inf, "diverged": True},
                2: {"error": "Traceback (most recent call last):\nValueError: boom\n"}, 3: {"final_loss": 2.0}}
    for job in session.start(["Adam"]):
        session.on_result(job, outcomes[job.key[3]])
    assert session.failed == {}  # 1 of 4 raised: not most of the generation
    tuning = collect(session.rd.path)["tuned"]["Adam"]["tuning"]
    assert (tuning["errors"], tuning["diverged"], tuning["first_error"]) == (1, 1, "ValueError: boom")

    full = session.start_full("Adam", {"lr": 0.1})
    for job, result in zip(full, [{"final_loss": 3.0, "diverged": False}, {"final_loss": math.inf, "diverged": True},
                                  {"error": "Traceback (most recent call last):\nKeyError: 'x'\n"}]):
        session.on_result(job, result)
    summary = summarise_full(session.rd.full_runs("Adam"))
    assert (summary["errors"], summary["diverged"], summary["final_loss_mean"]) == (1, 1, 3.0)
    assert summary["first_error"] == "KeyError: 'x'" and summary["traceback"] == "errors/Adam/full-seed-2.txt"
    assert pm(3.0, 0.0, 1, 3, errors=1) == "3.000 ± 0.000 (1/3 diverged) (1/3 raised)"
    assert pm(None, None, 0, 2, errors=2) == "raised"


def test_most_full_runs_raising_fails_the_optimizer_and_resume_runs_them_again(tmp_path):
    schedule = _schedule(optimizers=["Adam"])
    session = _session(tmp_path / "run", schedule)
    jobs = session.start_full("Adam", {"lr": 0.1})
    for job in jobs:
        session.on_result(job, {"error": "Traceback (most recent call last):\nOSError: disk gone\n", "seconds": 0.1})
    assert session.failed["Adam"]["stage"] == "full runs" and session.failed["Adam"]["errors"] == 2
    again = _session(tmp_path / "run", schedule)
    assert [j.key for j in again.start_full("Adam", {"lr": 0.1})] == [("full", "Adam", 0), ("full", "Adam", 1)]


# -- the command line: exit code 4 --------------------------------------------------------------
BREAKS_LATER = '''
import torch
from tasks import Task

class BreaksLater(Task):
    """A scalar loss for 10 steps, then the user's bug (a shape mismatch): after any pre-flight."""
    name = "breaks_later"

    def __init__(self, seed=0, device="cpu"):
        super().__init__(seed=seed, device=device)
        self.w = torch.ones(3, requires_grad=True)
        self.steps = 0

    def parameters(self):
        return [self.w]

    def sample(self):
        self.steps += 1
        return self.steps

    def loss(self, step):
        if step > 10:
            return (self.w @ torch.ones(4)) ** 2
        return (self.w ** 2).sum()

    def state_dict(self):
        return {"w": self.w.detach().clone(), "steps": self.steps}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.w.copy_(state["w"])
        self.steps = state["steps"]
'''


def test_the_cli_exits_4_naming_the_failed_optimizers_and_json_says_failed(ray_session, tmp_path):
    (tmp_path / "breaks.py").write_text(BREAKS_LATER)
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text(yaml.safe_dump({"population": 2, "generations": [{"noise": 1, "steps": 20}] * 2,
                                        "optimizers": ["Adam", "Momentum"], "lr_scale": 1,
                                        "full_run": {"steps": 20, "seeds": 1, "time_milestone_s": None}}))
    rd = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "cli", "--task", f"{tmp_path / 'breaks.py'}:BreaksLater",
                           "--schedule", str(schedule), "--workers", "2", "--address", ray_session,
                           "--run-dir", str(rd), "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 4, done.stderr[-3000:]
    data = json.loads(done.stdout)
    assert data["exit_code"] == 4 and set(data["failed"]) == {"Adam", "Momentum"}
    assert data["tuned"]["Adam"]["status"] == "failed" and data["tuned"]["Adam"]["hyperparameters"] is None
    assert "size mismatch" in data["tuned"]["Adam"]["error"] or "4" in data["tuned"]["Adam"]["error"]
    assert data["results"] == {} and data["errors"] == 4
    for o in ("Adam", "Momentum"):
        assert f"lodo-tune: {o} failed: 2 of 2 trials of generation 0 raised: RuntimeError" in done.stderr
    assert "Adam failed" in (rd / "report.md").read_text()
