"""Batched L2LBGDBGD (issue 15): each lane is the unbatched run_trial bit for bit.

L2LBGDBGD on the bowl is chaotic (a 1e-16 change in a gradient reaches 1e-2 in the loss within
200 steps), so "to rounding" is not enough: the references are the unbatched optimizer with the
task's own autograd, compared with exact equality over thousands of steps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import lodo.batched
import tasks
import tasks.batched
from tuner.trial.loop import run_batched_trial, run_trial

pytestmark = pytest.mark.skipif("L2LBGDBGD" not in lodo.batched.available(), reason="lodo/l2l.py is absent")


def test_each_lane_equals_its_unbatched_trial_bit_for_bit_over_thousands_of_steps():
    seeds = [3, 7, 0]
    results = run_batched_trial("noisy_bowl", "L2LBGDBGD", [{}] * 3, 2000, seeds)
    for result, seed in zip(results, seeds):
        reference = run_trial("noisy_bowl", "L2LBGDBGD", {}, 2000, seed)
        np.testing.assert_array_equal(result.losses, reference.losses)
        assert result.final_loss == reference.final_loss and not result.diverged


@pytest.mark.parametrize("batched_products", [None, False])
def test_exact_gradients_are_the_unbatched_autograd_gradients_bit_for_bit(batched_products):
    """Both forms of the exact path: the batched products where the BLAS rounds them as the per-lane
    ones (None: checked at the first call), and the per-lane loop it falls back to (False)."""
    batched = tasks.batched.create("noisy_bowl", [1, 2], dim=30)
    batched.exact_gradients = True
    batched._batched_products_exact = batched_products
    batched.sample()
    batched.x.copy_(torch.randn(2, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    loss, grad = batched.loss_and_grad()
    for row, seed in enumerate([1, 2]):
        bowl = tasks.create("noisy_bowl", seed=seed, dim=30)
        centre = bowl.sample()
        with torch.no_grad():
            bowl.x.copy_(batched.x[row])
        reference = bowl.loss(centre)
        reference.backward()
        assert torch.equal(loss[row], reference.detach())
        assert torch.equal(grad[row], bowl.x.grad)
    batched.exact_gradients = False  # the closed form: equal to rounding only
    closed_loss, closed_grad = batched.loss_and_grad()
    torch.testing.assert_close(closed_grad, grad, rtol=1e-12, atol=1e-12)


def test_dropping_a_lane_leaves_the_others_bit_for_bit():
    """What run_batched_trial does with a diverged lane (`keep`), here by hand after 150 steps
    (L2LBGDBGD has no hyperparameter that would make a lane diverge)."""
    seeds, steps = [4, 9, 6], 300
    task = tasks.batched.create("noisy_bowl", seeds)
    opt = lodo.batched.create("L2LBGDBGD", task.x, [{}] * 3, seeds)
    task.exact_gradients = lodo.batched.exact_gradients("L2LBGDBGD")
    losses = []
    with torch.no_grad():
        for step in range(steps):
            if step == 150:
                index = torch.tensor([0, 2])
                task.keep(index)
                opt.keep(index)
            task.sample()
            losses.append(opt.step(task.x, task.loss_and_grad).clone())
    kept = np.array([row.numpy() if len(row) == 2 else row[[0, 2]].numpy() for row in losses])
    for column, seed in enumerate([4, 6]):
        np.testing.assert_array_equal(kept[:, column], run_trial("noisy_bowl", "L2LBGDBGD", {}, steps, seed).losses)
