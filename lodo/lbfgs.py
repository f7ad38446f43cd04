"""Stochastic L-BFGS and O-LBFGS without line search (Schraudolph, Yu & Günter, 2007; docs/paper.md §2).

All parameters form one flat vector x. One iteration makes two evaluations on the same noise
sample / minibatch (Alg. 1 with the §3.2 stochastic changes)::

    g  ← ∇f(x; ξ_t)                                    # evaluation 1: the closure at the old point
    p  ← −B_t g   (two-loop recursion over the last 48 pairs; p = −1e-10·g before any pair)
    s  ← η_t·p,   η_t = lr·tau / (tau + t)             # no line search
    x  ← x + s
    y  ← ∇f(x; ξ_t) − g                                # evaluation 2: same sample, new point
    keep (s, y) if sᵀy > 0 (the curvature condition; always true on a convex task)

B_t's initial scaling γ is sᵀy / yᵀy of the newest pair (L-BFGS) or the mean of sᵢᵀyᵢ / yᵢᵀyᵢ
over the memory (O-LBFGS).
"""
from __future__ import annotations

import torch


def flat_grad(params: list[torch.Tensor]) -> torch.Tensor:
    """All gradients as one vector (zeros for parameters without a gradient)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


@torch.no_grad()
def add_flat_(params: list[torch.Tensor], delta: torch.Tensor) -> None:
    """x ← x + delta for the flat vector x formed by `params`."""
    offset = 0
    for p in params:
        n = p.numel()
        p.add_(delta[offset:offset + n].view_as(p))
        offset += n


def single_group_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The parameters of a flat-vector optimizer, which has exactly one parameter group."""
    if len(optimizer.param_groups) != 1:
        raise ValueError(f"Invalid param_groups: {len(optimizer.param_groups)} groups "
                         f"({type(optimizer).__name__} treats all parameters as one vector; pass one group)")
    return optimizer.param_groups[0]["params"]


def two_loop(g: torch.Tensor, s: torch.Tensor, y: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """B·g for the L-BFGS inverse-Hessian B built from pairs s[i], y[i] (oldest first) on B0 = γI.

    Nocedal & Wright Alg. 7.4: q ← g; for i newest→oldest: αᵢ = ρᵢ sᵢᵀq, q ← q − αᵢ yᵢ;
    r ← γ q; for i oldest→newest: βᵢ = ρᵢ yᵢᵀr, r ← r + (αᵢ − βᵢ) sᵢ;  ρᵢ = 1 / sᵢᵀyᵢ.
    """
    rho = 1.0 / (s * y).sum(dim=1)
    q = g.clone()
    alpha = [None] * s.shape[0]
    for i in reversed(range(s.shape[0])):
        alpha[i] = rho[i] * (s[i] @ q)
        q.sub_(alpha[i] * y[i])
    r = gamma * q
    for i in range(s.shape[0]):
        beta = rho[i] * (y[i] @ r)
        r.add_((alpha[i] - beta) * s[i])
    return r


class LBFGS(torch.optim.Optimizer):
    """Stochastic L-BFGS (module docstring); γ = sᵀy / yᵀy of the newest pair."""

    requires_closure = True
    first_step = 1e-10

    def __init__(self, params, lr: float = 1e-3, tau: float = 1e4, memory: int = 48):
        if not lr > 0.0:
            raise ValueError(f"Invalid lr: {lr} (must be > 0)")
        if not tau > 0.0:
            raise ValueError(f"Invalid tau: {tau} (must be > 0)")
        if not (int(memory) == memory and memory >= 1):
            raise ValueError(f"Invalid memory: {memory} (must be a positive integer)")
        super().__init__(params, dict(lr=lr, tau=tau, memory=int(memory)))
        single_group_params(self)

    def initial_scaling(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """γ of B0 = γI: sᵀy / yᵀy of the newest pair."""
        return (s[-1] @ y[-1]) / (y[-1] @ y[-1])

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise RuntimeError(f"{type(self).__name__} needs step(closure): it evaluates twice per iteration")
        params = single_group_params(self)
        group = self.param_groups[0]
        state = self.state[params[0]]
        with torch.enable_grad():
            loss = closure()
        g = flat_grad(params)
        if not state:
            state["t"] = 0
            state["s"] = g.new_zeros(0, g.numel())
            state["y"] = g.new_zeros(0, g.numel())
        t, s_mem, y_mem = state["t"], state["s"], state["y"]
        if s_mem.shape[0] == 0:
            s = -self.first_step * g
        else:
            eta = group["lr"] * group["tau"] / (group["tau"] + t)
            s = -eta * two_loop(g, s_mem, y_mem, self.initial_scaling(s_mem, y_mem))
        add_flat_(params, s)
        with torch.enable_grad():
            closure()
        y = flat_grad(params) - g
        if s @ y > 0:
            state["s"] = torch.cat([s_mem, s[None]])[-group["memory"]:]
            state["y"] = torch.cat([y_mem, y[None]])[-group["memory"]:]
        state["t"] = t + 1
        return loss


class OLBFGS(LBFGS):
    """Online L-BFGS (module docstring); γ = mean of sᵢᵀyᵢ / yᵢᵀyᵢ over the memory."""

    def initial_scaling(self, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """γ of B0 = γI: the memory mean of sᵢᵀyᵢ / yᵢᵀyᵢ."""
        return ((s * y).sum(dim=1) / (y * y).sum(dim=1)).mean()
