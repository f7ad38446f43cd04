"""Pruning hopeless GA trials (issue 38, the schedule's opt-in `prune:`): the running loss at fixed
fractions against the previous generation's quantile, decided the same way unbatched and batched,
for any worker count, and again on resume; a pruned trial ranks below every finished one."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tuner.trial.prune import points, thresholds
from tuner.driver.rundir import RunDir
from tuner.driver.schedule import Schedule, ScheduleError
from tuner.driver.session import Session
from tuner.trial.loop import run_batched_trial, run_trial

from conftest import drive_session, kill_9_when

ROOT = Path(__file__).resolve().parents[3]
SCHEDULE = {"task": "noisy_bowl", "population": 8, "generations": [{"noise": 3, "steps": 100}] * 3,
            "optimizers": ["Adam"], "full_run": {"steps": 200, "seeds": 1, "time_milestone_s": None},
            "lr_scale": 1, "prune": {"at": [0.25, 0.5]}}


def test_the_running_loss_and_the_decision_are_the_same_unbatched_and_batched():
    hparams = [{"lr": lr} for lr in (0.003, 0.05, 0.5, 3.0, 30.0)]
    seeds = [0, 1, 2, 3, 4]
    reference = [run_trial("noisy_bowl", "Adam", h, 200, s) for h, s in zip(hparams, seeds)]
    e = points([0.25, 0.5], 200)
    assert e == [50, 100]
    by_hand = [[float(np.mean(r.losses[:k][-math.ceil(0.1 * k):])) for k in e] for r in reference]
    threshold = sorted(row[0] for row in by_hand)[2]  # the median at 0.25: the two worse lanes stop there
    prune = ((50, threshold), (100, None))
    alone = [run_trial("noisy_bowl", "Adam", h, 200, s, prune=prune) for h, s in zip(hparams, seeds)]
    lanes = run_batched_trial("noisy_bowl", "Adam", hparams, 200, seeds, prune=prune)
    for ref, mine, lane, row in zip(reference, alone, lanes, by_hand):
        stopped = row[0] > threshold
        assert (mine.pruned is not None) == (lane.pruned is not None) == stopped
        assert mine.running == pytest.approx(row[:1] if stopped else row, rel=1e-12)
        assert lane.running == pytest.approx(mine.running, rel=1e-12)
        if stopped:
            assert len(mine.losses) == len(lane.losses) == 50 and mine.final_loss == lane.final_loss == math.inf
            assert mine.losses.tobytes() == ref.losses[:50].tobytes()
        else:
            assert mine.losses.tobytes() == ref.losses.tobytes() and mine.final_loss == ref.final_loss
    assert sum(r.pruned is not None for r in alone) == 2


def test_thresholds_are_a_quantile_of_the_previous_generations_better_half():
    previous = [(0.5, [1.0, 0.5]), (math.inf, [9.0]), (0.7, [3.0, 2.5]), (0.6, [4.0, 1.5])]
    assert thresholds(previous, 2, 1.0) == [4.0, 1.5]  # trials 0 and 3 (fitness 0.5, 0.6) were selected
    assert thresholds(previous, 2, 0.5) == [1.0, 0.5]
    assert thresholds([(math.inf, [1.0]), (math.inf, [2.0])], 2, 1.0) == [None, None]  # nothing finished


def _session(path, workers, batch, schedule=SCHEDULE) -> Session:
    schedule = Schedule.from_dict(schedule)
    rd = RunDir(path) if path.exists() else RunDir.create(path, task="noisy_bowl", schedule=schedule.to_dict(),
                                                          seed=5, optimizers=list(schedule.optimizers))
    session = Session(rd, schedule, 5, full_runs=True)
    session.workers, session.batch = workers, batch
    return session


def _tuning(path) -> dict:
    return {p.name: json.loads(p.read_text()) for p in sorted((path / "tuning" / "Adam").glob("g*.json"))}


def _decisions(records: dict) -> dict:
    return {name: (r.get("pruned", {}).get("evaluation"), r["evaluations"]) for name, r in records.items()}


def test_pruning_decisions_are_identical_for_1_and_2_workers_batched_or_not(tmp_path):
    runs = {}
    for workers, batch in ((1, False), (2, False), (1, True), (2, True)):
        path = tmp_path / f"w{workers}-{batch}"
        session = _session(path, workers, batch)
        drive_session(session, session.start(["Adam"]))
        runs[workers, batch] = (_tuning(path), json.loads((path / "tuned.json").read_text()))
    records, tuned = runs[1, False]
    pruned = [n for n, r in records.items() if "pruned" in r]
    assert pruned and all(not n.startswith("g00") for n in pruned)  # generation 0 is never pruned
    assert all(records[n]["fitness"] == math.inf and records[n]["evaluations"] < records[n]["steps"] for n in pruned)
    for other, other_tuned in runs.values():
        assert _decisions(other) == _decisions(records)
        assert other_tuned["hyperparameters"] == tuned["hyperparameters"]


def test_a_pruned_run_resumed_after_an_interruption_equals_an_uninterrupted_one(tmp_path):
    straight = _session(tmp_path / "straight", 1, True)
    drive_session(straight, straight.start(["Adam"]))
    cut = _session(tmp_path / "cut", 1, False)
    drive_session(cut, cut.start(["Adam"]), stop_after=11)  # generation 1 partly run
    resumed = _session(tmp_path / "cut", 2, True)
    drive_session(resumed, resumed.start(["Adam"]))
    assert _decisions(_tuning(tmp_path / "cut")) == _decisions(_tuning(tmp_path / "straight"))
    read = lambda p: json.loads((p / "tuned.json").read_text())["hyperparameters"]  # noqa: E731
    assert read(tmp_path / "cut") == read(tmp_path / "straight")


@pytest.mark.slow
def test_a_pruned_run_killed_with_sigkill_resumes_to_the_same_records(tmp_path):
    schedule = tmp_path / "s.yaml"
    schedule.write_text(yaml.safe_dump({**SCHEDULE, "population": 6,
                                        "generations": [{"noise": 3, "steps": 2000}] * 3}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    common = ["--task", "noisy_bowl", "--schedule", str(schedule), "--optimizers", "Adam", "--workers", "1",
              "--seed", "5", "--quiet"]
    rd = tmp_path / "killed"
    kill_9_when([*common, "--run-dir", str(rd)], lambda: len(list(rd.glob("tuning/Adam/g01-*.json"))) >= 2,
                env=env, timeout=600)
    resumed = subprocess.run([sys.executable, "-m", "cli", "--resume", str(rd), "--quiet"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    straight = subprocess.run([sys.executable, "-m", "cli", *common, "--run-dir", str(tmp_path / "straight")],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr
    assert _decisions(_tuning(rd)) == _decisions(_tuning(tmp_path / "straight"))
    assert any("pruned" in r for r in _tuning(rd).values())


@pytest.mark.parametrize("prune,message", [
    ({"at": [0.5, 0.25]}, "s.yaml: prune.at: [0.5, 0.25] is not allowed"),
    ({"at": [1.0]}, "s.yaml: prune.at: [1.0] is not allowed"),
    ({"quantile": 0}, "s.yaml: prune.quantile: 0 is not allowed"),
    ({"every": 3}, "s.yaml: prune.every: unknown key"),
    ([0.5], "s.yaml: prune: [0.5] is not allowed"),
])
def test_bad_prune_settings_are_one_line_errors(prune, message):
    with pytest.raises(ScheduleError) as e:
        Schedule.from_dict({**SCHEDULE, "prune": prune}, source="s.yaml")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_without_prune_records_have_no_pruning_fields(tmp_path):
    session = _session(tmp_path / "plain", 1, True, {k: v for k, v in SCHEDULE.items() if k != "prune"})
    drive_session(session, session.start(["Adam"]))
    for record in _tuning(tmp_path / "plain").values():
        assert not {"running", "pruned", "evaluations"} & set(record)


def test_report_counts_the_pruned_trials_and_the_steps_they_saved(tmp_path):
    from tuner.report.report import write_report

    path = tmp_path / "run"
    session = _session(path, 1, False)
    drive_session(session, session.start(["Adam"]))
    records = _tuning(path)
    pruned = [r for r in records.values() if "pruned" in r]
    saved = sum(r["steps"] - r["pruned"]["evaluation"] for r in pruned)
    write_report(path)
    text = (path / "report.md").read_text()
    assert "## Pruning" in text and pruned
    assert f"| Adam | {len(pruned)} of {len(records)} | {saved:,} of {sum(r['steps'] for r in records.values()):,} |" in text
