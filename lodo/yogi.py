"""Yogi (Zaheer et al., 2018) in the exact form that reproduces the paper's numbers (docs/paper.md §2)."""
from __future__ import annotations

import torch


class Yogi(torch.optim.Optimizer):
    r"""Yogi: Adam whose second moment moves additively, by the sign of its error.

    Per parameter tensor, with m0 = v0 = 0 and no bias correction::

        m ← β1·m + (1 − β1)·g
        v ← v − (1 − β2)·sign(v − g²)·g²
        x ← x − lr·m / (√v + 1e-3)

    The ε = 1e-3 sits outside the square root; this is the form whose numbers match Table 1.
    """

    eps = 1e-3

    def __init__(self, params, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999):
        if not lr > 0.0:
            raise ValueError(f"Invalid lr: {lr} (must be > 0)")
        if not 0.0 <= beta1 < 1.0:
            raise ValueError(f"Invalid beta1: {beta1} (must be in [0, 1))")
        if not 0.0 <= beta2 < 1.0:
            raise ValueError(f"Invalid beta2: {beta2} (must be in [0, 1))")
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, beta1, beta2 = group["lr"], group["beta1"], group["beta2"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                m, v = state["m"], state["v"]
                g2 = g * g
                m.mul_(beta1).add_(g, alpha=1.0 - beta1)
                v.sub_(torch.sign(v - g2).mul_(g2), alpha=1.0 - beta2)
                p.sub_(lr * m / (v.sqrt() + self.eps))
        return loss
