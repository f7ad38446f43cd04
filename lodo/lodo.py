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
forward and one backward pass through G̃ at the old θ. The arithmetic (passes, hypergradient,
Adam on θ) is `BlockLanes`, shared with the population-batched form (lodo/batched.py): a lane of
a batch and a LODO built with the same seed take the same steps, bit for bit.

Optimizer state lives in ``self.state[first_param]`` (so ``state_dict()`` is torch's own):
``theta`` (LODO: shape (N, ñ/k, k, k)), ``momentum`` (n,), ``permutations`` (N, ñ) (LODO: int32),
``meta_exp_avg``/``meta_exp_avg_sq``/``meta_step`` (Adam on θ), ``step`` (number of steps taken)
and ``step_lr`` (the α0 of the last step, which the next hypergradient differentiates).
LODO's θ and moments there are views (N, ñ/k, k, k) of `BlockLanes`' layout, (N, k, k, ñ/k).
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
    (`_apply`) and the hypergradient −J_θ[G(θ) m]ᵀ g (`_hypergradient`, which `_learn` feeds to
    Adam); `_direction` (G(θ) m for the step, by default `_apply`) may keep what the next
    hypergradient needs, and `_reset` drops derived buffers when a state is loaded.
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
            state[key] = value.to(device=first.device, dtype=dtype)  # its layout kept (LODO: BlockLanes')
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
        # torch casts every state tensor to the params' dtype; the permutations stay integers of our kind
        saved = next(iter(state_dict["state"].values()), {}).get("permutations")
        kind = self._state["permutations"].dtype if "permutations" in self._state else torch.int64
        super().load_state_dict(state_dict)
        if saved is not None:
            self._state["permutations"] = saved.to(device=self._params[0].device, dtype=kind, copy=True)
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
            self._learn(g, state["step_lr"], group["meta_lr"])
            # m_{t+1} ← β m_t + (1 − β) g_{t+1}
            state["momentum"].lerp_(g, 1.0 - group["beta"])
            # x_{t+2} ← x_{t+1} − G(θ_{t+1}) m_{t+1}
            self._move(self._direction(state["momentum"], group["lr"]))
            state["step_lr"] = float(group["lr"])
            state["step"] += 1
        return loss

    def _learn(self, g: torch.Tensor, lr: float, meta_lr: float) -> None:
        """θ ← θ − Adam(∇θ f(x_{t+1})) from g = g_{t+1} and the α0 `lr` of the last step (m_0 = 0:
        a zero hypergradient at step 0)."""
        state = self._state
        if state["step"] == 0:
            hypergradient = torch.zeros_like(state["theta"])
        else:
            hypergradient = self._hypergradient(g, lr)
        self._meta_step(hypergradient, meta_lr)

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

    def _reset(self) -> None:
        """Called at the end of __init__ and after load_state_dict: drop anything derived from the state."""


# ---------------------------------------------------------------------------- G̃, G̃ᵀ, the hypergradient and Adam on θ
#: the most θ values whose hypergradient and Adam step exist at once (the meta-step runs a chunk of
#: layers at a time), so the step's temporaries stay a small fraction of T on large models
META_CHUNK_VALUES = 1 << 20


class BlockLanes:
    r"""LODO's arithmetic for P lanes at once, each lane its own θ, permutations and Adam moments:
    `LODO` is one lane, `lodo.batched.BatchedLODO` P lanes, so both run these same kernels.

    Layout ("columns"): a layer has L = P·ñ/k blocks; its vectors are (k, L), entry
    [r][lane·ñ/k + b] holding element b·k + r of that lane's vector, and θ is (N, k, k, P, ñ/k)
    with θ[i][r][c] the (r, c) entries of every block of layer i. A block product is then k
    multiply-adds of length L (a bmm over L k×k blocks is one tiny matrix product per block, ~10×
    slower at ñ = 6·10⁴), each P_i (offset per lane, composed with the layout) is one gather, and
    the hypergradient's outer products are two broadcast products in θ's own layout.

    Memory, with T = N·ñ·k·P the size of θ: θ and Adam's two moments (3T), the vectors a(m),
    λ(y), a(g) of every layer (3·N·ñ·P, 0.75T at k = 4), the gather indices of P_i and P_iᵀ
    (int32: 0.5T) and, above `META_CHUNK_VALUES`, the hypergradient, Adam's update and λ(p) of one
    or two layers: there the meta-step runs a layer at a time from the top, as soon as the
    backward pass has gone below the layer. With its int32 permutations (0.25T) LODO holds ≈ 4.7T.
    """

    def __init__(self, theta: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                 permutations: torch.Tensor, n: int):
        """θ and its moments (N, k, k, P, ñ/k) contiguous, permutations (N, P, ñ) integers, n ≤ ñ the
        parameters per lane."""
        self.theta, self.exp_avg, self.exp_avg_sq, self.perm, self.n = theta, exp_avg, exp_avg_sq, permutations, n
        depth, k, _, lanes, nb = theta.shape
        width, blocks, device = nb * k, lanes * nb, theta.device
        # the meta-step at once, or (θ larger than META_CHUNK_VALUES) a layer at a time from the top
        self.chunk = depth if theta.numel() <= META_CHUNK_VALUES else 1
        # a(m), λ(y) of the last step (the next hypergradient needs them), a(g) of every layer, and λ(p)
        # of every layer or, a layer at a time, of the two the backward pass is between
        self.vectors = theta.new_zeros(3, depth, k, lanes, nb)
        self.inputs_m, self.adjoints_y, self.inputs_g = self.vectors.unbind(0)
        self.adjoints_p = theta.new_zeros(depth if self.chunk == depth else 2, k, lanes, nb)
        lam_p = list(self.adjoints_p.unbind(0)) * (depth if self.chunk == depth else depth // 2 + 1)
        index_dtype = torch.int32 if lanes * width < 2**31 else torch.int64  # half the memory of int64
        lane = torch.arange(lanes, dtype=index_dtype, device=device).view(-1, 1)
        j = torch.arange(width, dtype=index_dtype, device=device).view(1, -1)
        position = lambda p, v: (v % k) * blocks + p * nb + v // k  # noqa: E731  (lane p, element v) → columns
        natural = lane * width + j                                  # (lane p, element j) → (P, ñ) row-major
        here = position(lane, j)

        indices = torch.empty(2, depth, lanes * width, dtype=index_dtype, device=device)  # one allocation
        self._fwd, self._bwd = list(indices[0].unbind(0)), list(indices[1].unbind(0))
        for i in range(depth):  # a layer at a time: no (N, P, ñ) int64 temporaries
            perm = permutations[i].to(index_dtype)
            inverse = torch.empty_like(perm).scatter_(1, permutations[i].long(), j.expand_as(perm))
            self._fwd[i][here.view(-1)] = (lane * width + perm if i == 0 else position(lane, perm)).view(-1)
            self._bwd[i][(natural if i == 0 else here).view(-1)] = position(lane, inverse).view(-1)
        slots = [t.view(depth, k, blocks) for t in self.vectors.unbind(0)] + [[t.view(k, blocks) for t in lam_p]]
        cols = theta.view(depth, k, k, blocks)
        # per layer: its four vectors as (full (k, L), rows [r] (L,), flat), θ's columns [c] and rows [r] (k, L)
        self._layers = [[(slot[i], list(slot[i].unbind(0)), slot[i].view(-1)) for slot in slots]
                        + [list(cols[i].unbind(1)), list(cols[i].unbind(0))] for i in range(depth)]
        self._pad_m, self._pad_g = theta.new_zeros(lanes, width), theta.new_zeros(lanes, width)
        self._z, self._u, self._w = theta.new_zeros(k, blocks), theta.new_zeros(k, blocks), theta.new_zeros(lanes, width)
        self._z_flat, self._u_flat = self._z.view(-1), self._u.view(-1)
        self._h, self._delta = theta.new_empty(self.chunk, *theta.shape[1:]), theta.new_empty(self.chunk, *theta.shape[1:])
        self._adam_step = torch.zeros((), dtype=torch.float32, device=device)  # Adam's s, as adam() takes it
        self._fused = True if device.type in ("cpu", "cuda") else None  # torch's fused kernel where it has one

    def subset(self, index: torch.Tensor) -> "BlockLanes":
        """The lanes `index` (a new object; its tensors are copies, the last step's a(m), λ(y) kept)."""
        lanes = lambda t, axis: t.index_select(axis, index).contiguous()  # noqa: E731
        kept = BlockLanes(lanes(self.theta, 3), lanes(self.exp_avg, 3), lanes(self.exp_avg_sq, 3),
                          lanes(self.perm, 1), self.n)
        kept.vectors.copy_(lanes(self.vectors, 3))
        return kept

    # ------------------------------------------------------------------ passes
    def _forward(self, z: torch.Tensor, inputs: int, out: int) -> None:
        """G̃ z for padded z (P, ñ): a_i = P_i z_{i−1} into layer slot `inputs`, z_N into the last layer's slot `out`."""
        source, last = z.view(-1), len(self._layers) - 1
        for i, layer in enumerate(self._layers):
            (_, a_rows, a_flat), columns = layer[inputs], layer[4]
            z, z_flat = (layer[out][0], layer[out][2]) if i == last else (self._z, self._z_flat)
            torch.index_select(source, 0, self._fwd[i], out=a_flat)
            torch.mul(columns[0], a_rows[0], out=z)  # z[r] = Σ_c θ[r][c] a[c]
            for column, a_c in zip(columns[1:], a_rows[1:]):
                z.addcmul_(column, a_c)
            source = z_flat

    def _backward(self, adjoints: int, top: int, bottom: int) -> None:
        """For layers i = top−1 … bottom: λ_{i−1} = P_iᵀ B(θ^(i))ᵀ λ_i in slot `adjoints` of layer
        i − 1, from λ_top−1 there; λ_0 = G̃ᵀ λ_N goes to self._w (P, ñ)."""
        u, u_flat, w_flat = self._u, self._u_flat, self._w.view(-1)
        for i in range(top - 1, bottom - 1, -1):
            (_, lam_rows, _), rows = self._layers[i][adjoints], self._layers[i][5]
            torch.mul(rows[0], lam_rows[0], out=u)  # u[c] = Σ_r θ[r][c] λ[r]
            for row, lam_r in zip(rows[1:], lam_rows[1:]):
                u.addcmul_(row, lam_r)
            out = w_flat if i == 0 else self._layers[i - 1][adjoints][2]
            torch.index_select(u_flat, 0, self._bwd[i], out=out)

    def direction(self, m: torch.Tensor, lr) -> torch.Tensor:
        """G(θ) m = α0 [I 0] G̃ᵀ G̃ [I 0]ᵀ m for m (P, n), lr α0 a float or (P, 1); keeps a_i(m), λ_i(y)."""
        self._pad_m[:, : self.n] = m
        self._forward(self._pad_m, inputs=0, out=1)
        self._backward(1, len(self._layers), 0)
        return lr * self._w[:, : self.n]

    def apply(self, v: torch.Tensor, lr) -> torch.Tensor:
        """G(θ) v for v (P, n), in the hypergradient's work space (keeps the step's a_i(m), λ_i(y))."""
        self._pad_g[:, : self.n] = v
        self._forward(self._pad_g, inputs=2, out=3)
        self._backward(3, len(self._layers), 0)
        return lr * self._w[:, : self.n]

    # ------------------------------------------------------------------ hypergradient and meta-step
    def learn(self, g: torch.Tensor, lr, meta_step) -> None:
        """∇θ f = −α0 (λ_i(p) a_i(m)ᵀ + λ_i(y) a_i(g)ᵀ) per block, p = G̃ ĝ (−α0 folded into ĝ), at
        the θ of the last `direction`, for g (P, n) and its α0 `lr`; `meta_step(lo, hi, h)` updates
        θ's layers lo … hi − 1 from their hypergradient h as soon as the backward pass is below them."""
        torch.mul(g, -lr, out=self._pad_g[:, : self.n])
        self._forward(self._pad_g, inputs=2, out=3)
        depth, k, _, lanes, nb = self.theta.shape
        for top in range(depth, 0, -self.chunk):
            bottom = max(0, top - self.chunk)
            self._backward(3, top, max(bottom, 1))  # λ(p) of layers bottom … top − 1, at their old θ
            h = self._h[: top - bottom]
            lam_p = self.adjoints_p[bottom:top] if self.chunk == depth else self.adjoints_p[bottom % 2: bottom % 2 + 1]
            column, row = (top - bottom, k, 1, lanes, nb), (top - bottom, 1, k, lanes, nb)
            torch.mul(lam_p.view(column), self.inputs_m[bottom:top].view(row), out=h)
            h.addcmul_(self.adjoints_y[bottom:top].view(column), self.inputs_g[bottom:top].view(row))
            meta_step(bottom, top, h)

    def adam(self, lo: int, hi: int, h: torch.Tensor, meta_lr, step: int) -> None:
        """Adam on layers lo … hi − 1 of θ at step s = `step`, per lane meta_lr (a float or (P,)):
        μ ← β1 μ + (1 − β1) h;  ν ← β2 ν + (1 − β2) h²;  θ ← θ − meta_lr/(1 − β1^s) · μ / (√ν / √(1 − β2^s) + ε),
        as torch.optim.Adam's functional form at lr 1 into a zeroed δ, then θ ← θ + meta_lr·δ (one
        fused multiply-add per lane's column)."""
        delta = self._delta[: hi - lo].zero_()
        self._adam_step.fill_(step - 1)  # adam() counts it up to s
        beta1, beta2 = META_BETAS
        adam([delta], [h], [self.exp_avg[lo:hi]], [self.exp_avg_sq[lo:hi]], [], [self._adam_step],
             fused=self._fused, amsgrad=False, beta1=beta1, beta2=beta2, lr=1.0, weight_decay=0.0,
             eps=META_EPS, maximize=False)
        meta_lr = torch.as_tensor(meta_lr, dtype=delta.dtype, device=delta.device)
        self.theta[lo:hi].addcmul_(delta, meta_lr.view(1, 1, 1, -1, 1))


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
        """θ_0 (random orthogonal blocks, drawn in float64 on the CPU) and the permutations P_i, from the seed."""
        depth, k = self.defaults["depth"], self.defaults["block_size"]
        width, first = hidden_width(self._n, k), self._params[0]
        permutations = random_permutations(depth, width, generator).to(torch.int32)  # half of int64's memory
        theta = torch.empty(depth, k, k, width // k, dtype=first.dtype, device=first.device)  # BlockLanes' layout
        for layer in theta:  # a layer at a time, the same draws as all at once (each is 16·ñ/k of them)
            layer.copy_(random_orthogonal_blocks((width // k,), k, generator).permute(1, 2, 0))
        return {"theta": theta.permute(0, 3, 1, 2), "permutations": permutations}

    def _reset(self) -> None:
        self._core: BlockLanes | None = None  # rebuilt from the (loaded) state on first use
        self._has_step = False  # whether the core holds the last step's a_i(m), λ_i(y)

    def _lanes(self) -> BlockLanes:
        """The state as one lane of `BlockLanes`: θ and its moments laid out as columns, the state's
        (N, ñ/k, k, k) tensors views of them (so state_dict() keeps the documented shape)."""
        if self._core is None:
            state = self._state
            depth, nb, k, _ = state["theta"].shape
            columns = {}
            with torch.inference_mode(False):  # normal tensors: usable inside and outside step()
                for key in ("theta", "meta_exp_avg", "meta_exp_avg_sq"):
                    laid_out = state[key].permute(0, 2, 3, 1).contiguous()  # no copy once laid out
                    state[key] = laid_out.permute(0, 3, 1, 2)
                    columns[key] = laid_out.view(depth, k, k, 1, nb)
                self._core = BlockLanes(columns["theta"], columns["meta_exp_avg"], columns["meta_exp_avg_sq"],
                                        state["permutations"].unsqueeze(1), self._n)
        return self._core

    def _apply(self, columns: torch.Tensor, lr: float) -> torch.Tensor:
        """α0 [I 0] G̃ᵀ G̃ [I 0]ᵀ columns, column by column, keeping the step's intermediates."""
        core = self._lanes()
        return torch.stack([core.apply(v.view(1, -1), lr).view(-1) for v in columns.t()], dim=1)

    def _direction(self, m: torch.Tensor, lr: float) -> torch.Tensor:
        """G(θ) m = α0 [I 0] G̃ᵀ G̃ [I 0]ᵀ m, keeping a_i(m) and λ_i(y), y = G̃ m̃."""
        self._has_step = True
        return self._lanes().direction(m.view(1, -1), lr).view(-1)

    def _learn(self, g: torch.Tensor, lr: float, meta_lr: float) -> None:
        """The hypergradient and Adam on θ, a chunk of layers at a time (`BlockLanes.learn`). At step
        0 (m_0 = 0) the hypergradient is zero and Adam's step leaves θ and its moments as they are."""
        state = self._state
        if state["step"] > 0:
            core = self._lanes()
            if not self._has_step:  # after load_state_dict: redo the last step's intermediates
                self._direction(state["momentum"], lr)
            core.learn(g.view(1, -1), lr, lambda lo, hi, h: self._meta_update(core, lo, hi, h, meta_lr))
        state["meta_step"] += 1

    def _meta_update(self, core: BlockLanes, lo: int, hi: int, h: torch.Tensor, meta_lr: float) -> None:
        """Adam on layers lo … hi − 1 of θ (`BlockLanes.adam`)."""
        core.adam(lo, hi, h, meta_lr, self._state["meta_step"] + 1)


# ---------------------------------------------------------------------------- ablations (docs/paper.md §1.1)
class LODONoMomentum(LODO):
    """LODO with β = 0 (docs/paper.md §1.1, the paper's text): the step is −G(θ) g."""

    def __init__(self, params, lr: float = 1.0, meta_lr: float = 1e-3, depth: int = 16,
                 block_size: int = 4, seed: int | None = None):
        super().__init__(params, lr=lr, meta_lr=meta_lr, beta=0.0, depth=depth, block_size=block_size, seed=seed)


class LODOSGD(LODO):
    """LODO whose meta-optimizer is plain SGD: θ ← θ − meta_lr · ∇θ f (docs/paper.md §1.1)."""

    def _meta_update(self, core: BlockLanes, lo: int, hi: int, h: torch.Tensor, meta_lr: float) -> None:
        core.theta[lo:hi].add_(h, alpha=-meta_lr)


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
