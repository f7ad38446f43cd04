"""Full-run observers: σ (LODO's Hessian-approximation error, Fig. 2 left) every K optimizer steps
and the Rosenbrock trajectory (Fig. 3). References are hand-written training loops that call
`task.hessian_error(opt.preconditioner)` / copy the parameters themselves, the exact Frobenius
σ = ‖I − G H‖_F / √n from G applied to the identity, and the task's start point (−0.5, 2)."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import lodo
import tasks
from tasks.noisy_bowl import NoisyBowl
from tasks.rosenbrock import Rosenbrock
from tuner.trial.loop import SIGMA_POINTS, Job, observations, observe_every_for, run_job, run_trial

from conftest import Interrupted, interrupt_after


def hand_loop(task_name: str, optimizer: str, hparams: dict, steps: int, seed: int, every: int):
    """Train by hand; return ([(evaluations, σ) every `every` steps], [params at each evaluation],
    [exact Frobenius σ at the same steps])."""
    task = tasks.create(task_name, seed=seed)
    opt = lodo.create(optimizer, task.parameters(), seed=seed, **hparams)
    create_graph = getattr(opt, "create_graph", False)
    sigma, exact, trajectory = [], [], []
    for step in range(1, steps + 1):
        batch = task.sample()

        def closure():
            opt.zero_grad()
            trajectory.append(torch.cat([p.detach().reshape(-1) for p in task.parameters()]).numpy().copy())
            loss = task.loss(batch)
            loss.backward(create_graph=create_graph)
            return loss

        opt.step(closure)
        if step % every == 0 and hasattr(task, "hessian_error"):
            sigma.append((len(trajectory), task.hessian_error(opt.preconditioner)))
            n = task.hessian.shape[0]
            gh = opt.preconditioner(task.hessian)  # rows (G H e_i)ᵀ = columns of G H (H, G symmetric)
            exact.append(math.sqrt(float((torch.eye(n, dtype=gh.dtype) - gh).pow(2).sum()) / n))
    opt.zero_grad(set_to_none=True)
    return np.array(sigma), np.array(trajectory), np.array(exact)


def test_sigma_recorded_every_k_steps_equals_hessian_error_of_a_hand_written_lodo_loop():
    steps, every = 120, 20
    result = run_trial("noisy_bowl", "LODO", {}, steps, seed=2, observe_every=every)
    sigma, _, exact = hand_loop("noisy_bowl", "LODO", {}, steps, 2, every)
    assert result.sigma.shape == (steps // every, 2)
    np.testing.assert_array_equal(result.sigma[:, 0], np.arange(every, steps + 1, every))
    np.testing.assert_array_equal(result.sigma, sigma)
    # The fixed-probe estimate is σ: within 10 % of the exact ‖I − G H‖_F / √n (n = 100, 100 probes).
    np.testing.assert_allclose(result.sigma[:, 1], exact, rtol=0.1)


def test_a_lodo_ablation_also_records_sigma_and_baselines_do_not():
    every = 10
    ablation = run_trial("noisy_bowl", "LODO-Global", {}, 30, seed=0, observe_every=every)
    sigma, _, _ = hand_loop("noisy_bowl", "LODO-Global", {}, 30, 0, every)
    np.testing.assert_array_equal(ablation.sigma, sigma)
    adam = run_trial("noisy_bowl", "Adam", {}, 30, seed=0, observe_every=every)
    assert adam.sigma is None and adam.trajectory is None  # no preconditioner; 100 parameters


def test_without_observe_every_nothing_is_recorded_and_the_losses_are_unchanged():
    plain = run_trial("noisy_bowl", "LODO", {}, 50, seed=1)
    observed = run_trial("noisy_bowl", "LODO", {}, 50, seed=1, observe_every=7)
    assert plain.sigma is None and plain.trajectory is None
    assert observed.losses.tobytes() == plain.losses.tobytes()  # σ reads G, never changes the run
    assert len(observed.sigma) == 50 // 7


@pytest.mark.parametrize("optimizer,hparams", [("Adam", {"lr": 0.1}), ("LODO", {}), ("L-BFGS", {})])
def test_rosenbrock_trajectory_equals_the_parameters_of_a_hand_written_loop(optimizer, hparams):
    result = run_trial("rosenbrock", optimizer, hparams, 200, seed=0, observe_every=50)
    _, trajectory, _ = hand_loop("rosenbrock", optimizer, hparams, 200, 0, 50)
    assert result.trajectory.shape == (200, 2)
    np.testing.assert_array_equal(result.trajectory[0], [-0.5, 2.0])  # the start, f(−0.5, 2) evaluated first
    np.testing.assert_array_equal(result.trajectory, trajectory[:200])  # L-BFGS may evaluate past 200
    assert result.sigma is None  # Rosenbrock has no hessian_error


def test_checkpoint_resume_keeps_sigma_bitwise(tmp_path, monkeypatch):
    steps, every = 60, 5
    reference = run_trial("noisy_bowl", "LODO", {}, steps, seed=3, observe_every=every)
    path = tmp_path / "seed-0.ckpt"
    with monkeypatch.context() as m:
        interrupt_after(m, NoisyBowl, 27)
        with pytest.raises(Interrupted):
            run_trial("noisy_bowl", "LODO", {}, steps, seed=3, check_every=4, checkpoint=path,
                      checkpoint_every_s=0, observe_every=every)
    assert len(torch.load(path, weights_only=False)["sigma"]) == 24 // every  # saved at evaluation 24
    resumed = run_trial("noisy_bowl", "LODO", {}, steps, seed=3, check_every=4, checkpoint=path,
                        checkpoint_every_s=0, observe_every=every)
    assert resumed.sigma.tobytes() == reference.sigma.tobytes()
    assert resumed.losses.tobytes() == reference.losses.tobytes()


def test_checkpoint_resume_keeps_the_trajectory_bitwise(tmp_path, monkeypatch):
    reference = run_trial("rosenbrock", "LODO", {}, 200, seed=0, observe_every=50)
    path = tmp_path / "seed-0.ckpt"
    with monkeypatch.context() as m:
        interrupt_after(m, Rosenbrock, 130)
        with pytest.raises(Interrupted):
            run_trial("rosenbrock", "LODO", {}, 200, seed=0, check_every=3, checkpoint=path,
                      checkpoint_every_s=0, observe_every=50)
    resumed = run_trial("rosenbrock", "LODO", {}, 200, seed=0, check_every=3, checkpoint=path,
                        checkpoint_every_s=0, observe_every=50)
    assert resumed.trajectory.tobytes() == reference.trajectory.tobytes()


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_observe_every_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match=r"^Invalid observe_every: "):
        run_trial("noisy_bowl", "LODO", {}, 10, seed=0, observe_every=bad)


def test_full_run_interval_keeps_sigma_at_most_every_200_steps_and_200_points():
    assert observe_every_for(1000) == 200
    assert observe_every_for(100_000) == 500  # 100 000 / 500 = 200 points
    assert observe_every_for(100_001) == 501


def test_full_run_record_holds_sigma_and_tuning_records_do_not():
    steps = 400
    full = run_job(Job(("full", "LODO", 0), "noisy_bowl", "LODO", {}, steps, 4, kind="full"))
    reference, _, _ = hand_loop("noisy_bowl", "LODO", {}, steps, 4, 200)
    assert full["sigma"] == {"step": [200, 400], "value": reference[:, 1].tolist()}
    assert "trajectory" not in full
    tuning = run_job(Job(("t", 0), "noisy_bowl", "LODO", {}, steps, 4))
    assert "sigma" not in tuning and "trajectory" not in tuning


def test_rosenbrock_full_run_record_holds_the_trajectory_as_xy_pairs():
    full = run_job(Job(("full", "Adam", 0), "rosenbrock", "Adam", {"lr": 0.1}, 200, 0, kind="full"))
    _, trajectory, _ = hand_loop("rosenbrock", "Adam", {"lr": 0.1}, 200, 0, 200)
    assert full["trajectory"] == trajectory.tolist()
    assert "sigma" not in full


def test_record_thins_a_long_sigma_series_to_at_most_200_points_keeping_both_ends():
    sigma = np.column_stack([np.arange(1, 1001) * 10.0, np.linspace(1.0, 0.1, 1000)])
    out = observations(SimpleNamespace(sigma=sigma, trajectory=None))["sigma"]
    assert len(out["step"]) == SIGMA_POINTS
    assert out["step"][0] == 10 and out["step"][-1] == 10_000
    assert out["value"][0] == 1.0 and out["value"][-1] == 0.1
    assert np.all(np.diff(out["step"]) > 0)
