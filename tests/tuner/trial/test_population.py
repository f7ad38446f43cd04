"""Population-batched trials (issue 15): every lane equals the unbatched run_trial with its seed."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tuner.trial.loop import run_batched_trial, supports_batched
from tuner.trial.loop import run_trial

# Per optimizer: four lanes, the third diverges (a huge lr) and is dropped at the first check
# while the others run on.
LANES = {
    "Adam": [dict(lr=0.01), dict(lr=0.1, beta1=0.5, beta2=0.99), dict(lr=1e200), {}],
    "Momentum": [dict(lr=0.1, momentum=0.9), dict(lr=0.05), dict(lr=100.0, momentum=0.5), {}],
    "RMSprop": [dict(lr=0.01), dict(lr=0.01, rho=0.99, momentum=0.9), dict(lr=1e200, rho=0.5), {}],
    "Yogi": [dict(lr=0.01), dict(lr=0.1, beta1=0.5), dict(lr=1e200), {}],
    "LODO": [dict(lr=0.5), dict(lr=1.0, meta_lr=0.01, beta=0.5), dict(lr=1e5), {}],
    "L-BFGS": [dict(lr=0.1), dict(lr=0.5, tau=100.0), dict(lr=1e10), {}],
    "O-LBFGS": [dict(lr=0.1), dict(lr=0.5, tau=100.0), dict(lr=1e10), {}],
}
SEEDS = [3, 7, 11, 5]
STEPS = {"noisy_bowl": 300, "rosenbrock": 200}


def assert_same_trial(batched, reference):
    assert batched.diverged == reference.diverged
    assert len(batched.times) == len(batched.losses)
    if reference.diverged:
        # Past ~1e300 a lane's loss overflows; whether a step gives inf, nan or a last finite
        # value depends on the summation order of the CPU's vector kernels (CI failed on this),
        # so a diverged lane agrees on every step both computed finitely, and blows up (its
        # recording cut after the first non-finite loss) within one step of the reference.
        assert abs(len(batched.losses) - len(reference.losses)) <= 1
        assert not np.isfinite(batched.losses[-1]) and not np.isfinite(reference.losses[-1])
        n = min(len(batched.losses), len(reference.losses)) - 1
        np.testing.assert_allclose(batched.losses[:n], reference.losses[:n], rtol=1e-5)
        assert batched.final_loss == math.inf
        return
    assert len(batched.losses) == len(reference.losses) and np.isfinite(batched.losses).all()
    np.testing.assert_allclose(batched.losses, reference.losses, rtol=1e-5)
    assert batched.final_loss == pytest.approx(reference.final_loss, rel=1e-5)


@pytest.mark.parametrize("optimizer", list(LANES))
@pytest.mark.parametrize("task", list(STEPS))
def test_each_lane_equals_its_unbatched_trial(task, optimizer):
    assert supports_batched(task, optimizer)
    hparams = LANES[optimizer]
    results = run_batched_trial(task, optimizer, hparams, STEPS[task], SEEDS)
    assert len(results) == len(SEEDS)
    assert results[2].diverged and not results[0].diverged and not results[3].diverged
    assert len(results[0].losses) == STEPS[task]
    for lane, (hp, seed) in enumerate(zip(hparams, SEEDS)):
        assert_same_trial(results[lane], run_trial(task, optimizer, hp, STEPS[task], seed))


@pytest.mark.parametrize("optimizer", ["Adam", "LODO", "O-LBFGS"])
def test_a_lane_does_not_depend_on_its_neighbours(optimizer):
    hp = LANES[optimizer][0]
    alone = run_batched_trial("noisy_bowl", optimizer, [hp], 150, [3])[0]
    crowd = run_batched_trial("noisy_bowl", optimizer, [LANES[optimizer][2], hp, {}], 150, [9, 3, 4])[1]
    np.testing.assert_allclose(crowd.losses, alone.losses, rtol=1e-12)
    # the same hyperparameters with another seed: another bowl and noise, other losses
    other = run_batched_trial("noisy_bowl", optimizer, [hp], 150, [4])[0]
    assert not np.allclose(other.losses, alone.losses, rtol=1e-3)


def test_task_options_reach_every_lane():
    options = dict(dim=10, noise_variance=0.5)
    hparams = [dict(lr=0.1), dict(lr=0.3, beta1=0.8)]
    results = run_batched_trial("noisy_bowl", "Adam", hparams, 120, [1, 2], task_options=options)
    for result, hp, seed in zip(results, hparams, [1, 2]):
        assert_same_trial(result, run_trial("noisy_bowl", "Adam", hp, 120, seed, task_options=options))


def test_times_are_the_batch_clock():
    results = run_batched_trial("noisy_bowl", "Momentum", LANES["Momentum"], 250, SEEDS)
    np.testing.assert_array_equal(results[0].times, results[1].times)
    assert np.all(np.diff(results[0].times) >= 0)
    assert results[2].seconds < results[0].seconds  # the diverged lane stopped at the first check
    assert results[0].steps_per_second == pytest.approx(250 / results[0].seconds)


def test_supports_batched_names_the_batched_pairs():
    assert supports_batched("rosenbrock", "LODO") and supports_batched("noisy_bowl", "O-LBFGS")
    assert not supports_batched("noisy_bowl", "LARS")
    assert not supports_batched("image_generation", "Adam")


@pytest.mark.parametrize("kwargs, message", [
    (dict(hparams_list=[dict(lr=-1.0)]), "Invalid lr"),
    (dict(hparams_list=[dict(learning_rate=0.1)]), "Unknown hyperparameter for Adam: learning_rate"),
    (dict(hparams_list=[{}, {}]), "Invalid hparams_list"),
    (dict(steps=0), "Invalid steps: 0"),
    (dict(optimizer_name="L-BFGS", hparams_list=[dict(memory=4), dict(memory=8)], seeds=[0, 1]), "options"),
    (dict(task_options=dict(size=3)), "Unknown option for task 'noisy_bowl': size"),
])
def test_invalid_arguments_are_one_line_errors(kwargs, message):
    arguments = dict(task_name="noisy_bowl", optimizer_name="Adam", hparams_list=[{}], steps=10, seeds=[0])
    with pytest.raises(ValueError, match=message):
        run_batched_trial(**(arguments | kwargs))


@pytest.mark.parametrize("task", list(STEPS))
def test_a_lane_is_bit_for_bit_the_same_in_any_batch(task):
    """What lets the session chunk a generation any way (and a resume re-chunk what is missing):
    a lane's losses do not depend on the size of its batch or its place in it, bit for bit
    (20 lanes: past the 16 elements from which torch vectorises a pow)."""
    for optimizer, lanes in LANES.items():
        hp = lanes[1]
        alone = run_batched_trial(task, optimizer, [hp], 120, [3])[0]
        hparams = [lanes[i % 4] for i in range(20)]
        hparams[13] = hp
        crowd = run_batched_trial(task, optimizer, hparams, 120, [20 + i if i != 13 else 3 for i in range(20)])[13]
        np.testing.assert_array_equal(crowd.losses, alone.losses, err_msg=optimizer)


def test_batched_sigma_and_trajectory_equal_the_unbatched_observers():
    hparams = [dict(lr=0.5), dict(lr=1e5), dict(lr=1.0, beta=0.5)]
    batched = run_batched_trial("noisy_bowl", "LODO", hparams, 650, [1, 2, 3], observe_every=200)
    for result, hp, seed in zip(batched, hparams, [1, 2, 3]):
        reference = run_trial("noisy_bowl", "LODO", hp, 650, seed, observe_every=200)
        assert result.sigma.shape == reference.sigma.shape == ((0, 2) if reference.diverged else (3, 2))
        np.testing.assert_allclose(result.sigma, reference.sigma, rtol=1e-9)
        assert result.trajectory is None and reference.trajectory is None
    for optimizer in ("Adam", "L-BFGS"):
        hp = LANES[optimizer][0]
        [result] = run_batched_trial("rosenbrock", optimizer, [hp], 200, [5], observe_every=200)
        reference = run_trial("rosenbrock", optimizer, hp, 200, 5, observe_every=200)
        assert result.sigma is None and reference.sigma is None
        np.testing.assert_allclose(result.trajectory, reference.trajectory, rtol=1e-9)
        assert result.trajectory.shape == (200, 2)
    [plain] = run_batched_trial("rosenbrock", "Adam", [LANES["Adam"][0]], 200, [5])
    assert plain.sigma is None and plain.trajectory is None


# Lanes that take every branch of torch's first-order updates: RMSprop and Momentum with μ = 0
# (torch skips the buffer), Adam and Yogi with β1 = 0, and decay rates near both ends.
FIRST_ORDER_LANES = {
    "Adam": [dict(lr=0.3, beta1=0.5, beta2=0.99), dict(lr=0.01), dict(lr=1.0, beta1=0.0, beta2=0.5)],
    "Momentum": [dict(lr=0.37, momentum=0.6), dict(lr=0.1), dict(lr=0.5, momentum=0.99)],
    "RMSprop": [dict(lr=0.449, rho=0.04943, momentum=0.595), dict(lr=0.01, rho=0.9), dict(lr=0.3, rho=0.999, momentum=0.9)],
    "Yogi": [dict(lr=2.0, beta1=0.45, beta2=0.99), dict(lr=0.01), dict(lr=1.0, beta1=0.0, beta2=0.5)],
}


@pytest.mark.parametrize("optimizer", list(FIRST_ORDER_LANES))
def test_each_lanes_update_is_the_unbatched_optimizers_bit_for_bit(optimizer):
    """The batched update against the registry's optimizer (torch.optim's Adam, SGD, RMSprop; lodo/yogi.py)
    stepping one tensor, on gradients that depend on the parameters (so a last-bit difference would
    grow): every lane's parameters after every one of 300 steps, exact equality. torch's `add_` with an
    alpha is a fused multiply-add; `sub_(a * b)` would round differently from the second step on."""
    import torch

    from lodo import batched, registry

    lanes, n, steps = FIRST_ORDER_LANES[optimizer], 100, 300
    noise = torch.randn(steps, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def gradient(x, t):
        return noise[t] * torch.log1p(x.abs()) + noise[t] + 0.1 * x

    x = torch.zeros(len(lanes), n, dtype=torch.float64)
    optimizer_batch = batched.create(optimizer, x, lanes, list(range(len(lanes))))
    history = []
    for t in range(steps):
        g = gradient(x, t)
        optimizer_batch.step(x, lambda: (None, g))
        history.append(x.clone())
    for lane, hp in enumerate(lanes):
        p = torch.zeros(n, dtype=torch.float64, requires_grad=True)
        reference = registry.create(optimizer, [p], **hp)
        for t in range(steps):
            p.grad = gradient(p.detach(), t)
            reference.step()
            assert torch.equal(p.detach(), history[t][lane]), f"{optimizer} lane {lane} ({hp}) differs at step {t}"


def test_rmsprop_at_table_6s_values_is_the_unbatched_trial_bit_for_bit_though_chaotic():
    """At ρ = 0.049 RMSprop amplifies a last-bit change in a gradient to ~10 % of the loss within
    3,000 steps, so it runs on `exact_gradients`: its losses equal the unbatched trial's exactly."""
    from lodo.paper import TABLE6

    hp = TABLE6["noisy_bowl"]["RMSprop"]
    results = run_batched_trial("noisy_bowl", "RMSprop", [hp, hp], 3000, [0, 1])
    for seed, result in enumerate(results):
        np.testing.assert_array_equal(result.losses, run_trial("noisy_bowl", "RMSprop", hp, 3000, seed).losses)
