r"""LODO, the learned online quasi-Newton optimizer, and its ablations (docs/paper.md §1, §1.1).

All parameters form one flat vector x in R^n. LODO keeps a preconditioner G(θ) and learns θ
online by hypergradient descent on the loss of the step it just took:

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
zero-padded to ñ), a_i(v) the permuted input of block layer i and λ_i(v) the adjoint of layer
i's output when v is pulled back through the layers above it,

.. math::
    ∇_{B_i} f = -α_0 \left( λ_i(p)\, a_i(m)^\top + λ_i(y)\, a_i(g)^\top \right)

blockwise. a_i(m) and λ_i(y) are the intermediates of the step G(θ_t) m_t itself, cached when the
step was taken (and recomputed bit-identically after ``load_state_dict``); a_i(g), λ_i(p) cost one
forward and one backward pass through G̃ at the old θ.

Optimizer state lives in ``self.state[first_param]`` (so ``state_dict()`` is torch's own):
``theta`` (LODO: shape (N, ñ/k, k, k)), ``momentum`` (n,), ``permutations`` (N, ñ) int64,
``meta_exp_avg``/``meta_exp_avg_sq``/``meta_step`` (Adam on θ), ``step`` (number of steps taken)
and ``step_lr`` (the α0 of the last step, which the next hypergradient differentiates).
"""
from __future__ import annotations

import math

import torch
from torch.optim import Optimizer

__all__ = ["LODO", "LODODiagonal", "LODOGlobal", "LODOResiduals", "LODONoMomentum", "LODOSGD"]

META_BETAS = (0.9, 0.999)
META_EPS = 1e-7  # the authors' TensorFlow Adam
SMALL_THETA = 1 << 18  # θ sizes up to this use the few-dispatch path for the outer products


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


def _validate(lr: float, meta_lr: float, beta: float) -> None:
    if not lr >= 0.0:
        raise ValueError(f"Invalid lr: {lr} (must be >= 0)")
    if not meta_lr >= 0.0:
        raise ValueError(f"Invalid meta_lr: {meta_lr} (must be >= 0)")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"Invalid beta: {beta} (must be in [0, 1))")


def _validate_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid {name}: {value} (must be an integer >= 1)")


