"""Selection that cannot tell is flagged (issue 37, `tuner.driver.noise`): each generation's best is re-run
on another seed as an extra, recorded trial; a generation whose spread is within that noise is
flagged in the run log and report.md; the GA's state and tuned values do not change."""
import math
import sys
import uuid

import pytest

import tasks
from tuner.driver import noise
from tuner.report.report import write_report
from tuner.driver.rundir import RunDir
from tuner.driver.schedule import Schedule
from tuner.driver.session import Session
from tuner.trial.loop import run_trial

from conftest import drive_session

# Pure noise: the loss does not depend on the hyperparameters at all, only on the trial's seed.
PURE_NOISE = '''
import torch
from tasks import Task

class PureNoise(Task):
    name = "pure_noise"

    def __init__(self, seed=0, device="cpu"):
        super().__init__(seed=seed, device=device)
        self.w = torch.zeros(2, requires_grad=True)
        self.generator = torch.Generator().manual_seed(seed)

    def parameters(self):
        return [self.w]

    def sample(self):
        return float(torch.randn((), generator=self.generator))

    def loss(self, batch):
        return (0 * self.w).sum() + batch

    def state_dict(self):
        return {"w": self.w.detach().clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.w.copy_(state["w"])
        self.generator.set_state(state["generator"])
'''


def test_the_verdict_compares_the_spread_with_the_best_rerun():
    assert noise.verdict([1, 2, 3, 4, 5], 1, 1.5) == {"spread": 2, "noise": 0.5, "indistinguishable": False}
    assert noise.verdict([1, 2, 3, 4, 5], 1, 2.0) == {"spread": 2, "noise": 1.0, "indistinguishable": True}
    assert noise.verdict([1, 2, 3, math.inf], 1, 0.0)["spread"] == 1  # median of the finite ones: 2
    assert noise.verdict([1, 2, 3], 1, math.inf)["indistinguishable"] is None  # the re-run diverged: no verdict
    assert noise.best([{"index": 0, "fitness": math.inf}, {"index": 1, "fitness": 2.0}]) is None  # nothing to tell apart


def _run(path, schedule, task="rosenbrock", ref=None):
    rd = RunDir.create(path, task=task, schedule=schedule.to_dict(), seed=0, optimizers=list(schedule.optimizers))
    session = Session(rd, schedule, 0, full_runs=False, task=ref or task)
    drive_session(session, session.start(list(schedule.optimizers)))
    return session


def _schedule(task="rosenbrock", **changes):
    return Schedule.from_dict({"population": 8, "generations": [{"noise": 1, "steps": 30}] * 3,
                               "optimizers": ["Adam"], "lr_scale": 1.0,
                               "full_run": {"steps": 30, "seeds": 1, "time_milestone_s": None}, **changes},
                              task_names=[task])


def test_a_noise_free_task_is_never_flagged_and_the_check_leaves_the_tuned_values_alone(tmp_path):
    """Rosenbrock has no noise and Adam no draws: the best's re-run repeats it exactly."""
    checked = _run(tmp_path / "on", _schedule())
    plain = _run(tmp_path / "off", _schedule(noise_check=False))
    assert checked.raw == plain.raw and checked.ran == plain.ran  # GA state, seeds and values untouched
    records = noise.records(checked.rd, "Adam")
    assert [r["generation"] for r in records] == [0, 1, 2] and noise.records(plain.rd, "Adam") == []
    assert all(r["noise"] == 0 and r["indistinguishable"] is False for r in records)
    assert "No generation was within the noise" in write_report(checked.rd.path).read_text()
    assert "Not measured" in write_report(plain.rd.path).read_text()


def test_a_generation_of_pure_noise_is_flagged_in_the_run_log_and_report(tmp_path):
    name = f"pure_noise_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(PURE_NOISE)
    spec = tasks.resolve(f"{tmp_path / name}.py:PureNoise")
    try:
        session = _run(tmp_path / "run", _schedule("pure_noise"), "pure_noise", spec.ref)
        records = noise.records(session.rd, "Adam")
        for r in records:  # the re-run is the trial loop's, on the noise check's own seed
            told = session.gas["Adam"].history[r["generation"]]["individuals"]
            best = min(told, key=lambda i: (i["fitness"], i["index"]))
            assert (r["index"], r["best_fitness"], r["seed"]) == (best["index"], best["fitness"],
                                                                    noise.seed(0, "Adam", r["generation"]))
            assert r["seed"] not in {i["seed"] for h in session.gas["Adam"].history for i in h["individuals"]}
            assert r["fitness"] == run_trial(spec.ref, "Adam", best["hparams"], 30, r["seed"]).final_loss
            fitness = sorted(i["fitness"] for i in told)
            spread = (fitness[3] + fitness[4]) / 2 - best["fitness"]
            assert r["indistinguishable"] == (spread <= 2 * abs(r["fitness"] - best["fitness"]))
        flagged = [r["generation"] for r in records if r["indistinguishable"]]
        assert flagged  # pure noise: flagged (deterministic for this seed)
        events = [e for e in session.rd.log.read() if e["event"] == "selection_noise"]
        assert [e["generation"] for e in events if e["indistinguishable"]] == flagged
        report = write_report(session.rd.path).read_text()
        assert "## Selection noise" in report and f"| Adam | {flagged[0]} |" in report and "longer trials" in report
    finally:
        sys.modules.pop(name, None)
