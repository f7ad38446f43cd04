"""Mid-run checkpoints: an interrupted trial resumed from its checkpoint records exactly the
losses of an uninterrupted run with the same seed (the reference: a plain run without any
checkpoint), and a checkpoint of another trial is refused."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import lodo
import tasks
from tasks.image_generation import ImageGeneration
from tasks.noisy_bowl import NoisyBowl
from tuner.trial.loop import CheckpointError, Job, run_job, run_trial

from conftest import Interrupted, interrupt_after


def count_samples(monkeypatch, cls) -> dict:
    return interrupt_after(monkeypatch, cls, 10**9)


@pytest.mark.parametrize("optimizer,check_every", [("Adam", 1), ("LODO", 4), ("L-BFGS", 3)])
def test_resumed_noisy_bowl_run_matches_uninterrupted_bitwise(tmp_path, monkeypatch, optimizer, check_every):
    steps, cut = 60, 25
    reference = run_trial("noisy_bowl", optimizer, {}, steps, seed=3)
    path = tmp_path / "seed-0.ckpt"
    with monkeypatch.context() as m:
        interrupt_after(m, NoisyBowl, cut)
        with pytest.raises(Interrupted):
            run_trial("noisy_bowl", optimizer, {}, steps, seed=3, check_every=check_every,
                      checkpoint=path, checkpoint_every_s=0)
    saved = torch.load(path, weights_only=False)
    assert 0 < saved["recorded"] <= cut * 2 and saved["recorded"] < steps
    with monkeypatch.context() as m:
        calls = count_samples(m, NoisyBowl)
        resumed = run_trial("noisy_bowl", optimizer, {}, steps, seed=3, check_every=check_every,
                            checkpoint=path, checkpoint_every_s=0)
    evaluations_per_step = 2 if optimizer == "L-BFGS" else 1
    assert calls["n"] == -(-(steps - saved["recorded"]) // evaluations_per_step)  # continued, not restarted
    assert resumed.losses.tobytes() == reference.losses.tobytes()
    assert resumed.final_loss == reference.final_loss
    assert np.all(np.diff(resumed.times) >= 0) and resumed.times[saved["recorded"]] >= saved["times"][-1].item()


def test_resumed_image_generation_run_matches_uninterrupted_bitwise(tmp_path, monkeypatch):
    options = {"synthetic": True, "batch_size": 4, "num_train": 32}
    steps = 6
    reference = run_trial("image_generation", "Adam", {"lr": 1e-3}, steps, seed=1, task_options=options)
    path = tmp_path / "seed-0.ckpt"
    with monkeypatch.context() as m:
        interrupt_after(m, ImageGeneration, 3)
        with pytest.raises(Interrupted):
            run_trial("image_generation", "Adam", {"lr": 1e-3}, steps, seed=1, task_options=options,
                      check_every=1, checkpoint=path, checkpoint_every_s=0)
    assert torch.load(path, weights_only=False)["recorded"] == 3
    resumed = run_trial("image_generation", "Adam", {"lr": 1e-3}, steps, seed=1, task_options=options,
                        check_every=1, checkpoint=path, checkpoint_every_s=0)
    assert resumed.losses.tobytes() == reference.losses.tobytes()


@pytest.mark.parametrize("change", [{"seed": 4}, {"hparams": {"lr": 0.5}}, {"steps": 61}, {"optimizer": "LODO"}])
def test_checkpoint_of_another_trial_is_refused(tmp_path, monkeypatch, change):
    path = tmp_path / "seed-0.ckpt"
    trial = dict(task="noisy_bowl", optimizer="Adam", hparams={"lr": 0.1}, steps=60, seed=3)
    with monkeypatch.context() as m:
        interrupt_after(m, NoisyBowl, 10)
        with pytest.raises(Interrupted):
            run_trial(**trial, check_every=1, checkpoint=path, checkpoint_every_s=0)
    with pytest.raises(CheckpointError, match="belongs to another trial"):
        run_trial(**{**trial, **change}, check_every=1, checkpoint=path, checkpoint_every_s=0)


def test_half_written_temp_file_is_ignored(tmp_path):
    path = tmp_path / "seed-0.ckpt"
    (tmp_path / ".seed-0.ckpt.k2j4.tmp").write_bytes(b"PK\x03\x04 torn write")
    reference = run_trial("noisy_bowl", "Adam", {}, 40, seed=2)
    fresh = run_trial("noisy_bowl", "Adam", {}, 40, seed=2, check_every=1, checkpoint=path, checkpoint_every_s=0)
    assert fresh.losses.tobytes() == reference.losses.tobytes()
    assert path.is_file()  # the run's own checkpoint, written beside the stray temp file


def test_checkpoint_is_saved_only_at_checks_and_not_before_the_interval(tmp_path, monkeypatch):
    path = tmp_path / "seed-0.ckpt"
    with monkeypatch.context() as m:
        interrupt_after(m, NoisyBowl, 23)
        with pytest.raises(Interrupted):
            run_trial("noisy_bowl", "Adam", {}, 60, seed=3, check_every=5, checkpoint=path, checkpoint_every_s=0)
    assert torch.load(path, weights_only=False)["recorded"] == 20  # the last check before step 24
    quiet = tmp_path / "quiet.ckpt"
    run_trial("noisy_bowl", "Adam", {}, 60, seed=3, check_every=1, checkpoint=quiet, checkpoint_every_s=3600)
    assert not quiet.exists()


def test_invalid_checkpoint_every_s_is_refused(tmp_path):
    with pytest.raises(ValueError, match="Invalid checkpoint_every_s: -1"):
        run_trial("noisy_bowl", "Adam", {}, 10, seed=0, checkpoint=tmp_path / "c.ckpt", checkpoint_every_s=-1)


_KILLED_RUN = """
import sys, torch
torch.set_num_threads(1)
from tuner.trial.loop import run_trial
run_trial("noisy_bowl", "LODO", {}, 200000, seed=5, check_every=7, checkpoint=sys.argv[1], checkpoint_every_s=0)
"""


def test_run_killed_with_sigkill_resumes_bitwise(tmp_path):
    path = tmp_path / "seed-0.ckpt"
    steps = 200000
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(path)], cwd=Path(__file__).resolve().parents[3])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not path.exists():
            time.sleep(0.05)
        time.sleep(0.3)  # let it overwrite the checkpoint a few times, then kill it mid-write or mid-step
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert path.exists(), "the subprocess wrote no checkpoint within 60 s"
    recorded = torch.load(path, weights_only=False)["recorded"]
    assert recorded % 7 == 0 and 0 < recorded < steps
    stop = recorded + 30

    def losses_up_to_stop(checkpoint, monkeypatch_context, samples):
        """Run until `samples` more optimizer steps, then read the losses saved at the last step."""
        interrupt_after(monkeypatch_context, NoisyBowl, samples)
        with pytest.raises(Interrupted):
            run_trial("noisy_bowl", "LODO", {}, steps, seed=5, check_every=1, checkpoint=checkpoint,
                      checkpoint_every_s=0)
        saved = torch.load(checkpoint, weights_only=False)
        assert saved["recorded"] == stop
        return saved["losses"].numpy()

    with pytest.MonkeyPatch.context() as m:  # the reference: never interrupted before `stop`
        reference = losses_up_to_stop(tmp_path / "reference.ckpt", m, stop)
    with pytest.MonkeyPatch.context() as m:
        resumed = losses_up_to_stop(path, m, stop - recorded)
    assert resumed.tobytes() == reference.tobytes()


def test_executor_full_job_continues_from_its_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "full" / "Adam" / "seed-0.ckpt"
    job = Job(("full", "Adam", 0), "noisy_bowl", "Adam", {"lr": 0.05}, 80, 7, {}, "full", None, str(path))
    with monkeypatch.context() as m:
        interrupt_after(m, NoisyBowl, 30)
        with pytest.raises(Interrupted):
            run_trial("noisy_bowl", "Adam", {"lr": 0.05}, 80, 7, task_options={}, check_every=1,
                      checkpoint=path, checkpoint_every_s=0)
    with monkeypatch.context() as m:
        calls = count_samples(m, NoisyBowl)
        out = run_job(job, checkpoint_every_s=0)
    reference = run_trial("noisy_bowl", "Adam", {"lr": 0.05}, 80, 7)
    assert "error" not in out, out.get("error")
    assert calls["n"] == 80 - 30
    assert out["final_loss"] == reference.final_loss


def test_a_job_refused_for_another_trials_checkpoint_says_keep_it_and_other_errors_do_not(tmp_path, monkeypatch):
    path = tmp_path / "seed-0.ckpt"
    with monkeypatch.context() as m:  # a checkpoint left by a run with other hyperparameters
        interrupt_after(m, NoisyBowl, 5)
        with pytest.raises(Interrupted):
            run_trial("noisy_bowl", "Adam", {"lr": 0.5}, 80, 7, task_options={}, check_every=1, checkpoint=path,
                      checkpoint_every_s=0)
    refused = run_job(Job(("full", "Adam", 0), "noisy_bowl", "Adam", {"lr": 0.05}, 80, 7, kind="full",
                          checkpoint=str(path)))
    assert "CheckpointError" in refused["error"] and refused["keep_checkpoint"] is True
    failed = run_job(Job(("full", "Adam", 0), "noisy_bowl", "Adam", {"lr": -1.0}, 80, 7, kind="full"))
    assert "lr" in failed["error"] and failed["keep_checkpoint"] is False


def test_lars_gets_the_run_length_for_its_decay():
    """LARS's (1 − progress)² decay needs total_steps: the trial passes its step count."""
    steps = 30
    reference_task = tasks.create("noisy_bowl", seed=1)
    opt = lodo.create("LARS", reference_task.parameters(), total_steps=steps)
    expected = []
    for _ in range(steps):
        batch = reference_task.sample()

        def closure():
            opt.zero_grad()
            loss = reference_task.loss(batch)
            loss.backward()
            expected.append(loss.item())
            return loss

        opt.step(closure)
    result = run_trial("noisy_bowl", "LARS", {}, steps, seed=1)
    np.testing.assert_array_equal(result.losses, expected)
