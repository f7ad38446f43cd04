"""Per-lane checkpoints of batched full runs (issue 15): each lane of a `BatchJob` saves its own state to
its job's checkpoint, and an interrupted batch continues each lane exactly where an uninterrupted run
would be, also when its lanes resume from different points; a damaged or foreign lane checkpoint is
refused as the unbatched path refuses one, and the file is kept."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import Interrupted, interrupt_after
from tasks.batched import BatchedNoisyBowl
from tasks.noisy_bowl import NoisyBowl
from tuner.driver.rundir import RunDirError
from tuner.driver.session import Session
from tuner.trial.loop import (LANE, BatchJob, CheckpointError, Job, batchable, fingerprint, is_lane_checkpoint,
                         load_checkpoint, run_batched_trial, run_job, run_trial)

STEPS = 2000  # full runs of 2000 evaluations: checks every 100, σ (LODO) every 200 optimizer steps
LANES = {"Adam": [{"lr": 0.05}, {"lr": 0.2}, {"lr": 0.01}], "LODO": [{}, {"lr": 0.5}, {"meta_lr": 0.003}],
         "L-BFGS": [{"lr": 0.5}, {"lr": 1.3, "tau": 1e4}, {"lr": 0.1, "tau": 100.0}]}


def _jobs(tmp_path, optimizer, seeds=(11, 12, 13), hparams=None) -> tuple[Job, ...]:
    hparams = hparams or LANES[optimizer]
    return tuple(Job(("full", optimizer, i), "noisy_bowl", optimizer, hp, STEPS, seed, {"dim": 10}, kind="full",
                     checkpoint=str(tmp_path / "full" / optimizer / f"seed-{i}.ckpt"))
                 for i, (hp, seed) in enumerate(zip(hparams, seeds)))


def _interrupt(monkeypatch, jobs, samples: int) -> None:
    """Run `jobs` as one batch, saving at every check, and stop it before its (samples + 1)-th step."""
    with monkeypatch.context() as m:
        interrupt_after(m, BatchedNoisyBowl, samples)
        with pytest.raises(Interrupted):
            run_batched_trial("noisy_bowl", jobs[0].optimizer, [j.hparams for j in jobs], STEPS, [j.seed for j in jobs],
                              task_options={"dim": 10}, observe_every=200, checkpoints=[j.checkpoint for j in jobs],
                              checkpoint_every_s=0)


def _same(lane: dict, reference: dict) -> None:
    assert "error" not in lane, lane.get("error")
    assert lane["final_loss"] == reference["final_loss"]
    assert lane["evaluations"] == reference["evaluations"] == STEPS
    assert lane["curve"]["loss"] == reference["curve"]["loss"] and lane["curve"]["step"] == reference["curve"]["step"]
    assert lane.get("sigma") == reference.get("sigma")


@pytest.mark.parametrize("optimizer", ["Adam", "LODO", "L-BFGS"])
def test_an_interrupted_batched_full_run_resumes_every_lane_bit_identically(tmp_path, monkeypatch, optimizer):
    jobs = _jobs(tmp_path, optimizer)
    reference = run_job(BatchJob(_jobs(tmp_path / "reference", optimizer)))["batch"]  # never interrupted
    evaluations = 2 if optimizer == "L-BFGS" else 1  # per sample: L-BFGS evaluates each sample twice
    _interrupt(monkeypatch, jobs, 1250 // evaluations)
    for job in jobs:  # each lane's own checkpoint, of the last check before the interruption
        assert load_checkpoint(job.checkpoint, fingerprint("noisy_bowl", optimizer, job.hparams, STEPS, job.seed,
                                                           {"dim": 10}, form=LANE))["recorded"] == 1200
    calls = interrupt_after(monkeypatch, BatchedNoisyBowl, STEPS)  # counts the resumed run's steps
    resumed = run_job(BatchJob(jobs), checkpoint_every_s=0)["batch"]
    assert calls["n"] == (STEPS - 1200) // evaluations  # it continued; it did not start over
    for lane, ref in zip(resumed, reference):
        _same(lane, ref)
    if optimizer == "LODO":
        assert len(reference[0]["sigma"]["step"]) == STEPS // 200


def test_lanes_resuming_from_different_points_each_continue_exactly(tmp_path, monkeypatch):
    """Two batches interrupted at different checks, then a fresh lane: resumed as one BatchJob, the lanes
    run in groups by resume point, and each equals its uninterrupted run."""
    jobs = _jobs(tmp_path, "Adam", seeds=(21, 22, 23))
    reference = run_job(BatchJob(_jobs(tmp_path / "reference", "Adam", seeds=(21, 22, 23))))["batch"]
    _interrupt(monkeypatch, jobs[:1], 350)
    _interrupt(monkeypatch, jobs[1:2], 820)
    assert [torch.load(j.checkpoint, weights_only=True)["recorded"] for j in jobs[:2]] == [300, 800]
    assert not os.path.exists(jobs[2].checkpoint)
    resumed = run_job(BatchJob(jobs), checkpoint_every_s=3600)["batch"]
    for lane, ref in zip(resumed, reference):
        _same(lane, ref)


def test_a_damaged_lane_checkpoint_is_refused_kept_and_stops_the_session(tmp_path, monkeypatch):
    jobs = _jobs(tmp_path, "Adam")
    _interrupt(monkeypatch, jobs, 300)
    damaged = Path(jobs[1].checkpoint)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside a tensor
    damaged.write_bytes(bytes(data))
    calls = interrupt_after(monkeypatch, BatchedNoisyBowl, STEPS)
    out = run_job(BatchJob(jobs), checkpoint_every_s=0)
    assert out["keep_checkpoint"] is True and calls["n"] == 0  # refused before any work
    assert "damaged" in out["checkpoint_error"] and "seed-1.ckpt" in out["checkpoint_error"]
    session = Session.__new__(Session)  # only what recording a batch's results needs
    with pytest.raises(RunDirError, match="seed-1.ckpt.*damaged"):
        session.on_result(BatchJob(jobs), out)
    assert all(os.path.exists(j.checkpoint) for j in jobs)  # nothing deleted: the user decides


def test_a_lane_checkpoint_is_another_trials_to_run_trial_and_to_other_hyperparameters(tmp_path, monkeypatch):
    jobs = _jobs(tmp_path, "Adam")
    _interrupt(monkeypatch, jobs, 300)
    path = jobs[0].checkpoint
    with pytest.raises(CheckpointError, match="belongs to another trial"):  # the unbatched form cannot continue it
        run_trial("noisy_bowl", "Adam", jobs[0].hparams, STEPS, jobs[0].seed, {"dim": 10}, checkpoint=path)
    with pytest.raises(CheckpointError, match="belongs to another trial"):
        run_batched_trial("noisy_bowl", "Adam", [{"lr": 0.3}], STEPS, [jobs[0].seed], {"dim": 10}, checkpoints=[path])


def test_a_lane_checkpoint_stays_batched_and_an_unbatched_one_stays_unbatched(tmp_path, monkeypatch):
    """`batchable` routes each checkpoint to the form that wrote it; a lane's checkpoint given to
    `run_job` alone (a session without batching) continues as a one-lane batch, bit for bit."""
    jobs = _jobs(tmp_path, "Adam")
    _interrupt(monkeypatch, jobs, 500)
    assert is_lane_checkpoint(jobs[0].checkpoint) and batchable(jobs[0])
    single = Job(("full", "Adam", 9), "noisy_bowl", "Adam", {}, STEPS, 5, {"dim": 10}, kind="full",
                 checkpoint=str(tmp_path / "single.ckpt"))
    with monkeypatch.context() as m:
        interrupt_after(m, NoisyBowl, 150)
        with pytest.raises(Interrupted):
            run_trial("noisy_bowl", "Adam", {}, STEPS, 5, {"dim": 10}, checkpoint=single.checkpoint,
                      checkpoint_every_s=0)
    assert not is_lane_checkpoint(single.checkpoint) and not batchable(single)
    reference = run_job(BatchJob(_jobs(tmp_path / "reference", "Adam")[:1]))["batch"][0]
    alone = run_job(jobs[0], checkpoint_every_s=0)
    _same(alone, reference)
    assert alone["lanes"] == 1


_KILLED_BATCH = """
import sys, torch
torch.set_num_threads(1)
from tuner.trial.loop import run_batched_trial
run_batched_trial("noisy_bowl", "LODO", [{}, {"lr": 0.5}], 200000, [5, 6], {"dim": 10}, check_every=7,
                  checkpoints=sys.argv[1:], checkpoint_every_s=0)
