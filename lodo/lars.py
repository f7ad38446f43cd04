"""LARS, layer-wise adaptive rate scaling (You et al., 2017), in docs/paper.md §2's form."""
from __future__ import annotations

import torch


class LARS(torch.optim.Optimizer):
    r"""Momentum SGD with a per-tensor trust ratio and a polynomial (power 2) learning-rate decay.

    For every parameter tensor w ("layer") with gradient g::

        local = ‖w‖ / (‖g‖ + wd·‖w‖)                    (1 when ‖w‖ or ‖g‖ is 0, as in TF's LARS)
        v ← μ·v + lr·(1 − progress)²·local·(g + wd·w)
        w ← w − v

    ``progress = step / total_steps`` needs the run length, which is not a hyperparameter:
    pass ``total_steps``; ``None`` (the default) means no decay (progress stays 0).
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 5e-4,
                 total_steps: int | None = None):
        if not lr > 0.0:
            raise ValueError(f"Invalid lr: {lr} (must be > 0)")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Invalid momentum: {momentum} (must be in [0, 1))")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay: {weight_decay} (must be >= 0)")
        if total_steps is not None and not (int(total_steps) == total_steps and total_steps > 0):
            raise ValueError(f"Invalid total_steps: {total_steps} (must be a positive integer or None)")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      total_steps=total_steps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu, wd, total = group["lr"], group["momentum"], group["weight_decay"], group["total_steps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["v"] = torch.zeros_like(p)
                progress = 0.0 if total is None else min(state["step"] / total, 1.0)
                w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                local = torch.where((w_norm > 0) & (g_norm > 0), w_norm / (g_norm + wd * w_norm),
                                    torch.ones_like(w_norm))
                v = state["v"]
                v.mul_(mu).add_((g + wd * p) * (local * (lr * (1.0 - progress) ** 2)))
                p.sub_(v)
                state["step"] += 1
        return loss
