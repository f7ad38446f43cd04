"""Dense second-order baselines (docs/paper.md §2): BFGS, Levenberg–Marquardt and Newton.

All parameters form one flat vector x of size n; these cost O(n²) memory and O(n²)–O(n³) time
per step, so they only make sense on small tasks (the noisy bowl, Rosenbrock).
"""
from __future__ import annotations

import torch

from lodo.lbfgs import add_flat_, flat_grad, single_group_params


def hessian(params: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(g, H) at the current point from gradients built with ``backward(create_graph=True)``.

    H = ∂g/∂x by one batched double-backward: row i is the vector–Jacobian product eᵢᵀ ∂g/∂x,
    all n rows in one `torch.func.vmap` over `torch.autograd.grad`. (That is what
    ``autograd.grad(..., is_grads_batched=True)`` does with torch's legacy vmap, whose batching
    rule turns the matrix–vector products of the backward into n separate products: 5–6× slower
    on the noisy bowl.)
    """
    if not any(p.grad is not None and p.grad.grad_fn is not None for p in params):
        raise RuntimeError("the exact Hessian needs the closure to call loss.backward(create_graph=True)")
    with torch.enable_grad():
        g = flat_grad(params)
        n = g.numel()

        def row(e: torch.Tensor) -> torch.Tensor:
            parts = torch.autograd.grad(g, params, grad_outputs=e, retain_graph=True,
                                        allow_unused=True, materialize_grads=True)
            return torch.cat([part.reshape(-1) for part in parts])

        H = torch.func.vmap(row)(torch.eye(n, dtype=g.dtype, device=g.device))
    for p in params:  # drop the graph: no reference cycle through .grad
        if p.grad is not None:
            p.grad = p.grad.detach()
    return g.detach(), H.detach()


class BFGS(torch.optim.Optimizer):
    r"""Dense BFGS on the inverse Hessian B, without line search, one evaluation per step::

        y ← g_t − g_{t−1},  s ← x_t − x_{t−1},  ρ = 1 / sᵀy
        B ← (I − ρ s yᵀ) B (I − ρ y sᵀ) + ρ s sᵀ          (B0 = h0_scale·I; skipped while sᵀy = 0)
        x ← x − lr·B g_t

    Plain BFGS, without L-BFGS's stochastic changes: on a stochastic task consecutive gradients
    come from different noise samples, so y carries the noise and sᵀy turns negative; B loses
    definiteness and the method fails on the noisy bowl, as in the paper (Table 1: "diverged").
    With the defaults the loss stays finite but ends at 10⁵–10⁶ (tests/test_table1.py); a
    variant with y on the same sample would track the bowl (≈ 400) but is not the paper's BFGS.
    """

    requires_closure = True

    def __init__(self, params, lr: float = 0.01, h0_scale: float = 1.0):
        if not lr > 0.0:
            raise ValueError(f"Invalid lr: {lr} (must be > 0)")
        if not h0_scale > 0.0:
            raise ValueError(f"Invalid h0_scale: {h0_scale} (must be > 0)")
        super().__init__(params, dict(lr=lr, h0_scale=h0_scale))
        single_group_params(self)

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise RuntimeError("BFGS needs step(closure)")
        params = single_group_params(self)
        group = self.param_groups[0]
        state = self.state[params[0]]
        with torch.enable_grad():
            loss = closure()
        g = flat_grad(params)
        if not state:
            state["B"] = group["h0_scale"] * torch.eye(g.numel(), dtype=g.dtype, device=g.device)
        else:
            s, y = state["s"], g - state["g"]
            sy = s @ y
            if sy != 0:
                B, rho = state["B"], 1.0 / sy
                By = B @ y
                # (I − ρ s yᵀ) B (I − ρ y sᵀ) + ρ s sᵀ, expanded (B symmetric)
                state["B"] = (B - rho * (torch.outer(s, By) + torch.outer(By, s))
                              + (rho * rho * (y @ By) + rho) * torch.outer(s, s))
        s = -group["lr"] * (state["B"] @ g)
        add_flat_(params, s)
        state["s"], state["g"] = s, g
        return loss


class LevenbergMarquardt(torch.optim.Optimizer):
    r"""Levenberg–Marquardt with the exact Hessian H, one evaluation per step::

        x ← x − (H² + λ·diag(H²))⁻¹ H g

    λ = ``damping``. Table 6 omits the tuned λ; on the noisy bowl λ = 1e-4 gives Table 1's 7.40.
    """

    requires_closure = True
    create_graph = True

    def __init__(self, params, damping: float = 1.0):
        if not damping > 0.0:
            raise ValueError(f"Invalid damping: {damping} (must be > 0)")
        super().__init__(params, dict(damping=damping))
        single_group_params(self)

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise RuntimeError("LevenbergMarquardt needs step(closure) calling loss.backward(create_graph=True)")
        params = single_group_params(self)
        with torch.enable_grad():
            loss = closure()
        g, H = hessian(params)
        H2 = H @ H
        A = H2 + self.param_groups[0]["damping"] * torch.diag(torch.diagonal(H2))
        add_flat_(params, -torch.linalg.solve(A, H @ g))
        return loss


class Newton(torch.optim.Optimizer):
    r"""Newton's method with the exact Hessian, one evaluation per step: x ← x − H⁻¹ g.

    On the noisy bowl this jumps to the current centre, the ideal tracker (loss ½·v·tr(H)).
    """

    requires_closure = True
    create_graph = True

    def __init__(self, params):
        super().__init__(params, {})
        single_group_params(self)

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise RuntimeError("Newton needs step(closure) calling loss.backward(create_graph=True)")
        params = single_group_params(self)
        with torch.enable_grad():
            loss = closure()
        g, H = hessian(params)
        add_flat_(params, -torch.linalg.solve(H, g))
        return loss
