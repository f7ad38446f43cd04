r"""LODO, the learned online quasi-Newton optimizer, and its ablations (docs/paper.md §1, §1.1).

All parameters form one flat vector x in R^n. LODO keeps a preconditioner G(θ) and learns θ
online by hypergradient descent on the loss of the step it just took (Algorithm 1):

.. math::
    \begin{aligned}
    &\textbf{input}: α_0 \text{ (lr)}, α \text{ (meta\_lr)}, β \text{ (beta)}, θ_0 \text{ (random)}, m_0 = 0 \\
    &\textbf{repeat}: \\
    &\quad x_{t+1} \leftarrow x_t - G(θ_t)\, m_t                       && \text{(step)} \\
    &\quad g_{t+1} \leftarrow ∇f(x_{t+1})                              && \text{(one evaluation)} \\
    &\quad θ_{t+1} \leftarrow θ_t - \mathrm{Adam}_α(∇_{θ_t} f(x_{t+1}))  && \text{(meta-step)} \\
    &\qquad ∇_{θ_t} f(x_{t+1}) = -J_θ[G(θ_t) m_t]^\top g_{t+1} \\
    &\quad m_{t+1} \leftarrow β m_t + (1 - β)\, g_{t+1}                && \text{(momentum)}
    \end{aligned}

With the ordinary ``loss.backward(); opt.step()`` protocol, the gradient in ``.grad`` at a
``step()`` call is g_{t+1}; ``step()`` then does the meta-step, the momentum update and the next
step x_{t+2} ← x_{t+1} − G(θ_{t+1}) m_{t+1}. The paper's first step x_1 = x_0 − G(θ_0)·0 is the
no-op before the first evaluation, so the first ``step()`` call moves x by −α0(1 − β) g_1.
Its meta-step has a zero hypergradient (m_0 = 0); like the algorithm, we take it: Adam's step
count becomes 1 and θ does not change (Adam's update of a zero gradient is exactly zero).

The preconditioner (Eq. 2), with layer 1 applied first:

.. math::
    G(θ) = α_0 [I\ 0]\, \tilde G^\top \tilde G\, [I\ 0]^\top, \qquad
    \tilde G = B(θ^{(N)}) P_N \cdots B(θ^{(1)}) P_1

P_i are fixed random permutations of the hidden width ñ (a gather: (P_i z)_j = z_{perm_i[j]}),
B(θ^(i)) block-diagonal with ñ/k learned k×k blocks, each initialised as a random orthogonal
matrix so that G(θ_0) = α_0 I. G is symmetric PSD by construction; applying it costs
O(N ñ k) time and θ plus Adam state O(N ñ k) memory.

The hypergradient is a hand-written vector–Jacobian product. With p = G̃ ĝ, y = G̃ m̃ (hats:
zero-padded to ñ), a_i(v) = P_i z_{i−1}(v) the permuted input of block layer i and λ_i(v) the
adjoint of layer i's output when v is pulled back through the layers above it,

.. math::
    ∇_{B_i} f = -α_0 \left( λ_i(p)\, a_i(m)^\top + λ_i(y)\, a_i(g)^\top \right)

blockwise. a_i(m) and λ_i(y) are the intermediates of the step G(θ_t) m_t itself, kept when the
step was taken (and recomputed bit-identically after ``load_state_dict``); a_i(g), λ_i(p) cost one
forward and one backward pass through G̃ at the old θ.

Optimizer state lives in ``self.state[first_param]`` (so ``state_dict()`` is torch's own):
``theta`` (LODO: shape (N, ñ/k, k, k)), ``momentum`` (n,), ``permutations`` (N, ñ) int64,
``meta_exp_avg``/``meta_exp_avg_sq``/``meta_step`` (Adam on θ), ``step`` (number of steps taken)
and ``step_lr`` (the α0 of the last step, which the next hypergradient differentiates).
Change θ only through ``step()`` or ``load_state_dict()``: LODO keeps a transposed copy of it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.optim import Optimizer
from torch.optim.adam import adam

__all__ = ["LODO", "LODODiagonal", "LODOGlobal", "LODOResiduals", "LODONoMomentum", "LODOSGD"]

META_BETAS = (0.9, 0.999)
META_EPS = 1e-7  # the authors' TensorFlow Adam


def hidden_width(n: int, block_size: int) -> int:
    """ñ = floor(2n/k)·k, or the smallest multiple of k ≥ 2n where that would be below n."""
    width = (2 * n // block_size) * block_size
    if width < n:
        width = -(-2 * n // block_size) * block_size
    return width


def random_orthogonal_blocks(shape: tuple[int, ...], k: int, generator: torch.Generator) -> torch.Tensor:
    """Haar-random k×k orthogonal matrices: QR of a Gaussian with the signs of diag(R) fixed."""
    gaussian = torch.randn(*shape, k, k, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def random_permutations(depth: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """The gather indices of P_1 … P_N, shape (N, ñ)."""
    return torch.stack([torch.randperm(width, generator=generator) for _ in range(depth)])


def validate_positive_int(name: str, value) -> None:
    """`Invalid depth: 0 (must be an integer >= 1)` unless value is an int ≥ 1 (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid {name}: {value!r} (must be an integer >= 1)")


class LODOBase(Optimizer):
    """Algorithm 1 for a learned preconditioner G(θ): LODO and its ablations differ only in G.

    A subclass supplies θ_0 and its fixed parts (`_init_state`), G(θ)·v for columns v
    (`_apply`) and the hypergradient −J_θ[G(θ) m]ᵀ g (`_hypergradient`); `_direction` (G(θ) m for
    the step, by default `_apply`) may keep what the next hypergradient needs, `_theta_changed`
    and `_reset` keep derived buffers in step with θ and with a loaded state.
    """

    def __init__(self, params, defaults: dict, seed: int | None):
        lr, meta_lr, beta = defaults["lr"], defaults["meta_lr"], defaults["beta"]
        if not lr >= 0.0:
            raise ValueError(f"Invalid lr: {lr} (must be >= 0)")
        if not meta_lr >= 0.0:
            raise ValueError(f"Invalid meta_lr: {meta_lr} (must be >= 0)")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta: {beta} (must be in [0, 1))")
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(f"Invalid param_groups: {len(self.param_groups)} groups "
                             "(LODO treats all parameters as one vector; pass one group)")
        params = self.param_groups[0]["params"]
        first = params[0]
        for p in params:
            if p.dtype != first.dtype or p.device != first.device:
                raise ValueError(f"Invalid params: mixed dtype/device {p.dtype}/{p.device} and "
                                 f"{first.dtype}/{first.device} (all must match)")
            if not p.is_floating_point():
                raise ValueError(f"Invalid params: dtype {p.dtype} (must be floating point)")
        self._params = params
        self._n = sum(p.numel() for p in params)
        if seed is None:
            seed = int(torch.randint(0, 2**62, (), dtype=torch.int64).item())
        generator = torch.Generator().manual_seed(int(seed))
        state = self._state
        state["step"] = 0
        state["step_lr"] = 0.0
        state["momentum"] = torch.zeros(self._n, dtype=first.dtype, device=first.device)
        for key, value in self._init_state(generator).items():  # drawn on the CPU, in float64
            dtype = first.dtype if value.is_floating_point() else value.dtype
            state[key] = value.to(device=first.device, dtype=dtype).contiguous()
        state["meta_step"] = 0
        state["meta_exp_avg"] = torch.zeros_like(state["theta"])
        state["meta_exp_avg_sq"] = torch.zeros_like(state["theta"])
        self._adam_step = torch.zeros((), dtype=torch.float32, device=first.device)  # Adam's s, as adam() takes it
        # torch's fused Adam kernel where it has one; elsewhere (None) its default foreach/for-loop code
        self._fused_adam = True if first.device.type in ("cpu", "cuda") else None
        self._reset()

    def add_param_group(self, param_group: dict) -> None:
        if self.param_groups:
            raise ValueError(f"Invalid param_groups: {len(self.param_groups) + 1} groups "
                             "(LODO treats all parameters as one vector; pass one group)")
        super().add_param_group(param_group)

    @property
    def _state(self) -> dict:
        return self.state[self.param_groups[0]["params"][0]]

    def load_state_dict(self, state_dict: dict) -> None:
        # torch casts every state tensor to the params' dtype; the permutations must stay integers
        saved = next(iter(state_dict["state"].values()), {}).get("permutations")
        super().load_state_dict(state_dict)
        if saved is not None:
            self._state["permutations"] = saved.to(device=self._params[0].device, dtype=torch.int64, copy=True)
        self._reset()

    # ------------------------------------------------------------------ Algorithm 1
    def step(self, closure=None):
        """One LODO step: meta-step on θ, momentum update, x ← x − G(θ) m. Returns the closure's loss.

        The update runs in inference mode (no autograd bookkeeping: ~10% less dispatch time per
        kernel, and a step is ~130 small kernels); the closure runs outside it, with grad enabled."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.inference_mode():
            group, state = self.param_groups[0], self._state
            g = self._flat_grad()
            # θ_{t+1} ← θ_t − Adam(∇θ f(x_{t+1})),  ∇θ f(x_{t+1}) = −J_θ[G(θ_t) m_t]ᵀ g_{t+1}
            if state["step"] == 0:
                hypergradient = torch.zeros_like(state["theta"])  # m_0 = 0
            else:
                hypergradient = self._hypergradient(g, state["step_lr"])
            self._meta_step(hypergradient, group["meta_lr"])
            self._theta_changed()
            # m_{t+1} ← β m_t + (1 − β) g_{t+1}
            state["momentum"].lerp_(g, 1.0 - group["beta"])
            # x_{t+2} ← x_{t+1} − G(θ_{t+1}) m_{t+1}
            self._move(self._direction(state["momentum"], group["lr"]))
            state["step_lr"] = float(group["lr"])
            state["step"] += 1
        return loss

    def _meta_step(self, hypergradient: torch.Tensor, meta_lr: float) -> None:
        """Adam on θ with betas 0.9/0.999, eps 1e-7 and bias correction, by torch.optim.Adam's own
        functional form (its fused kernel on CPU and CUDA: one pass over θ instead of seven):

            s ← s + 1;  μ ← β1 μ + (1 − β1) h;  ν ← β2 ν + (1 − β2) h²
            θ ← θ − meta_lr / (1 − β1^s) · μ / (sqrt(ν) / sqrt(1 − β2^s) + eps)
        """
        state = self._state
        beta1, beta2 = META_BETAS
        self._adam_step.fill_(state["meta_step"])  # adam() counts it up to s
        adam([state["theta"]], [hypergradient], [state["meta_exp_avg"]], [state["meta_exp_avg_sq"]], [],
             [self._adam_step], fused=self._fused_adam, amsgrad=False, beta1=beta1, beta2=beta2, lr=meta_lr,
             weight_decay=0.0, eps=META_EPS, maximize=False)
        state["meta_step"] += 1

    def _flat_grad(self) -> torch.Tensor:
        params = self._params
        if len(params) == 1:
            p = params[0]
            return p.grad.reshape(-1) if p.grad is not None else torch.zeros(self._n, dtype=p.dtype, device=p.device)
        return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1)
                          for p in params])

    def _move(self, direction: torch.Tensor) -> None:
        """x ← x − direction, direction a flat (n,) vector."""
        if len(self._params) == 1:
            self._params[0].sub_(direction.view_as(self._params[0]))
            return
        for p, piece in zip(self._params, torch.split(direction, [p.numel() for p in self._params])):
            p.sub_(piece.view_as(p))

    @torch.no_grad()
    def preconditioner(self, v: torch.Tensor) -> torch.Tensor:
        """G(θ)·v at the current θ, for v of shape (n,) or a batch (b, n)."""
        if v.shape[-1] != self._n or v.dim() not in (1, 2):
            raise ValueError(f"Invalid v: shape {tuple(v.shape)} (must be ({self._n},) or (b, {self._n}))")
        theta = self._state["theta"]
        columns = v.to(dtype=theta.dtype, device=theta.device).reshape(-1, self._n).t()  # (n, b)
        return self._apply(columns, self.param_groups[0]["lr"]).t().reshape(v.shape)

    # ------------------------------------------------------------------ what a G(θ) supplies
    def _init_state(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """θ_0 as "theta", and any other fixed state (LODO's permutations)."""
        raise NotImplementedError

    def _apply(self, columns: torch.Tensor, lr: float) -> torch.Tensor:
        """G(θ) columns for columns of shape (n, c), with α0 = lr."""
        raise NotImplementedError

    def _hypergradient(self, g: torch.Tensor, lr: float) -> torch.Tensor:
        """∇θ f(x_{t+1}) = −J_θ[G(θ) m]ᵀ g at the θ and m of the last step, θ's shape."""
        raise NotImplementedError

    def _direction(self, m: torch.Tensor, lr: float) -> torch.Tensor:
        """G(θ) m, the step."""
        return self._apply(m.view(-1, 1), lr).view(-1)

    def _theta_changed(self) -> None:
        """Called after each meta-step."""

    def _reset(self) -> None:
        """Called at the end of __init__ and after load_state_dict: drop anything derived from the state."""


# ---------------------------------------------------------------------------- G̃ and G̃ᵀ, one implementation
class _Layers:
    """G̃'s N layers as per-layer views, what the passes loop over: P_i (gather indices), P_iᵀ
    (their inverses), B(θ^(i)), and B(θ^(i))ᵀ from θᵀ, a contiguous copy of θ with every block
    transposed (its bmm is ~25% faster than one on a transposed view); `refresh()` after θ changes."""

    def __init__(self, theta: torch.Tensor, permutations: torch.Tensor):
        self.theta, self.theta_t = theta, torch.empty_like(theta)
        self.depth, self.num_blocks, self.k, _ = theta.shape
        self.width = self.num_blocks * self.k
        self.perms = list(permutations.unbind(0))
        self.inverses = list(torch.argsort(permutations, dim=1).unbind(0))
        self.blocks, self.blocks_t = list(theta.unbind(0)), list(self.theta_t.unbind(0))
        k2, rows = self.k * self.k, self.depth * self.num_blocks
        index = torch.arange(k2, device=theta.device).view(self.k, self.k).t().reshape(1, k2)  # (r, c) ← (c, r)
        self._transpose = (theta.view(rows, k2), self.theta_t.view(rows, k2), index.expand(rows, k2))  # a row per block
        self.refresh()

    def refresh(self) -> None:
        """θᵀ ← θ with each block transposed (a gather of each block's k² entries: ~2× a strided copy)."""
        blocks, blocks_t, index = self._transpose
        torch.gather(blocks, 1, index, out=blocks_t)

    def blocked(self, t: torch.Tensor) -> torch.Tensor:
        """An (ñ, c) or (ñ,) vector as the (ñ/k, k, c) blocks bmm reads and writes."""
        return t.view(self.num_blocks, self.k, -1)


class _Pass:
    """c columns pushed through G̃ and back, keeping a_i = P_i z_{i−1} in inputs[i] and λ_i in
    adjoints[i] ((ñ, c) tensors, (ñ,) for one column; a pass that wants only its result may give
    the same buffer for every layer). The per-layer arguments are zipped once: the loops do one
    gather and one batched k×k product per layer, with no allocation and no look-ups."""

    def __init__(self, layers: _Layers, inputs: list[torch.Tensor], adjoints: list[torch.Tensor]):
        self.z, self.u, self.w = (torch.zeros_like(inputs[0]) for _ in range(3))  # z_i, B_iᵀ λ_i, G̃ᵀ λ_N
        self.inputs, self.adjoints = inputs, adjoints
        outputs = [layers.blocked(self.z)] * (layers.depth - 1) + [layers.blocked(adjoints[-1])]  # z_N = λ_N
        self.forward_layers = list(zip(layers.perms, layers.blocks, inputs, map(layers.blocked, inputs), outputs))
        u_3d = [layers.blocked(self.u)] * layers.depth
        below = [self.w] + adjoints[:-1]  # where λ_{i−1} goes
        backward = zip(layers.blocks_t, map(layers.blocked, adjoints), u_3d, layers.inverses, below)
        self.backward_layers = list(backward)[::-1]

    def forward(self, source: torch.Tensor) -> None:
        """G̃ z_0 for z_0 = source: a_i = P_i z_{i−1}, z_i = B(θ^(i)) a_i; z_N lands in adjoints[−1]."""
        z = source
        for perm, block, a, a_3d, out in self.forward_layers:
            torch.index_select(z, 0, perm, out=a)
            torch.bmm(block, a_3d, out=out)
            z = self.z

    def backward(self, full: bool) -> torch.Tensor:
        """λ_{i−1} = P_iᵀ B(θ^(i))ᵀ λ_i from λ_N = adjoints[−1] down; with `full` down to
        λ_0 = G̃ᵀ λ_N, which it returns."""
        for block_t, lam_3d, u_3d, inverse, below in (self.backward_layers if full else self.backward_layers[:-1]):
            torch.bmm(block_t, lam_3d, out=u_3d)
            torch.index_select(self.u, 0, inverse, out=below)
        return self.w


class _StepBuffers:
    """What a step touches, allocated once: the layers, the padded m̃ and ĝ, the passes of the step
    (keeping a_i(m), λ_i(y)) and of the hypergradient (keeping a_i(g), λ_i(p)), whose vectors share
    one (4, N, ñ) tensor [λ(p), λ(y), a(m), a(g)], and the outer products' buffers."""

    def __init__(self, layers: _Layers, n: int):
        theta = layers.theta
        depth, width, k = layers.depth, layers.width, layers.k
        self.layers = layers
        self.pad_m, self.pad_g = theta.new_zeros(width), theta.new_zeros(width)
        self.m_head, self.g_head = self.pad_m[:n], self.pad_g[:n]  # [I 0]ᵀ views
        self.vectors = theta.new_zeros(4, depth, width)
        lam_p, lam_y, a_m, a_g = (list(t.unbind(0)) for t in self.vectors.unbind(0))
        self.step_pass, self.hyper_pass = _Pass(layers, a_m, lam_y), _Pass(layers, a_g, lam_p)
        self.w_head = self.step_pass.w[:n]
        rows = depth * layers.num_blocks  # one per block of every layer
        self.columns = theta.new_empty(4, k, rows)  # C[v][r][block]
        self.vectors_by_row = self.vectors.view(4, rows, k).transpose(1, 2)  # the same order, as a view
        lam_p, lam_y, a_m, a_g = self.columns.unbind(0)
        self.factors = (lam_p.view(k, 1, rows), a_m.view(1, k, rows), lam_y.view(k, 1, rows), a_g.view(1, k, rows))
        self.hyper_columns = theta.new_empty(k, k, rows)  # H[r][c][block]
        self.hypergradient = torch.empty_like(theta)
        self.hyper_views = (self.hypergradient.view(rows, k, k), self.hyper_columns.permute(2, 0, 1))
        self.has_step = False  # whether step_pass holds the last step's intermediates

    def outer_products(self) -> torch.Tensor:
        """λ_i(p) a_i(m)ᵀ + λ_i(y) a_i(g)ᵀ for every block of every layer, in θ's shape.

        Computed with the block index last, H[r][c][block] = C[λp][r] C[a_m][c] + C[λy][r] C[a_g][c]:
        two broadcast products with long inner loops (in θ's layout they have length k, ~4× slower)
        between two layout copies."""
        self.columns.copy_(self.vectors_by_row)
        lam_p, a_m, lam_y, a_g = self.factors
        torch.mul(lam_p, a_m, out=self.hyper_columns)
        self.hyper_columns.addcmul_(lam_y, a_g)
        blocks, by_block = self.hyper_views
        blocks.copy_(by_block)
        return self.hypergradient


class LODO(LODOBase):
    """LODO (Liao et al., TMLR 2023, Algorithm 1): momentum SGD whose preconditioner G(θ) is
    learned online by Adam on the hypergradient of each step's loss.

    Args:
        params: the parameters; all of them form one flat vector x (one parameter group).
        lr: α0, the scale of G (default 1.0).
        meta_lr: α, Adam's learning rate on θ (default 1e-3).
        beta: β, momentum of gradients (default 0.9).
        depth: N, number of block layers (default 16).
        block_size: k, size of the learned blocks (default 4).
        seed: draws the permutations and θ_0; None draws it from torch's global RNG.
    """

    def __init__(self, params, lr: float = 1.0, meta_lr: float = 1e-3, beta: float = 0.9,
                 depth: int = 16, block_size: int = 4, seed: int | None = None):
        validate_positive_int("depth", depth)
        validate_positive_int("block_size", block_size)
        super().__init__(params, dict(lr=lr, meta_lr=meta_lr, beta=beta, depth=depth, block_size=block_size), seed)

    def _init_state(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """θ_0 (random orthogonal blocks) and the permutations P_i, drawn on the CPU from the seed."""
        depth, k = self.defaults["depth"], self.defaults["block_size"]
        width = hidden_width(self._n, k)
        permutations = random_permutations(depth, width, generator)
        return {"theta": random_orthogonal_blocks((depth, width // k), k, generator), "permutations": permutations}

    def _reset(self) -> None:
        self._buffers = None  # rebuilt from the (loaded) θ and permutations on first use

    def _theta_changed(self) -> None:
        if self._buffers is not None:
            self._buffers.layers.refresh()

    def _step_buffers(self) -> _StepBuffers:
        if self._buffers is None:
            state = self._state
            with torch.inference_mode(False):  # normal tensors: usable inside and outside step()
                self._buffers = _StepBuffers(_Layers(state["theta"], state["permutations"]), self._n)
        return self._buffers

    def _apply(self, columns: torch.Tensor, lr: float) -> torch.Tensor:
        """α0 [I 0] G̃ᵀ G̃ [I 0]ᵀ columns: the step's passes over c columns at once, keeping nothing."""
        layers = self._step_buffers().layers
        c = columns.shape[1]
        source = columns.new_zeros((layers.width,) if c == 1 else (layers.width, c))
        source[: self._n] = columns.reshape(source[: self._n].shape)
        a, lam = torch.empty_like(source), torch.empty_like(source)
        passes = _Pass(layers, [a] * layers.depth, [lam] * layers.depth)
        passes.forward(source)
        return (passes.backward(full=True)[: self._n] * lr).view(self._n, c)

    def _direction(self, m: torch.Tensor, lr: float) -> torch.Tensor:
        """G(θ) m = α0 [I 0] G̃ᵀ G̃ [I 0]ᵀ m, keeping a_i(m) and λ_i(y), y = G̃ m̃."""
        buffers = self._step_buffers()
        buffers.m_head.copy_(m)
        buffers.step_pass.forward(buffers.pad_m)
        buffers.step_pass.backward(full=True)
        buffers.has_step = True
        return torch.mul(buffers.w_head, lr)

    def _hypergradient(self, g: torch.Tensor, lr: float) -> torch.Tensor:
        """∇θ f = −J_θ[G(θ) m]ᵀ g = −α0 (λ_i(p) a_i(m)ᵀ + λ_i(y) a_i(g)ᵀ) per block, p = G̃ ĝ."""
        buffers = self._step_buffers()
        if not buffers.has_step:  # after load_state_dict: redo the last step's intermediates
            self._direction(self._state["momentum"], lr)
        # −α0 folded into ĝ: p and a(g) are linear in ĝ, and each term holds exactly one of them
        torch.mul(g, -lr, out=buffers.g_head)
        buffers.hyper_pass.forward(buffers.pad_g)
        buffers.hyper_pass.backward(full=False)
        return buffers.outer_products()


# ---------------------------------------------------------------------------- ablations (docs/paper.md §1.1)
class LODONoMomentum(LODO):
    """LODO with β = 0 (docs/paper.md §1.1, the paper's text): the step is −G(θ) g."""

    def __init__(self, params, lr: float = 1.0, meta_lr: float = 1e-3, depth: int = 16,
                 block_size: int = 4, seed: int | None = None):
        super().__init__(params, lr=lr, meta_lr=meta_lr, beta=0.0, depth=depth, block_size=block_size, seed=seed)


class LODOSGD(LODO):
    """LODO whose meta-optimizer is plain SGD: θ ← θ − meta_lr · ∇θ f (docs/paper.md §1.1)."""

    def _meta_step(self, hypergradient: torch.Tensor, meta_lr: float) -> None:
        self._state["meta_step"] += 1
        self._state["theta"].add_(hypergradient, alpha=-meta_lr)


class LODODiagonal(LODOBase):
    """LODO-Diagonal: G = α0 · diag(θ), θ ∈ R^n initialised to ones; ∇θ f = −α0 g ⊙ m."""

    def __init__(self, params, lr: float = 1.0, meta_lr: float = 1e-3, beta: float = 0.9,
                 seed: int | None = None):
        super().__init__(params, dict(lr=lr, meta_lr=meta_lr, beta=beta), seed)

    def _init_state(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {"theta": torch.ones(self._n)}

    def _apply(self, columns: torch.Tensor, lr: float) -> torch.Tensor:
        return columns * self._state["theta"].unsqueeze(1) * lr

    def _hypergradient(self, g: torch.Tensor, lr: float) -> torch.Tensor:
        return g * self._state["momentum"] * -lr


class LODOGlobal(LODOBase):
    """LODO-Global: G = α0 · θ · I, scalar θ initialised to 1; ∇θ f = −α0 gᵀ m."""

    def __init__(self, params, lr: float = 1.0, meta_lr: float = 1e-3, beta: float = 0.9,
                 seed: int | None = None):
        super().__init__(params, dict(lr=lr, meta_lr=meta_lr, beta=beta), seed)

    def _init_state(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {"theta": torch.ones(1)}

    def _apply(self, columns: torch.Tensor, lr: float) -> torch.Tensor:
        return columns * self._state["theta"] * lr

    def _hypergradient(self, g: torch.Tensor, lr: float) -> torch.Tensor:
        return torch.dot(g, self._state["momentum"]).mul(-lr).view(1)


@dataclass
class _ResidualStep:
    """The last step's intermediates: a_i(m), λ_i(D y) and y = G̃ m̃."""
    inputs: list[torch.Tensor]
    adjoints: list[torch.Tensor]
    y: torch.Tensor


class LODOResiduals(LODOBase):
    r"""LODO-Residuals: G = α0 [I 0] G̃ᵀ D G̃ [I 0]ᵀ with G̃ = Π_i (I + diag(w_i) P_i),
    learned diagonal D (init ones), w_i ~ N(0, 1/N); depth N = 64 and ñ = 2n as the authors used.

    θ is one flat tensor [w_1 … w_N, D] of length (N + 1) ñ. Layer i: z_i = z_{i−1} + w_i ⊙ P_i z_{i−1};
    its adjoint: λ_{i−1} = λ_i + P_iᵀ (w_i ⊙ λ_i). With p = G̃ ĝ, y = G̃ m̃:
    ∇_D f = −α0 p ⊙ y,  ∇_{w_i} f = −α0 (λ_i(D p) ⊙ a_i(m) + λ_i(D y) ⊙ a_i(g)).
    """

    def __init__(self, params, lr: float = 1.0, meta_lr: float = 1e-3, beta: float = 0.9,
                 depth: int = 64, seed: int | None = None):
        validate_positive_int("depth", depth)
        super().__init__(params, dict(lr=lr, meta_lr=meta_lr, beta=beta, depth=depth), seed)

    def _init_state(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        depth, width = self.defaults["depth"], 2 * self._n
        permutations = random_permutations(depth, width, generator)
        w = torch.randn(depth, width, generator=generator, dtype=torch.float64) / math.sqrt(depth)
        return {"theta": torch.cat([w.reshape(-1), torch.ones(width, dtype=torch.float64)]),
                "permutations": permutations}

    def _reset(self) -> None:
        self._inverses = None
        self._last_step: _ResidualStep | None = None

    def _parts(self):
        """w (N, ñ, 1) and D (ñ, 1), views of θ; the gather indices of P_i and P_iᵀ."""
        state = self._state
        perms = state["permutations"]
        if self._inverses is None:
            with torch.inference_mode(False):
                self._inverses = torch.argsort(perms, dim=1)
        depth, width = perms.shape
        theta = state["theta"]
        return theta[: depth * width].view(depth, width, 1), theta[depth * width:].view(width, 1), perms, self._inverses

    def _forward(self, v: torch.Tensor, scale: float):
        """y = G̃ [I 0]ᵀ (scale·v) for columns v (n, c), and the a_i = P_i z_{i−1}."""
        w, _, perms, _ = self._parts()
        z = v.new_zeros(perms.shape[1], v.shape[1])
        torch.mul(v, scale, out=z[: self._n])
        inputs = []
        for w_i, perm in zip(w, perms):
            inputs.append(z.index_select(0, perm))
            z = torch.addcmul(z, w_i, inputs[-1])
        return z, inputs

    def _backward(self, lam: torch.Tensor):
        """λ_0 = G̃ᵀ λ_N from λ_N = lam, and the λ_i of every layer's output."""
        w, _, _, inverses = self._parts()
        adjoints = [lam] * len(inverses)
        for i in reversed(range(len(inverses))):
            adjoints[i] = lam
            lam = lam + (w[i] * lam).index_select(0, inverses[i])
        return lam, adjoints

    def _apply(self, columns: torch.Tensor, lr: float) -> torch.Tensor:
        _, d, _, _ = self._parts()
        y, _ = self._forward(columns, 1.0)
        return self._backward(d * y)[0][: self._n] * lr

    def _direction(self, m: torch.Tensor, lr: float) -> torch.Tensor:
        _, d, _, _ = self._parts()
        y, inputs = self._forward(m.view(-1, 1), 1.0)
        lam, adjoints = self._backward(d * y)
        self._last_step = _ResidualStep(inputs, adjoints, y)
        return lam[: self._n].view(-1) * lr

    def _hypergradient(self, g: torch.Tensor, lr: float) -> torch.Tensor:
        if self._last_step is None:  # after load_state_dict: redo the last step's intermediates
            self._direction(self._state["momentum"], lr)
        last = self._last_step
        _, d, _, _ = self._parts()
        p, inputs = self._forward(g.view(-1, 1), -lr)  # −α0 folded into ĝ, as in LODO
        _, adjoints = self._backward(d * p)
        grad_w = torch.stack(adjoints) * torch.stack(last.inputs) + torch.stack(last.adjoints) * torch.stack(inputs)
        return torch.cat([grad_w.view(-1), (p * last.y).view(-1)])