"""


def test_a_batch_killed_with_sigkill_leaves_intact_lane_checkpoints_that_resume_bitwise(tmp_path, monkeypatch):
    paths = [str(tmp_path / f"seed-{i}.ckpt") for i in range(2)]
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_BATCH, *paths], cwd=Path(__file__).resolve().parents[3])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(os.path.exists(p) for p in paths):
            time.sleep(0.05)
        time.sleep(0.3)  # let it overwrite the checkpoints a few times, then kill it mid-write or mid-step
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert all(os.path.exists(p) for p in paths), "the subprocess wrote no checkpoints within 60 s"
    lanes = [({}, 5), ({"lr": 0.5}, 6)]
    keys = [fingerprint("noisy_bowl", "LODO", hp, 200000, seed, {"dim": 10}, form=LANE) for hp, seed in lanes]
    recorded = [load_checkpoint(p, k)["recorded"] for p, k in zip(paths, keys)]  # intact: the digests match
    assert all(r % 7 == 0 and r > 0 for r in recorded)
    stop = max(recorded) + 70

    def saved_at_stop(lane, checkpoint, samples):
        """Lane `lane` alone from `checkpoint` until `samples` more steps: its checkpoint then."""
        hp, seed = lanes[lane]
        with monkeypatch.context() as m:
            interrupt_after(m, BatchedNoisyBowl, samples)
            with pytest.raises(Interrupted):
                run_batched_trial("noisy_bowl", "LODO", [hp], 200000, [seed], {"dim": 10}, check_every=7,
                                  checkpoints=[checkpoint], checkpoint_every_s=0)
        return torch.load(checkpoint, weights_only=True)

    for lane, (path, r) in enumerate(zip(paths, recorded)):
        reference = saved_at_stop(lane, str(tmp_path / f"reference-{lane}.ckpt"), stop)
        resumed = saved_at_stop(lane, path, stop - r)
        assert resumed["recorded"] == reference["recorded"] == stop
        assert resumed["losses"].numpy().tobytes() == reference["losses"].numpy().tobytes()
        assert torch.equal(resumed["optimizer"]["theta"], reference["optimizer"]["theta"])
