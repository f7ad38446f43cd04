"""`lodo-tune init-schedule --task` (issue 37): the generations' trial lengths come from a pilot of
the task (how many steps its loss needs to leave its start), so a task whose loss separates slowly
gets longer trials than one whose loss separates at once."""
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml

import tasks
from tuner.driver import pilot
from tuner.driver.schedule import Schedule, load_schedule

ROOT = Path(__file__).resolve().parents[3]

# Least squares toward a target at distance d from the start, nearly noiseless. Adam (lr 1e-3) moves
# every coordinate by lr per step, so the loss is (d − 2·lr·k)² after k steps: its relative drop is
# ≈ 4·lr·k/d, and the mean of the last 10 losses is 1 % below the first 10's once
# 4·lr·(t − 10)/d > 0.01, i.e. t ≈ 10 + 2.5·d steps (d = 20: ≈ 60; d = 1: at the first check, 20).
DRIFT = textwrap.dedent('''
    import torch
    from tasks import Task

    class Drift(Task):
        def __init__(self, seed=0, device="cpu", distance=1.0):
            super().__init__(seed=seed, device=device)
            self.target = torch.full((4,), distance / 2)
            self.w = torch.zeros(4, requires_grad=True)
            self.generator = torch.Generator().manual_seed(seed)

        def parameters(self):
            return [self.w]

        def sample(self):
            return 1 + 1e-4 * torch.randn(4, generator=self.generator)

        def loss(self, batch):
            return (((self.w - self.target) * batch) ** 2).sum()

        def state_dict(self):
            return {"w": self.w.detach().clone(), "generator": self.generator.get_state()}

        def load_state_dict(self, state):
            with torch.no_grad():
                self.w.copy_(state["w"])
            self.generator.set_state(state["generator"])

    def near(seed=0, device="cpu"):
        return Drift(seed, device, distance=1.0)

    def far(seed=0, device="cpu"):
        return Drift(seed, device, distance=20.0)
''')

ADAM_ONLY = Schedule.from_dict({"population": 2, "generations": [{"noise": 1, "steps": 10}], "optimizers": ["Adam"],
                                "full_run": {"steps": 10, "seeds": 1, "time_milestone_s": None}, "lr_scale": 1})


@pytest.fixture
def drift(tmp_path):
    name = f"drift_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(DRIFT)
    yield tmp_path / f"{name}.py"
    sys.modules.pop(name, None)


def test_a_slow_task_separates_later_and_gets_longer_trials(drift):
    (near,), (far,) = (pilot.run(tasks.resolve(f"{drift}:{n}"), ADAM_ONLY, budget=500) for n in ("near", "far"))
    assert near.separated == 2 * pilot.WINDOW  # at the first check
    assert 50 <= far.separated <= 70  # ≈ 10 + 2.5·20 (the module's closed form)
    short, long = pilot.propose([near], 500), pilot.propose([far], 500)
    assert short["first"] == 100 and long["first"] == 200  # 3 × 20 = 60 → 100; 3 × ~60 ≈ 180 → 200
    assert long["generations"] == [200, 200, 400, 800] and long["full_run"] == 2000


def test_the_separation_rule_on_curves_built_by_hand():
    rng = np.random.default_rng(0)
    flat = 4.1 + 0.05 * rng.standard_normal(1000)  # noise only: never separates
    assert not any(pilot.separated(flat[:t]) for t in range(20, 1001, 10))
    late = flat.copy()
    late[280:] -= np.linspace(0, 2, 720)  # flat for 280 steps (issue 37's LODO), then falling
    first = next(t for t in range(20, 1001) if pilot.separated(late[:t]))
    assert 280 < first < 320
    assert abs(pilot.noise(flat) - 0.05) < 0.01  # the per-step noise it was built with


def test_a_budget_without_separation_is_said_and_proposed_as_the_budget(drift):
    (far,) = pilot.run(tasks.resolve(f"{drift}:far"), ADAM_ONLY, budget=40)
    assert far.separated is None and far.steps == 40 and "did not leave its start" in far.describe()
    assert pilot.propose([far], 40)["first"] == 200  # 3 × 40 = 120 → 200


def test_init_schedule_with_a_task_writes_the_pilots_lengths(drift, tmp_path):
    out = tmp_path / "schedule.yaml"
    done = subprocess.run([sys.executable, "-m", "cli", "init-schedule", str(out), "--task", f"{drift}:far",
                           "--pilot-steps", "400"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    schedule = load_schedule(out)
    steps = [g.steps for g in schedule.generations]
    assert steps[0] >= 200 and steps == [steps[0], steps[0], 2 * steps[0], 4 * steps[0]]  # Adam alone needs ≈ 60 × 3
    assert schedule.full_run.steps == 10 * steps[0]
    note = out.read_text()
    assert all(f"#   {o}: the loss" in note for o in ("LODO", "Adam", "AdamW"))
    assert yaml.safe_load(out.read_text())["optimizers"][:2] == ["LODO", "Adam"]


def test_init_schedule_refuses_a_task_mistake_before_the_pilot(tmp_path):
    bad = tmp_path / f"bad_{uuid.uuid4().hex[:8]}.py"
    bad.write_text(DRIFT.replace("return (((self.w - self.target) * batch) ** 2).sum()",
                                 "return ((self.w - self.target) * batch) ** 2"))
    out = tmp_path / "schedule.yaml"
    done = subprocess.run([sys.executable, "-m", "cli", "init-schedule", str(out), "--task", f"{bad}:near"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "not a scalar" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()
