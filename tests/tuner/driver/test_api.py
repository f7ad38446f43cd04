"""tuner.tune / tuner.evaluate / tuner.export_table: lr scaling, resume by replay, full-run report."""
import json
import math

import numpy as np
import pytest

import tuner
from tuner.driver.plan import PlanError, Resources
from tuner.driver.schedule import Schedule
from tuner.driver.session import full_run_seed
from tuner.trial.loop import run_trial

TWO = Resources(workers=2)
SCHEDULE = Schedule.from_dict({"task": "noisy_bowl", "population": 4, "generations": [{"noise": 3, "steps": 200}] * 2,
                               "optimizers": ["Adam", "LODO"],
                               "full_run": {"steps": 100, "seeds": 1, "time_milestone_s": None}, "lr_scale": 0.5})


def test_resume_replays_records_reruns_only_missing_and_scales_lr(ray_session, tmp_path):
    rd = tmp_path / "run"
    first = tuner.tune("noisy_bowl", schedule=SCHEDULE, seed=2, run_dir=rd, resources=TWO)
    assert (first.ran, first.reused, first.errors) == (16, 0, 0)
    for opt in ("Adam", "LODO"):  # post-tuning lr scaling (×0.5) on "lr" only, raw GA mean recorded
        assert first.hyperparameters[opt]["lr"] == first.raw[opt]["lr"] * 0.5
        assert {k: v for k, v in first.hyperparameters[opt].items() if k != "lr"} == \
               {k: v for k, v in first.raw[opt].items() if k != "lr"}
        assert first.raw[opt] == first.history[opt][-1]["next_mean"]
    tuned = json.loads((rd / "tuned.json").read_text())
    assert tuned["lr_scale"] == 0.5 and tuned["raw"] == first.raw

    # Simulate a crash in generation 1: some records never written, a half-written temp file.
    for i in (0, 2, 3):
        (rd / "tuning" / "Adam" / f"g01-i{i:02d}.json").unlink()
    for i in range(4):
        (rd / "tuning" / "LODO" / f"g01-i{i:02d}.json").unlink()
    (rd / "tuning" / "Adam" / ".g01-i00.json.x.tmp").write_text('{"gener')
    (rd / "tuned.json").unlink()
    kept = {p: p.stat().st_mtime_ns for p in (rd / "tuning").rglob("g*-i*.json")}

    again = tuner.tune("noisy_bowl", schedule=SCHEDULE, seed=2, run_dir=rd, resume=True, resources=TWO)
    assert (again.reused, again.ran) == (9, 7)
    assert again.hyperparameters == first.hyperparameters  # bit-identical
    assert {p: p.stat().st_mtime_ns for p in kept} == kept


def test_resume_with_another_seed_is_refused(ray_session, tmp_path):
    tuner.tune("noisy_bowl", optimizers=["Adam"], schedule=SCHEDULE, seed=0, run_dir=tmp_path / "r", resources=TWO)
    with pytest.raises(PlanError, match=f"^seed: '{tmp_path / 'r'}' was run with seed 0, not 1$") as info:
        tuner.tune("noisy_bowl", optimizers=["Adam"], schedule=SCHEDULE, seed=1, run_dir=tmp_path / "r", resume=True)
    assert info.value.parameter == "seed"


def test_evaluate_reports_mean_std_over_seeds_at_both_milestones(ray_session, tmp_path):
    hp = {"Momentum": {"lr": 0.1, "momentum": 0.5}}
    report = tuner.evaluate("noisy_bowl", hp, steps=300, seeds=2, time_milestone=0.3, run_dir=tmp_path / "e",
                            resources=TWO)
    ref = [run_trial("noisy_bowl", "Momentum", hp["Momentum"], 300, full_run_seed(0, i)).final_loss for i in range(2)]
    m = report["Momentum"]
    assert m["final_loss_mean"] == pytest.approx(np.mean(ref), rel=1e-12)
    assert m["final_loss_std"] == pytest.approx(np.std(ref), rel=1e-9)
    assert math.isfinite(m["time_loss_mean"]) and m["time_milestone_s"] == 0.3
    assert (m["seeds"], m["diverged"], m["steps"]) == (2, 0, 300) and m["steps_per_second"] > 0
    data = json.loads(tuner.export_table(tmp_path / "e", "json"))
    assert data["results"]["Momentum"]["final_loss_mean"] == m["final_loss_mean"]
    assert data["tuned"]["Momentum"]["hyperparameters"] == hp["Momentum"]


def test_everything_after_task_is_keyword_only_and_bad_settings_fail_before_anything_runs(tmp_path):
    with pytest.raises(TypeError):
        tuner.run("noisy_bowl", ["Adam"])
    with pytest.raises(PlanError, match=r"^schedule: .*full_run\.steps: 0 is not allowed") as info:
        tuner.evaluate("noisy_bowl", {"Adam": {"lr": 0.1}}, steps=0, run_dir=tmp_path / "e")
    assert info.value.parameter == "schedule" and not (tmp_path / "e").exists()
