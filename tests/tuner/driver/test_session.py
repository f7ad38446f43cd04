"""The driver's side of a run directory (`tuner.driver.session.Session`), without Ray: jobs come from the
session, run in this process, and go back through `on_result`."""
import json
import math

import numpy as np
import pytest
import torch

from tasks.noisy_bowl import NoisyBowl
from tuner.trial.loop import run_job, state_digest
from tuner.driver.rundir import RunDir, RunDirError
from tuner.driver.schedule import Schedule
from tuner.driver.session import Session, full_run_seed
from tuner.trial.loop import run_trial

from conftest import interrupt_after


def _session(tmp_path, steps: int = 10, seeds: int = 1, population: int = 2, generations: int = 1) -> Session:
    schedule = Schedule.from_dict({"task": "noisy_bowl", "population": population,
                                   "generations": [{"noise": 1, "steps": 5}] * generations,
                                   "optimizers": ["Adam"], "lr_scale": 1.0,
                                   "full_run": {"steps": steps, "seeds": seeds, "time_milestone_s": None}})
    path = tmp_path / "run"
    rd = RunDir(path) if path.exists() else RunDir.create(path, task="noisy_bowl", schedule=schedule.to_dict(),
                                                          seed=0, optimizers=["Adam"])
    return Session(rd, schedule, 0, full_runs=True)


def test_an_individual_that_raises_ranks_last_is_logged_and_the_ga_goes_on(tmp_path):
    session = _session(tmp_path, population=4, generations=2)
    rd = session.rd
    jobs = session.start(["Adam"])
    assert [j.key[2:] for j in jobs] == [(0, i) for i in range(4)]
    more = []
    for j in jobs:
        result = {"error": "Traceback (most recent call last):\nValueError: boom\n"} if j.key[3] == 2 else \
                 {"final_loss": float(j.key[3]), "seconds": 0.1}
        more += session.on_result(j, result)
    fitness = [i["fitness"] for i in session.gas["Adam"].history[0]["individuals"]]
    assert fitness == [0.0, 1.0, math.inf, 3.0] and session.gas["Adam"].history[0]["selected"] == [0, 1]
    assert [j.key[2] for j in more if j.key[0] == "tuning"] == [1] * 4  # generation 1 was asked (and a noise check)
    assert (rd.path / "errors" / "Adam" / "g00-i02.txt").read_text().endswith("ValueError: boom\n")
    assert rd.read_individual("Adam", 0, 2)["error"] == "ValueError: boom"
    assert session.errors == 1


def test_a_full_run_that_raises_is_recorded_with_its_own_traceback_file(tmp_path):
    session = _session(tmp_path, seeds=2)
    [first, second] = session.start_full("Adam", {"lr": 0.1})
    session.on_result(first, {"error": "Traceback (most recent call last):\nValueError: boom\n", "seconds": 0.1})
    record = session.rd.read_full("Adam", 0)
    assert (record["final_loss"], record["error"], record["traceback"]) == \
           (math.inf, "ValueError: boom", "errors/Adam/full-seed-0.txt")
    assert (session.rd.path / record["traceback"]).read_text().endswith("ValueError: boom\n")
    assert not (session.rd.path / "errors" / "Adam" / "g99-i00.txt").exists()
    assert session.errors == 1 and session.full_ran == 1


def test_resume_continues_an_interrupted_full_run_from_its_checkpoint(tmp_path, monkeypatch):
    """A resumed session hands full/<opt>/seed-N.ckpt to the trial: the record's early losses are
    the checkpoint's (marked), the rest those of an uninterrupted run; the file goes once recorded."""
    hparams, steps = {"lr": 0.05}, 300
    path = tmp_path / "run" / "full" / "Adam" / "seed-0.ckpt"
    session = _session(tmp_path, steps, 1)
    [job] = session.start_full("Adam", hparams)
    assert job.checkpoint == str(path)
    with monkeypatch.context() as m:  # the first session dies after 250 steps, before its record
        interrupt_after(m, NoisyBowl, 250)
        assert "Interrupted" in run_job(job, checkpoint_every_s=0)["error"]
    saved = torch.load(path, weights_only=False)
    assert saved["recorded"] == 200  # the last check (every 100 evaluations) before the kill
    saved["losses"][:] = 1e6  # a marker only a resumed run can report (resealed: a digest guards the content)
    torch.save({**saved, "digest": state_digest(saved)}, path)

    session = _session(tmp_path, steps, 1)  # --resume: the record is missing, so the run is planned again
    [job] = session.start_full("Adam", hparams)
    session.on_result(job, run_job(job))
    record = json.loads((tmp_path / "run" / "full" / "Adam" / "seed-0.json").read_text())
    reference = run_trial("noisy_bowl", "Adam", hparams, steps, full_run_seed(0, 0)).losses
    curve = record["curve"]["loss"]  # 100 buckets of 3 evaluations
    assert curve[: 200 // 3] == [1e6] * (200 // 3)
    assert curve[67:] == [float(np.mean(reference[3 * b: 3 * b + 3])) for b in range(67, 100)]
    assert not path.exists()  # deleted once the record is written


def test_only_full_runs_get_a_checkpoint_path(tmp_path):
    session = _session(tmp_path, 10, 2)
    rd = session.rd
    assert [job.checkpoint for job in session.start_ga("Adam")] == [None, None]
    full = session.start_full("Adam", {"lr": 0.1})
    assert [job.checkpoint for job in full] == [str(rd.path / "full" / "Adam" / f"seed-{i}.ckpt") for i in range(2)]


def test_a_refused_checkpoint_stops_the_session_and_stays_any_other_result_deletes_it(tmp_path):
    """`keep_checkpoint` (a checkpoint refused: another trial's, damaged) stops the session with its
    one-line message and leaves the file for the user, writing no record; any other result, error or
    not, deletes the checkpoint once the record is written."""
    session = _session(tmp_path, 300, 3)
    jobs = session.start_full("Adam", {"lr": 0.05})
    error = "Traceback (most recent call last):\ntuner.trial.CheckpointError: belongs to another trial\n"
    (session.rd.path / "full" / "Adam").mkdir(parents=True)
    for job in jobs:
        open(job.checkpoint, "wb").close()
    with pytest.raises(RunDirError, match="^Invalid checkpoint: 'x' belongs to another trial$"):
        session.on_result(jobs[0], {"error": error, "keep_checkpoint": True,
                                    "checkpoint_error": "Invalid checkpoint: 'x' belongs to another trial"})
    for job, result in zip(jobs[1:], [{"error": "Traceback\nValueError: boom\n"}, {"final_loss": 1.0, "seconds": 0.1}]):
        session.on_result(job, result)
    assert [(session.rd.path / "full" / "Adam" / f"seed-{i}.ckpt").exists() for i in range(3)] == [True, False, False]
    assert session.rd.read_full("Adam", 0) is None and "boom" in session.rd.read_full("Adam", 1)["error"]