class LODO(Optimizer):
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
        _validate(lr, meta_lr, beta)
        _validate_positive_int("depth", depth)
        _validate_positive_int("block_size", block_size)
        defaults = dict(lr=lr, meta_lr=meta_lr, beta=beta, depth=depth, block_size=block_size)
        self._init_optimizer(params, defaults, seed)

    # ------------------------------------------------------------------ set-up, shared by the family
    def _init_optimizer(self, params, defaults: dict, seed: int | None) -> None:
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
        like = dict(dtype=first.dtype, device=first.device)
        state = self.state[first]
        state["step"] = 0
        state["step_lr"] = 0.0
        state["momentum"] = torch.zeros(self._n, **like)
        for key, value in self._init_state(generator).items():
            dtype = first.dtype if value.is_floating_point() else value.dtype
            state[key] = value.to(device=first.device, dtype=dtype).contiguous()  # flat kernels need it
        state["meta_step"] = 0
        state["meta_exp_avg"] = torch.zeros_like(state["theta"])
        state["meta_exp_avg_sq"] = torch.zeros_like(state["theta"])
        self._cache = None
        self._hypergradient_out = None
        self._meta_step_tensor = None

    def _init_state(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """θ_0 (random orthogonal blocks) and the permutations P_i, drawn on the CPU from the seed."""
        group = self.defaults
        depth, k = group["depth"], group["block_size"]
        width = hidden_width(self._n, k)
        permutations = torch.stack([torch.randperm(width, generator=generator) for _ in range(depth)])
        theta = random_orthogonal_blocks((depth, width // k), k, generator)
        return {"theta": theta, "permutations": permutations}

    def add_param_group(self, param_group: dict) -> None:
        if self.param_groups:
            raise ValueError(f"Invalid param_groups: {len(self.param_groups) + 1} groups "
                             "(LODO treats all parameters as one vector; pass one group)")
        super().add_param_group(param_group)

    @property
    def _state(self) -> dict:
        return self.state[self._params[0]]

    def load_state_dict(self, state_dict: dict) -> None:
        # torch casts every state tensor to the params' dtype; the permutations must stay integers
        saved = next(iter(state_dict["state"].values()), {}).get("permutations")
        super().load_state_dict(state_dict)
        if saved is not None:
            self._state["permutations"] = saved.to(device=self._params[0].device, dtype=torch.int64, copy=True)
        self._cache = None  # step intermediates are recomputed from θ and m on the next step

    # ------------------------------------------------------------------ the algorithm
    def step(self, closure=None):
        """One LODO step: meta-step on θ, momentum update, x ← x − G(θ) m. Returns the closure's loss.

        The update runs in inference mode (no autograd bookkeeping: ~10% less dispatch time per
        kernel, and a step is ~130 small kernels); the closure runs outside it, with grad enabled."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.inference_mode():
            self._update()
        return loss

    def _update(self) -> None:
        group = self.param_groups[0]
        state = self._state
        g = self._flat_grad()

        # θ_{t+1} ← θ_t − Adam(∇θ f(x_{t+1})),  ∇θ f(x_{t+1}) = −J_θ[G(θ_t) m_t]ᵀ g_{t+1}
        if state["step"] == 0:
            hypergradient = torch.zeros_like(state["theta"])  # m_0 = 0
        else:
            hypergradient = self._hypergradient(g, state["step_lr"])
        self._hypergradient_out = hypergradient
        self._meta_step(state, hypergradient, group["meta_lr"])
        if self._cache is not None and "plan" in self._cache:
            self._cache["plan"]["version"] = None  # the fused kernel does not bump θ._version

        # m_{t+1} ← β m_t + (1 − β) g_{t+1}
        m = state["momentum"]
        m.lerp_(g, 1.0 - group["beta"])  # = β m + (1 − β) g in one kernel

        # x_{t+2} ← x_{t+1} − G(θ_{t+1}) m_{t+1}
        direction = self._step_direction(m, group["lr"])
        self._move(direction)
        state["step_lr"] = float(group["lr"])
        state["step"] += 1

    def _meta_step(self, state: dict, hypergradient: torch.Tensor, meta_lr: float) -> None:
        """Adam on θ (betas 0.9/0.999, eps 1e-7, bias-corrected), torch.optim.Adam's fused kernel:

            s ← s + 1;  μ ← β1 μ + (1 − β1) h;  ν ← β2 ν + (1 − β2) h²
            θ ← θ − meta_lr / (1 − β1^s) · μ / (sqrt(ν / (1 − β2^s)) + eps)
        """
        beta1, beta2 = META_BETAS
        state["meta_step"] += 1
        if self._meta_step_tensor is None:
            with torch.inference_mode(False):  # a normal tensor, usable outside step() too
                self._meta_step_tensor = torch.zeros((), dtype=torch.float32, device=hypergradient.device)
        self._meta_step_tensor.fill_(state["meta_step"])
        torch._fused_adam_([state["theta"]], [hypergradient], [state["meta_exp_avg"]], [state["meta_exp_avg_sq"]],
                           [], [self._meta_step_tensor], lr=meta_lr, beta1=beta1, beta2=beta2,
                           weight_decay=0.0, eps=META_EPS, amsgrad=False, maximize=False)

    def _flat_grad(self) -> torch.Tensor:
        params = self._params
        if len(params) == 1:
            p = params[0]
            return p.grad.reshape(-1) if p.grad is not None else torch.zeros(self._n, dtype=p.dtype, device=p.device)
        return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1)
                          for p in params])

    def _move(self, direction: torch.Tensor) -> None:
        """x ← x − direction, direction a flat (n,) vector."""
        params = self._params
        if len(params) == 1:
            params[0].sub_(direction.view_as(params[0]))
            return
        pieces = torch.split(direction, [p.numel() for p in params])
        torch._foreach_sub_(params, [d.view_as(p) for d, p in zip(pieces, params)])

    @torch.no_grad()
    def preconditioner(self, v: torch.Tensor) -> torch.Tensor:
        """G(θ)·v at the current θ, for v of shape (n,) or a batch (b, n)."""
        if v.shape[-1] != self._n or v.dim() not in (1, 2):
            raise ValueError(f"Invalid v: shape {tuple(v.shape)} (must be ({self._n},) or (b, {self._n}))")
        state = self._state
        v = v.to(dtype=state["theta"].dtype, device=state["theta"].device)
        columns = v.reshape(-1, self._n).t()  # (n, b)
        out = self._apply_G(columns, self.param_groups[0]["lr"])
        return out.t().reshape(v.shape)

    # ------------------------------------------------------------------ G(θ) for LODO's block layers
    def _layers(self):
        """θ, the gather indices of P_i (N, ñ) and of P_iᵀ (their inverses, computed once)."""
        state = self._state
        if self._cache is None or self._cache.get("permutations") is not state["permutations"]:
            permutations = state["permutations"]
            with torch.inference_mode(False):
                self._cache = {"permutations": permutations, "inverse": torch.argsort(permutations, dim=1)}
        return state["theta"], state["permutations"], self._cache["inverse"]

    def _forward(self, z: torch.Tensor) -> torch.Tensor:
        """G̃ z for padded columns z (ñ, c): z_i = B(θ^(i)) P_i z_{i−1} (the plain path)."""
        blocks, perm, _ = self._layers()
        depth, nb, k, _ = blocks.shape
        c = z.shape[1]
        for i in range(depth):
            z = torch.bmm(blocks[i], z.index_select(0, perm[i]).view(nb, k, c)).view(-1, c)
        return z

    def _transpose(self, w: torch.Tensor) -> torch.Tensor:
        """G̃ᵀ w for columns w (ñ, c): w_{i−1} = P_iᵀ B(θ^(i))ᵀ w_i (the plain path)."""
        blocks, _, inverse = self._layers()
        depth, nb, k, _ = blocks.shape
        c = w.shape[1]
        for i in range(depth - 1, -1, -1):
            w = torch.bmm(blocks[i].transpose(1, 2), w.view(nb, k, c)).view(-1, c).index_select(0, inverse[i])
        return w

    def _pad(self, v: torch.Tensor, width: int, scale: float) -> torch.Tensor:
        """[I 0]ᵀ (scale·v) as (ñ, c) columns."""
        v = v.reshape(self._n, -1)
        z = v.new_zeros(width, v.shape[1])
        torch.mul(v, scale, out=z[: self._n])
        return z

    def _apply_G(self, columns: torch.Tensor, lr: float) -> torch.Tensor:
        """α0 [I 0] G̃ᵀ G̃ [I 0]ᵀ columns, columns of shape (n, c)."""
        width = self._state["permutations"].shape[1]
        return self._transpose(self._forward(self._pad(columns, width, 1.0)))[: self._n] * lr

    def _plan(self) -> dict:
        """The step's fast path: per-layer views of θ, of a contiguous copy of θᵀ (blocks
        transposed; refreshed after each meta-step), of the permutations and of preallocated 1-D
        buffers, so that each layer of each pass is exactly one gather and one batched k×k product,
        with no allocation and no look-ups in the loop. Its tensors are normal (not inference)
        tensors even when it is built inside step()."""
        state = self._state
        theta, perm = state["theta"], state["permutations"]
        plan = self._cache.get("plan") if self._cache is not None else None
        if plan is None or plan["theta"] is not theta:
            with torch.inference_mode(False):  # normal tensors: usable inside and outside step()
                plan = self._new_plan(theta, perm)
        if plan["version"] != theta._version:  # θ changed (meta-step, load): refresh θᵀ
            if "transpose_index" in plan:  # a contiguous gather: ~2.5× faster than a strided copy
                torch.index_select(theta.view(-1), 0, plan["transpose_index"], out=plan["transposed"].view(-1))
            else:
                plan["transposed"].copy_(theta.transpose(-1, -2))
            plan["version"] = theta._version
        return plan

    def _new_plan(self, theta: torch.Tensor, perm: torch.Tensor) -> dict:
        """The buffers, views and gather indices of `_plan`, and each pass's per-layer arguments."""
        _, _, inverse = self._layers()
        depth, nb, k, _ = theta.shape
        width = nb * k
        new = lambda *shape: theta.new_zeros(*shape)  # noqa: E731
        plan = {"theta": theta, "transposed": new(depth, nb, k, k), "version": None,
                "perm": list(perm.unbind(0)), "inverse": list(inverse.unbind(0)),
                "blocks": list(theta.unbind(0)), "pad_m": new(width), "pad_g": new(width),
                "z": new(width), "u": new(width), "w": new(width), "step_valid": False}
        # the four per-layer vector buffers of the hypergradient, in one allocation: [λ(p), λ(y), a(m), a(g)]
        vectors = new(4, depth, width)
        for name, buffer in zip(("adjoints_p", "adjoints_y", "inputs_m", "inputs_g"), vectors.unbind(0)):
            plan[name] = buffer
            plan[name + "_1d"] = list(buffer.unbind(0))
            plan[name + "_3d"] = [b.view(nb, k, 1) for b in buffer.unbind(0)]
        if theta.numel() <= SMALL_THETA:  # the outer products in a "columns" layout, see _outer_products
            rows = depth * nb  # one row per block of every layer
            arange = lambda *shape: torch.arange(math.prod(shape), device=theta.device).view(shape)  # noqa: E731
            plan["tile"] = (arange(4, rows, k).transpose(1, 2).reshape(-1),  # C[v][r][block] ← [v][block][r]
                            arange(k, k, rows).permute(2, 0, 1).reshape(-1))  # θ's [block][r][c] ← H[r][c][block]
            columns, hyper_columns = new(4, k, rows), new(k, k, rows)
            lam_p, lam_y, a_m, a_g = columns.unbind(0)  # (k, rows) each
            plan["columns"] = (vectors.view(-1), columns.view(-1), hyper_columns, hyper_columns.view(-1),
                               lam_p.view(k, 1, rows), a_m.view(1, k, rows),
                               lam_y.view(k, 1, rows), a_g.view(1, k, rows))
            plan["transpose_index"] = arange(*theta.shape).transpose(-1, -2).reshape(-1)
        plan["blocks_t"] = list(plan["transposed"].unbind(0))
        for name in ("z", "u"):
            plan[name + "_3d"] = plan[name].view(nb, k, 1)
        plan["heads"] = tuple(plan[name][: self._n] for name in ("pad_m", "pad_g", "w"))  # [I 0] views
        self._pass_args(plan)
        self._cache["plan"] = plan
        return plan

    @staticmethod
    def _fast_forward(plan: dict, inputs: str) -> None:
        """G̃ z, storing a_i = P_i z_{i−1} in plan[inputs]: z = pad_m → λ_N(y), or pad_g → λ_N(p)."""
        index_select, bmm = torch.index_select, torch.bmm
        for source, perm, a_1d, block, a_3d, z_3d in plan["forward_" + inputs]:
            index_select(source, 0, perm, out=a_1d)
            bmm(block, a_3d, out=z_3d)

    @staticmethod
    def _fast_backward(plan: dict, adjoints: str, full: bool) -> torch.Tensor | None:
        """λ_{i−1} = P_iᵀ B_iᵀ λ_i from λ_N = plan[adjoints][N−1]; returns G̃ᵀ λ_N if `full`."""
        index_select, bmm = torch.index_select, torch.bmm
        layers = plan["backward_" + adjoints]
        for block_t, lam_3d, u_3d, u, inverse, below in (layers if full else layers[:-1]):
            bmm(block_t, lam_3d, out=u_3d)
            index_select(u, 0, inverse, out=below)
        return plan["w"] if full else None

    @staticmethod
    def _pass_args(plan: dict) -> None:
        """Per-layer argument tuples of the four passes, so the loops do no look-ups."""
        depth = len(plan["perm"])
        for inputs, source, out in (("inputs_m", "pad_m", "adjoints_y"), ("inputs_g", "pad_g", "adjoints_p")):
            plan["forward_" + inputs] = [
                (plan[source] if i == 0 else plan["z"], plan["perm"][i], plan[inputs + "_1d"][i],
                 plan["blocks"][i], plan[inputs + "_3d"][i], plan[out + "_3d"][-1] if i == depth - 1 else plan["z_3d"])
                for i in range(depth)]
        for adjoints in ("adjoints_y", "adjoints_p"):
            plan["backward_" + adjoints] = [
                (plan["blocks_t"][i], plan[adjoints + "_3d"][i], plan["u_3d"], plan["u"], plan["inverse"][i],
                 plan[adjoints + "_1d"][i - 1] if i > 0 else plan["w"])
                for i in range(depth - 1, -1, -1)]

    def _step_direction(self, m: torch.Tensor, lr: float) -> torch.Tensor:
        """G(θ) m = α0 [I 0] G̃ᵀ G̃ [I 0]ᵀ m, caching a_i(m) and λ_i(y), y = G̃ m̃."""
        plan = self._plan()
        pad_m, _, w = plan["heads"]
        pad_m.copy_(m)
        self._fast_forward(plan, "inputs_m")
        self._fast_backward(plan, "adjoints_y", full=True)
        plan["step_valid"] = True
        return torch.mul(w, lr)

    @staticmethod
    def _outer_products(plan: dict, k: int) -> torch.Tensor:
        """λ_i(p) a_i(m)ᵀ + λ_i(y) a_i(g)ᵀ for every block of every layer, shape (N·ñ/k, k, k).

        Small θ ("tile" in the plan): one gather lays the four vectors out as columns
        C[v][r][block], so that H[r][c][block] = C[λp][r] C[a_m][c] + C[λy][r] C[a_g][c] is two
        broadcast products with long inner loops, and one gather puts H back in θ's layout (four
        kernels; the standard layout's inner loops have length k and are ~4× slower per element).
        Large θ: one row r of every block at a time, λ[:, r] broadcast over a (memory-bound; the
        index tensors of the gathers would cost more memory than θ)."""
        if "tile" in plan:
            to_columns, from_columns = plan["tile"]
            vectors, columns, hyper_columns, hyper_flat, lam_p, a_m, lam_y, a_g = plan["columns"]
            torch.index_select(vectors, 0, to_columns, out=columns)
            torch.mul(lam_p, a_m, out=hyper_columns)  # [r][c][block]
            hyper_columns.addcmul_(lam_y, a_g)
            return torch.index_select(hyper_flat, 0, from_columns).view(-1, k, k)
        lam_p, a_m = plan["adjoints_p"].view(-1, k), plan["inputs_m"].view(-1, k)
        lam_y, a_g = plan["adjoints_y"].view(-1, k), plan["inputs_g"].view(-1, k)
        hyper = lam_p.new_empty(lam_p.shape[0], k, k)
        for r in range(k):
            row = hyper[:, r, :]
            torch.mul(a_m, lam_p[:, r:r + 1], out=row)
            row.addcmul_(a_g, lam_y[:, r:r + 1])
        return hyper

    def _hypergradient(self, g: torch.Tensor, lr: float) -> torch.Tensor:
        """∇θ f = −J_θ[G(θ) m]ᵀ g = −α0 (λ_i(p) a_i(m)ᵀ + λ_i(y) a_i(g)ᵀ) per block, p = G̃ ĝ."""
        plan = self._plan()
        if not plan["step_valid"]:  # after load_state_dict: redo the last step's intermediates
            self._step_direction(self._state["momentum"], lr)
        # −α0 folded into ĝ: p and a(g) are linear in ĝ, and each term holds exactly one of them
        torch.mul(g, -lr, out=plan["heads"][1])
        self._fast_forward(plan, "inputs_g")
        self._fast_backward(plan, "adjoints_p", full=False)
        return self._outer_products(plan, plan["theta"].shape[-1]).view(plan["theta"].shape)


class LODONoMomentum(LODO):
    """LODO with β = 0 (docs/paper.md §1.1, the paper's text): the step is −G(θ) g."""

    def __init__(self, params, lr: float = 1.0, meta_lr: float = 1e-3, depth: int = 16,
                 block_size: int = 4, seed: int | None = None):
        super().__init__(params, lr=lr, meta_lr=meta_lr, beta=0.0, depth=depth, block_size=block_size, seed=seed)


class LODOSGD(LODO):
    """LODO whose meta-optimizer is plain SGD: θ ← θ − meta_lr · ∇θ f (docs/paper.md §1.1)."""

    def _meta_step(self, state: dict, hypergradient: torch.Tensor, meta_lr: float) -> None:
        state["meta_step"] += 1
        state["theta"].add_(hypergradient, alpha=-meta_lr)


class _SimpleLODO(LODO):
    """Ablations whose G(θ) is cheap enough to need no cached intermediates."""

    def __init__(self, params, lr: float = 1.0, meta_lr: float = 1e-3, beta: float = 0.9,
                 seed: int | None = None):
        _validate(lr, meta_lr, beta)
        self._init_optimizer(params, dict(lr=lr, meta_lr=meta_lr, beta=beta), seed)

    def _init_state(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {"theta": torch.ones(self._theta_size())}

    def _theta_size(self) -> int:
        raise NotImplementedError

    def _step_direction(self, m: torch.Tensor, lr: float) -> torch.Tensor:
        return self._apply_G(m.view(-1, 1), lr).view(-1)


class LODODiagonal(_SimpleLODO):
    """LODO-Diagonal: G = α0 · diag(θ), θ ∈ R^n initialised to ones; ∇θ f = −α0 g ⊙ m."""

    def _theta_size(self) -> int:
        return self._n

    def _apply_G(self, columns: torch.Tensor, lr: float) -> torch.Tensor:
        return columns * self._state["theta"].unsqueeze(1) * lr

    def _hypergradient(self, g: torch.Tensor, lr: float) -> torch.Tensor:
        return g * self._state["momentum"] * -lr


class LODOGlobal(_SimpleLODO):
    """LODO-Global: G = α0 · θ · I, scalar θ initialised to 1; ∇θ f = −α0 gᵀ m."""

    def _theta_size(self) -> int:
        return 1

    def _apply_G(self, columns: torch.Tensor, lr: float) -> torch.Tensor:
        return columns * self._state["theta"] * lr

    def _hypergradient(self, g: torch.Tensor, lr: float) -> torch.Tensor:
        return torch.dot(g, self._state["momentum"]).mul(-lr).view(1)


class LODOResiduals(LODO):
    r"""LODO-Residuals: G = α0 [I 0] G̃ᵀ D G̃ [I 0]ᵀ with G̃ = Π_i (I + diag(w_i) P_i),
    learned diagonal D (init ones), w_i ~ N(0, 1/N); depth N = 64 and ñ = 2n as the authors used.

    θ is one flat tensor [w_1 … w_N, D] of length (N + 1) ñ. Layer i: z_i = z_{i−1} + w_i ⊙ P_i z_{i−1};
    its adjoint: λ_{i−1} = λ_i + P_iᵀ (w_i ⊙ λ_i). With p = G̃ ĝ, y = G̃ m̃:
    ∇_D f = −α0 p ⊙ y,  ∇_{w_i} f = −α0 (λ_i(D p) ⊙ a_i(m) + λ_i(D y) ⊙ a_i(g)).
    """

    def __init__(self, params, lr: float = 1.0, meta_lr: float = 1e-3, beta: float = 0.9,
                 depth: int = 64, seed: int | None = None):
        _validate(lr, meta_lr, beta)
        _validate_positive_int("depth", depth)
        self._init_optimizer(params, dict(lr=lr, meta_lr=meta_lr, beta=beta, depth=depth), seed)

    def _init_state(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        depth, width = self.defaults["depth"], 2 * self._n
        permutations = torch.stack([torch.randperm(width, generator=generator) for _ in range(depth)])
        w = torch.randn(depth, width, generator=generator, dtype=torch.float64) / math.sqrt(depth)
        theta = torch.cat([w.reshape(-1), torch.ones(width, dtype=torch.float64)])
        return {"theta": theta, "permutations": permutations}

    def _buffers(self) -> dict:
        """Per-step work space: a_i and λ_i for the step (m) and for the hypergradient (g)."""
        blocks, perm, _ = self._layers()
        if "inputs_m" not in self._cache:
            depth, width = perm.shape
            new = lambda: blocks.new_empty(depth, width, 1)  # noqa: E731
            with torch.inference_mode(False):  # normal tensors: usable inside and outside step()
                self._cache.update(inputs_m=new(), adjoints_y=new(), inputs_g=new(), adjoints_p=new(),
                                   step_valid=False)
        return self._cache

    def _parts(self):
        state = self._state
        depth, width = state["permutations"].shape
        theta = state["theta"]
        return theta[: depth * width].view(depth, width, 1), theta[depth * width:].view(width, 1)

    def _forward(self, z, inputs, out=None):
        w, _ = self._parts()
        _, perm, _ = self._layers()
        for i in range(perm.shape[0]):
            a = z.index_select(0, perm[i])
            if inputs is not None:
                inputs[i] = a
            z = torch.addcmul(z, w[i], a)
        return z

    def _backward(self, adjoints, full):
        """adjoints[N−1] holds λ_N; fills λ_i for i < N and returns λ_0 = G̃ᵀ λ_N."""
        w, _ = self._parts()
        _, _, inverse = self._layers()
        lam = adjoints[-1]
        for i in range(inverse.shape[0] - 1, -1, -1):
            adjoints[i] = lam
            lam = lam + (w[i] * lam).index_select(0, inverse[i])
        return lam

    def _apply_G(self, columns, lr):
        _, d = self._parts()
        _, perm, _ = self._layers()
        depth, width = perm.shape
        y = self._forward(self._pad(columns, width, 1.0), None)
        adjoints = y.new_empty(depth, *y.shape)
        adjoints[-1] = d * y
        return self._backward(adjoints, True)[: self._n] * lr

    def _step_direction(self, m, lr):
        buffers = self._buffers()
        _, d = self._parts()
        width = buffers["inputs_m"].shape[1]
        y = self._forward(self._pad(m, width, 1.0), buffers["inputs_m"])
        buffers["y"] = y
        buffers["adjoints_y"][-1] = d * y
        lam = self._backward(buffers["adjoints_y"], True)
        buffers["step_valid"] = True
        return lam[: self._n].view(-1) * lr

    def _hypergradient(self, g, lr):
        buffers = self._buffers()
        if not buffers["step_valid"]:
            self._step_direction(self._state["momentum"], lr)
        _, d = self._parts()
        width = buffers["inputs_m"].shape[1]
        p = self._forward(self._pad(g, width, -lr), buffers["inputs_g"])
        buffers["adjoints_p"][-1] = d * p
        self._backward(buffers["adjoints_p"], False)
        grad_w = buffers["adjoints_p"] * buffers["inputs_m"] + buffers["adjoints_y"] * buffers["inputs_g"]
        return torch.cat([grad_w.view(-1), (p * buffers["y"]).view(-1)])
