"""The batched L-BFGS family's sliding window and bound views are a faster form of the plain
batched two-loop, not another algorithm: every lane's losses equal the plain form's bit for bit
(with lanes that reject pairs, wrap the window, and diverge), so tuned values cannot move."""
import numpy as np
import pytest
import torch

import lodo.batched
from lodo.batched import BatchedOptimizer
from tuner.trial.loop import run_batched_trial


class PlainLBFGS(BatchedOptimizer):
    """The textbook form: memory shifted with cat/where every iteration, sᵀy and yᵀy recomputed."""

    name = "L-BFGS"

    def __init__(self, x, hparams, memory: int = 48):
        super().__init__(x, hparams)
        lanes, n = x.shape
        self.s_mem, self.y_mem = x.new_zeros(lanes, memory, n), x.new_zeros(lanes, memory, n)
        self.count = torch.zeros(lanes, dtype=torch.int64)

    def step(self, x, closure):
        loss, g = closure()
        sy, yy = (self.s_mem * self.y_mem).sum(-1), (self.y_mem * self.y_mem).sum(-1)
        memory = self.s_mem.shape[1]
        valid = torch.arange(memory) >= memory - self.count.view(-1, 1)
        rho = torch.where(valid, 1.0 / sy, 0.0)
        gamma = self.initial_scaling(sy, yy, valid).view(-1, 1)
        q, alpha = g.clone(), [None] * memory
        for i in reversed(range(memory)):
            alpha[i] = rho[:, i : i + 1] * (self.s_mem[:, i] * q).sum(-1, keepdim=True)
            q.sub_(alpha[i] * self.y_mem[:, i])
        r = gamma * q
        for i in range(memory):
            beta = rho[:, i : i + 1] * (self.y_mem[:, i] * r).sum(-1, keepdim=True)
            r.add_((alpha[i] - beta) * self.s_mem[:, i])
        eta = self.lr * self.tau / (self.tau + self.t)
        s = torch.where(self.count.view(-1, 1) == 0, -1e-10 * g, -eta * r)
        x.add_(s)
        _, g_new = closure()
        y = g_new - g
        accept = ((s * y).sum(-1) > 0).view(-1, 1, 1)
        self.s_mem = torch.where(accept, torch.cat([self.s_mem[:, 1:], s.unsqueeze(1)], 1), self.s_mem)
        self.y_mem = torch.where(accept, torch.cat([self.y_mem[:, 1:], y.unsqueeze(1)], 1), self.y_mem)
        self.count = torch.clamp(self.count + accept.view(-1), max=memory)
        self.t += 1
        return loss

    def initial_scaling(self, sy, yy, valid):
        return torch.where(valid[:, -1], sy[:, -1] / yy[:, -1], 1.0)

    def keep(self, index):
        super().keep(index)
        self.s_mem, self.y_mem, self.count = self.s_mem[index], self.y_mem[index], self.count[index]


class PlainOLBFGS(PlainLBFGS):
    name = "O-LBFGS"

    def initial_scaling(self, sy, yy, valid):
        ratio, memory = sy / yy, sy.shape[1]
        return torch.stack([ratio[lane, memory - c:].mean() if c else ratio.new_ones(())
                            for lane, c in enumerate(self.count.tolist())])


LANES = [dict(lr=0.5), dict(lr=1.3, tau=1e4), dict(lr=1e10), dict(lr=0.1, tau=100.0), {}]


@pytest.mark.parametrize("task, steps", [("noisy_bowl", 400), ("rosenbrock", 300)])
@pytest.mark.parametrize("optimizer, plain", [("L-BFGS", PlainLBFGS), ("O-LBFGS", PlainOLBFGS)])
def test_every_lane_equals_the_plain_two_loop_bit_for_bit(monkeypatch, task, steps, optimizer, plain):
    options = {"dim": 10} if task == "noisy_bowl" else {}
    seeds = list(range(len(LANES)))
    fast = run_batched_trial(task, optimizer, LANES, steps, seeds, task_options=options)
    monkeypatch.setitem(lodo.batched._OPTIMIZERS, optimizer, plain)
    reference = run_batched_trial(task, optimizer, LANES, steps, seeds, task_options=options)
    assert any(r.diverged for r in reference) and not all(r.diverged for r in reference)
    for a, b in zip(fast, reference):
        assert a.diverged == b.diverged
        np.testing.assert_array_equal(a.losses, b.losses)


def test_rejected_pairs_and_window_wraps_happen_in_these_runs(monkeypatch):
    """What the bit-for-bit test relies on: lanes reject pairs (sᵀy ≤ 0) and the window wraps."""
    seen = {"rejected": 0, "wraps": 0}
    push = lodo.batched.LBFGS._push

    def counting(self, s, y, sy):
        seen["rejected"] += int((~(sy > 0)).sum())
        push(self, s, y, sy)
        seen["wraps"] += self.start == 0

    monkeypatch.setattr(lodo.batched.LBFGS, "_push", counting)
    run_batched_trial("rosenbrock", "L-BFGS", LANES, 300, list(range(len(LANES))))
    assert seen["rejected"] > 0 and seen["wraps"] >= 2
