"""Run directories: atomic records, exact float round-trip, what can be created or opened."""
import math
import os

import pytest

from tuner.driver.rundir import RunDir, RunDirError, atomic_write_json, read_json

SCHEDULE = {"task": "noisy_bowl", "population": 4}


def test_records_round_trip_floats_exactly_including_inf(tmp_path):
    rd = RunDir.create(tmp_path / "r", task="noisy_bowl", schedule=SCHEDULE, seed=3, optimizers=["Adam"])
    rec = {"generation": 2, "index": 7, "seed": 1, "hparams": {"lr": 0.1 + 0.2, "beta1": 1 / 3},
           "steps": 10, "fitness": math.inf}
    rd.write_individual("Adam", rec)
    back = rd.read_individual("Adam", 2, 7)
    assert back == rec and back["hparams"]["lr"] == 0.30000000000000004
    assert rd.individual_path("Adam", 2, 7).name == "g02-i07.json"
    manifest = rd.manifest
    assert manifest["task"] == "noisy_bowl" and manifest["seed"] == 3 and {"torch", "ray", "python"} <= set(
        manifest["versions"])


def test_atomic_write_leaves_no_temp_file_and_stray_temp_files_are_ignored(tmp_path):
    rd = RunDir.create(tmp_path / "r", task="noisy_bowl", schedule=SCHEDULE, seed=0, optimizers=["Adam"])
    rd.write_individual("Adam", {"generation": 0, "index": 0, "seed": 0, "hparams": {}, "steps": 1, "fitness": 1.0})
    d = rd.path / "tuning" / "Adam"
    assert sorted(os.listdir(d)) == ["g00-i00.json"]
    (d / ".g00-i01.json.abc.tmp").write_text('{"generation": 0, "ind')  # a write cut by kill -9
    assert [r["index"] for r in rd.individuals("Adam")] == [0]
    assert rd.read_individual("Adam", 0, 1) is None


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"b": 2})
    assert read_json(p) == {"b": 2}


def test_new_run_dir_must_be_empty(tmp_path):
    RunDir.check_new(tmp_path / "fresh")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "f").write_text("x")
    with pytest.raises(RunDirError, match="not empty"):
        RunDir.check_new(tmp_path / "used")
    assert not (tmp_path / "fresh").exists()


def test_open_refuses_a_non_run_dir_an_unreadable_manifest_and_one_without_the_runs_identity(tmp_path):
    RunDir.create(tmp_path / "r", task="noisy_bowl", schedule=SCHEDULE, seed=0, optimizers=["Adam"])
    assert RunDir.open(tmp_path / "r").manifest["seed"] == 0
    with pytest.raises(RunDirError, match=f"^'{tmp_path}' is not a run directory"):
        RunDir.open(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(RunDirError, match="unreadable manifest.json"):
        RunDir.open(tmp_path / "bad")
    (tmp_path / "bad" / "manifest.json").write_text('{"task": "noisy_bowl"}')
    with pytest.raises(RunDirError, match="lacks one of task, schedule, seed, optimizers"):
        RunDir.open(tmp_path / "bad")
