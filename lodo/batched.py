r"""Population-batched optimizers: P independent copies of one optimizer as one program (issue 15).

x is a (P, n) tensor, row i lane i's flat parameter vector; every hyperparameter is a per-lane
column (P, 1); each update is exactly the unbatched optimizer's rule (docs/paper.md §1, §2),
applied row by row with no operation that mixes lanes, so a lane's numbers never depend on its
neighbours and a diverged lane's NaNs stay in its row. `keep(index)` drops lanes.

Each update is also torch's, op for op, so a lane rounds exactly as the unbatched optimizer does:
torch's `add_(b, alpha=a)` is a fused multiply-add (x + a·b rounded once), so its batched form is
`addcmul_(b, a_column)`, which fuses the same way, never `sub_(a * b)`; `addcdiv_(m, d, value=a)`
rounds (a·m)/d, so its batched form is `addcdiv_(a * m, d)` (tests/test_population.py compares
every step's parameters bit for bit).

Explicit batch dimensions, not torch.func.vmap: measured on an Adam step (P = 32, n = 100, one
thread) vmap costs ~250 µs per batched step against ~50 µs with explicit (P, 1) columns.

`step(x, closure)`: `closure()` evaluates every lane at the current x and returns
(loss (P,), grad (P, n)); x is updated in place.
"""
from __future__ import annotations

import torch

import lodo
from lodo.lodo import BlockLanes


class BatchedOptimizer:
    """Base: per-lane hyperparameter columns and lane-first state tensors listed in `_lane_state`."""

    name = ""
    _lane_state: tuple[str, ...] = ()

    def __init__(self, x: torch.Tensor, hparams: dict[str, torch.Tensor]):
        self.t = 0  # steps taken (all running lanes step together)
        for key, values in hparams.items():
            setattr(self, key, values.to(dtype=x.dtype, device=x.device).view(-1, 1))
        self._hparams = tuple(hparams)
        for key in self._lane_state:
            setattr(self, key, torch.zeros_like(x))

    def step(self, x: torch.Tensor, closure) -> torch.Tensor:
        loss, grad = closure()
        self.t += 1
        self._update(x, grad)
        return loss

    def _update(self, x: torch.Tensor, g: torch.Tensor) -> None:
        raise NotImplementedError

    def keep(self, index: torch.Tensor) -> None:
        for key in self._hparams + self._lane_state:
            setattr(self, key, getattr(self, key)[index])

    def lane_state(self, row: int) -> dict:
        """Lane `row`'s state (copies, tensors and ints only): `load_lane_state` into a batch built with the
        same seed and hyperparameters continues that lane bit for bit (tuner.trial.loop's per-lane checkpoints).
        Hyperparameter columns are not part of it: they come from the hyperparameters."""
        return {"t": self.t, **{key: getattr(self, key)[row].clone() for key in self._lane_state}}

    def load_lane_state(self, row: int, state: dict) -> None:
        """Set lane `row` to a `lane_state`, in place. The lanes of a batch step together, so every lane
        loaded into one batch must be at the same step t (ValueError otherwise)."""
        t = int(state["t"])
        if self.t not in (0, t):
            raise ValueError(f"Invalid lane state: step {t} (the batch's lanes are at step {self.t}; lanes step together)")
        self.t = t
        for key in self._lane_state:
            getattr(self, key)[row] = state[key]


class Adam(BatchedOptimizer):
    """torch.optim.Adam, ε = 1e-7 (lodo/registry.py)::

        m ← β1 m + (1 − β1) g;  v ← β2 v + (1 − β2) g²
        x ← x − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε)

    Op for op torch's single-tensor Adam (`_bias_corrections`, and the module docstring)."""

    name = "Adam"
    _lane_state = ("m", "v")
    eps = 1e-7

    def _bias_corrections(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per lane −lr/(1 − β1^t) and √(1 − β2^t) in Python floats, as torch.optim.Adam takes them: a tensor
        pow is vectorised from 16 elements on and rounds differently, so a lane's numbers would depend on
        how many lanes share its batch."""
        t = self.t
        rows = [(-(lr / (1 - b1 ** t)), (1 - b2 ** t) ** 0.5)
                for lr, b1, b2 in zip(self.lr.view(-1).tolist(), self.beta1.view(-1).tolist(), self.beta2.view(-1).tolist())]
        columns = self.lr.new_tensor(rows)
        return columns[:, :1], columns[:, 1:]

    def _update(self, x, g):
        self.m.lerp_(g, 1 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(g, g * (1 - self.beta2))
        neg_step_size, bias_correction2_sqrt = self._bias_corrections()
        denom = (self.v.sqrt() / bias_correction2_sqrt).add_(self.eps)
        x.addcdiv_(neg_step_size * self.m, denom)  # = torch's addcdiv_(m, denom, value=-step_size)


class Momentum(BatchedOptimizer):
    """torch.optim.SGD with momentum (heavy ball): b ← μ b + g;  x ← x − lr·b (b_0 = 0, so b_1 = g)."""

    name = "Momentum"
    _lane_state = ("b",)

    def _update(self, x, g):
        self.b.mul_(self.momentum).add_(g)
        x.addcmul_(self.b, -self.lr)  # = torch's fused add_(b, alpha=-lr)


class RMSprop(BatchedOptimizer):
    """torch.optim.RMSprop, ε = 1e-7::  v ← ρv + (1 − ρ)g²;  b ← μb + g/(√v + ε);  x ← x − lr·b.

    Op for op torch's single-tensor RMSprop: x ← x − lr·b is its fused `add_(b, alpha=-lr)`, and a lane
    with μ = 0 takes torch's other branch, x ← x + (−lr·g)/(√v + ε), rounded as torch rounds it.
    At a small ρ (Table 6's 0.049) RMSprop is chaotic on the bowl: a last-bit change in a gradient
    grows to 12 % of the loss within 3,000 steps, so it asks for `exact_gradients` as L2LBGDBGD does."""

    name = "RMSprop"
    _lane_state = ("v", "b")
    eps = 1e-7
    exact_gradients = True

    def __init__(self, x, hparams):
        super().__init__(x, hparams)
        self._plain_lanes()

    def _plain_lanes(self) -> None:
        plain = self.momentum == 0
        self._plain = plain if bool(plain.any()) else None

    def keep(self, index):
        super().keep(index)
        self._plain_lanes()

    def _update(self, x, g):
        self.v.mul_(self.rho).addcmul_(g, g * (1 - self.rho))
        avg = self.v.sqrt().add_(self.eps)
        self.b.mul_(self.momentum).addcdiv_(g, avg)
        if self._plain is None:
            x.addcmul_(self.b, -self.lr)
        else:
            x.copy_(torch.where(self._plain, x + (-self.lr * g) / avg, x.addcmul(self.b, -self.lr)))


class Yogi(BatchedOptimizer):
    """lodo/yogi.py::  m ← β1 m + (1 − β1) g;  v ← v − (1 − β2) sign(v − g²) g²;  x ← x − lr·m/(√v + 1e-3)."""

    name = "Yogi"
    _lane_state = ("m", "v")
    eps = 1e-3

    def _update(self, x, g):
        g2 = g * g
        self.m.mul_(self.beta1).addcmul_(g, 1 - self.beta1)  # = lodo/yogi.py's fused add_(g, alpha=1 − β1)
        self.v.addcmul_(torch.sign(self.v - g2).mul_(g2), -(1 - self.beta2))  # its sub_(·, alpha=1 − β2)
        x.sub_(self.lr * self.m / (self.v.sqrt() + self.eps))


class BatchedLODO(BatchedOptimizer):
    r"""LODO (lodo/lodo.py, docs/paper.md §1) for P lanes, each with its own θ, permutations and meta-Adam.

    Per lane, at the step() that sees g_{t+1} (the unbatched order)::

        h = −α0 (λ_i(p) a_i(m)ᵀ + λ_i(y) a_i(g)ᵀ)  per block,  p = G̃ ĝ, y = G̃ m̃   (hypergradient; 0 at t = 0)
        θ ← Adam_{meta_lr}(θ, h)  (β 0.9/0.999, ε 1e-7, bias-corrected)            (meta-step)
        m ← β m + (1 − β) g                                                        (momentum)
        x ← x − α0 [I 0] G̃ᵀ G̃ [I 0]ᵀ m,  G̃ = B(θ^(N)) P_N ⋯ B(θ^(1)) P_1           (step)

    Lane i's θ_0 and P_i are those of `lodo.create("LODO", ..., seed=seeds[i])` (read from its
    state_dict). The arithmetic is `lodo.lodo.BlockLanes` over P lanes, the same kernels `lodo.LODO`
    runs as one lane, so a lane takes that LODO's steps bit for bit.
    """

    name = "LODO"

    def __init__(self, x: torch.Tensor, hparams: dict[str, torch.Tensor], theta: torch.Tensor,
                 permutations: torch.Tensor, lanes: list[tuple[dict, int]]):
        """θ_0 (N, k, k, P, ñ/k) and the permutations (N, P, ñ) of the lanes (hyperparameters, seed)."""
        super().__init__(x, hparams)
        self.m = torch.zeros_like(x)
        self.lanes = BlockLanes(theta, torch.zeros_like(theta), torch.zeros_like(theta), permutations, x.shape[1])
        self.specs, self.references = list(lanes), [None] * len(lanes)  # `lane_preconditioner`'s LODOs, when asked

    def _update(self, x, g):
        if self.t > 1:  # at t = 1 m_0 = 0: a zero hypergradient, an Adam step that leaves θ as it is
            lanes = self.lanes
            lanes.learn(g, self.lr, lambda lo, hi, h: lanes.adam(lo, hi, h, self.meta_lr, self.t))
        self.m.lerp_(g, 1 - self.beta)
        x.sub_(self.lanes.direction(self.m, self.lr))

    def keep(self, index: torch.Tensor) -> None:
        super().keep(index)
        self.m = self.m[index]
        self.lanes = self.lanes.subset(index)
        self.specs = [self.specs[i] for i in index.tolist()]
        self.references = [self.references[i] for i in index.tolist()]

    _lane_columns = ("theta", "exp_avg", "exp_avg_sq")                            # lane axis 3
    _lane_vectors = ("inputs_m", "adjoints_y")  # lane axis 2; the hypergradient's a(g), λ(p) are work space

    def lane_state(self, row: int) -> dict:
        """t, m, θ and its meta-Adam moments, and the last step's a_i(m), λ_i(y) of lane `row`."""
        state = {**super().lane_state(row), "m": self.m[row].clone()}
        state.update({key: getattr(self.lanes, key)[:, :, :, row].clone() for key in self._lane_columns})
        state.update({key: getattr(self.lanes, key)[:, :, row].clone() for key in self._lane_vectors})
        return state

    def load_lane_state(self, row: int, state: dict) -> None:
        super().load_lane_state(row, state)
        self.m[row] = state["m"]
        for key in self._lane_columns:  # in place: the per-layer views of BlockLanes stay valid
            getattr(self.lanes, key)[:, :, :, row] = state[key]
        for key in self._lane_vectors:
            getattr(self.lanes, key)[:, :, row] = state[key]

    def lane_preconditioner(self, row: int):
        """Lane `row`'s G(θ)·v (v: (b, n)) at its current θ, for σ (`tasks.batched.BatchedNoisyBowl.
        hessian_error`): lane `row`'s θ loaded into an unbatched LODO built with its seed and
        hyperparameters (on the first call), whose `preconditioner` it returns. For the occasional σ."""
        if self.references[row] is None:
            hp, seed = self.specs[row]
            self.references[row] = lodo.create("LODO", [torch.zeros(self.m.shape[1], dtype=self.m.dtype)], seed=seed, **hp)
        reference = self.references[row]
        state = reference.state_dict()
        theta = self.lanes.theta[:, :, :, row].permute(0, 3, 1, 2)  # (N, ñ/k, k, k): the unbatched layout
        state["state"][0]["theta"] = theta.clone(memory_format=torch.contiguous_format)
        reference.load_state_dict(state)
        return reference.preconditioner


class LBFGS(BatchedOptimizer):
    """Stochastic L-BFGS without line search (lodo/lbfgs.py, docs/paper.md §2), two evaluations per iteration::

        g ← ∇f(x);  s ← −1e-10·g with no pair yet, else −η_t·B_t g  (two-loop, last `memory` pairs, η_t = lr·τ/(τ + t))
        x ← x + s;  y ← ∇f(x) − g  (same sample);  keep (s, y) if sᵀy > 0

    Each lane keeps its own pairs, newest last, in a (P, memory, n) window aligned at the newest
    slot; a lane with fewer pairs has zero slots (ρ = 0) at the old end, which the two-loop passes
    through unchanged, exactly as if it looped over that lane's pairs only.
    γ = sᵀy/yᵀy of the newest pair.

    The window slides along a buffer of 2·memory slots (a new pair goes in after the newest, the
    window moves one slot on; once per `memory` iterations it is copied back to the start), with
    each pair's sᵀy and yᵀy kept from when it came in: no per-iteration copy or product of the
    whole memory. The two-loop is dispatch-bound (≈ 10 small ops per pair), so it runs on views
    bound once per iteration and one scratch row; every number is the same product and sum as
    the plain form's (memory shifted and sᵀy recomputed every iteration), bit for bit
    (tests/test_batched_lbfgs.py; benchmarks/batched_baseline.py times the two).
    """

    name = "L-BFGS"
    first_step = 1e-10
    _buffers = ("_s", "_y", "_sy", "_yy")  # (P, 2·memory, ...) each: the pairs and their sᵀy, yᵀy

    def __init__(self, x: torch.Tensor, hparams: dict[str, torch.Tensor], memory: int = 48):
        super().__init__(x, hparams)
        lanes, n = x.shape
        self.memory, self.start = int(memory), 0  # the window is slots [start, start + memory) of the buffers
        self._s, self._y = x.new_zeros(lanes, 2 * self.memory, n), x.new_zeros(lanes, 2 * self.memory, n)
        self._sy, self._yy = x.new_zeros(lanes, 2 * self.memory), x.new_zeros(lanes, 2 * self.memory)
        self.count = torch.zeros(lanes, dtype=torch.int64, device=x.device)

    def _window(self, key: str) -> torch.Tensor:
        return getattr(self, key)[:, self.start : self.start + self.memory]

    @property
    def s_mem(self) -> torch.Tensor:
        """(P, memory, n): each lane's s pairs, oldest first, zero slots before its first pair."""
        return self._window("_s")

    @property
    def y_mem(self) -> torch.Tensor:
        return self._window("_y")

    def step(self, x, closure):
        loss, g = closure()
        sy, yy, memory = self._window("_sy"), self._window("_yy"), self.memory
        valid = torch.arange(memory, device=x.device) >= memory - self.count.view(-1, 1)
        rho = torch.where(valid, 1.0 / sy, 0.0)
        gamma = self.initial_scaling(sy, yy, valid).view(-1, 1)
        eta = self.lr * self.tau / (self.tau + self.t)
        s = torch.where(self.count.view(-1, 1) == 0, -self.first_step * g, -eta * self._two_loop(g, rho, gamma))
        x.add_(s)
        _, g_new = closure()
        y = g_new - g
        self._push(s, y, (s * y).sum(-1))
        self.t += 1
        return loss

    def _push(self, s, y, sy):
        """Append (s, y) to every lane whose sᵀy > 0; the other lanes keep their pairs as they were."""
        accept, new = sy > 0, self.start + self.memory
        self._s[:, new], self._y[:, new], self._sy[:, new], self._yy[:, new] = s, y, sy, (y * y).sum(-1)
        old = slice(self.start, new)
        self.start += 1
        if not bool(accept.all()):  # a rejecting lane's window moves with the others: shift its pairs along
            lanes = (~accept).nonzero().view(-1)
            for key in self._buffers:
                buffer = getattr(self, key)
                buffer[lanes, self.start : new + 1] = buffer[lanes, old]
        if self.start == self.memory:
            for key in self._buffers:
                buffer = getattr(self, key)
                buffer[:, : self.memory] = buffer[:, self.memory :]
            self.start = 0
        self.count = torch.clamp(self.count + accept, max=self.memory)

    def initial_scaling(self, sy, yy, valid):
        return torch.where(valid[:, -1], sy[:, -1] / yy[:, -1], 1.0)

    def _two_loop(self, g, rho, gamma):
        """B·g: q ← g; newest→oldest αᵢ = ρᵢ sᵢᵀq, q ← q − αᵢ yᵢ; r ← γq; oldest→newest βᵢ = ρᵢ yᵢᵀr, r ← r + (αᵢ − βᵢ) sᵢ."""
        S, Y, R = self.s_mem.unbind(1), self.y_mem.unbind(1), rho.unsqueeze(-1).unbind(1)
        q, scratch = g.clone(), torch.empty_like(g)
        alpha = [None] * self.memory
        for i in reversed(range(self.memory)):
            alpha[i] = R[i] * torch.mul(S[i], q, out=scratch).sum(-1, keepdim=True)
            q.sub_(torch.mul(alpha[i], Y[i], out=scratch))
        r = gamma * q
        for i in range(self.memory):
            beta = R[i] * torch.mul(Y[i], r, out=scratch).sum(-1, keepdim=True)
            r.add_(torch.mul(alpha[i] - beta, S[i], out=scratch))
        return r

    def keep(self, index):
        super().keep(index)
        for key in self._buffers + ("count",):
            setattr(self, key, getattr(self, key)[index])

    def lane_state(self, row: int) -> dict:
        """t and lane `row`'s (s, y) pairs with their count."""
        return {**super().lane_state(row), "s_mem": self.s_mem[row].clone(), "y_mem": self.y_mem[row].clone(),
                "count": self.count[row].clone()}

    def load_lane_state(self, row: int, state: dict) -> None:
        super().load_lane_state(row, state)
        self.s_mem[row], self.y_mem[row], self.count[row] = state["s_mem"], state["y_mem"], state["count"]
        self._window("_sy")[row] = (self.s_mem[row] * self.y_mem[row]).sum(-1)
        self._window("_yy")[row] = (self.y_mem[row] * self.y_mem[row]).sum(-1)


class OLBFGS(LBFGS):
    """O-LBFGS: L-BFGS with γ = the mean of sᵢᵀyᵢ/yᵢᵀyᵢ over the lane's pairs."""

    name = "O-LBFGS"

    def initial_scaling(self, sy, yy, valid):
        """Per lane, the mean over its own pairs' slots (a contiguous slice: the unbatched reduction, bit
        for bit; a masked sum over all slots rounds differently, which Rosenbrock amplifies to 1e-4)."""
        ratio, memory = sy / yy, sy.shape[1]
        if bool((self.count == memory).all()):  # every memory full (after the first `memory` pairs): one row-wise mean
            return ratio.mean(-1)
        return torch.stack([ratio[lane, memory - c:].mean() if c else ratio.new_ones(())
                            for lane, c in enumerate(self.count.tolist())])


class L2LBGDBGD(BatchedOptimizer):
    """L2LBGDBGD (lodo/l2l.py): the meta-trained coordinate-wise LSTM, one call over all P·n coordinates::

        (u, h) ← m_φ(ρ(g), h) for every coordinate of every lane;  x ← x + u

    The LSTM is coordinate-wise, so lane i's rows of that call are lane i's own unbatched call,
    bit for bit (matrix products row by row, the rest elementwise: tests/test_batched_l2l.py checks
    it over thousands of steps). That matters: on the bowl L2LBGDBGD is chaotic (a 1e-16 change in
    a gradient grows to 1e-2 in the loss within 200 steps), so it asks its task for gradients
    computed exactly as the unbatched autograd computes them (`exact_gradients`)."""

    name = "L2LBGDBGD"
    exact_gradients = True

    def __init__(self, x: torch.Tensor, hparams: dict[str, torch.Tensor], net):
        super().__init__(x, hparams)
        self.net = net  # m_φ in x's dtype, as the unbatched optimizer casts it (`L2LBGDBGD._net_for`)
        self.n = x.shape[1]
        self.h, self.c = net.initial_state(x.numel(), dtype=x.dtype, device=x.device)

    def _update(self, x, g):
        update, (self.h, self.c) = self.net(g.reshape(-1), (self.h, self.c))
        x.add_(update.view_as(x))

    def keep(self, index: torch.Tensor) -> None:
        super().keep(index)
        layers, coordinates, hidden = self.h.shape
        lanes = coordinates // self.n
        for key in ("h", "c"):
            kept = getattr(self, key).view(layers, lanes, self.n, hidden)[:, index]
            setattr(self, key, kept.reshape(layers, -1, hidden))

    def _lanes_view(self, key: str) -> torch.Tensor:
        layers, coordinates, hidden = getattr(self, key).shape
        return getattr(self, key).view(layers, coordinates // self.n, self.n, hidden)

    def lane_state(self, row: int) -> dict:
        """t and the LSTM state (h, c) of lane `row`'s coordinates."""
        return {**super().lane_state(row), **{key: self._lanes_view(key)[:, row].clone() for key in ("h", "c")}}

    def load_lane_state(self, row: int, state: dict) -> None:
        super().load_lane_state(row, state)
        for key in ("h", "c"):
            self._lanes_view(key)[:, row] = state[key]


_OPTIMIZERS = {cls.name: cls for cls in (Adam, Momentum, RMSprop, Yogi, BatchedLODO, LBFGS, OLBFGS, L2LBGDBGD)}


def available() -> list[str]:
    """The optimizers with a batched form (L2LBGDBGD only where the registry has it)."""
    return [name for name in _OPTIMIZERS if name != "L2LBGDBGD" or name in lodo.available()]


def exact_gradients(name: str) -> bool:
    """Whether batched optimizer `name` needs each lane's gradient exactly as the unbatched autograd
    computes it (`tasks.batched.BatchedTask.exact_gradients`), not just equal to rounding."""
    return getattr(_OPTIMIZERS.get(name), "exact_gradients", False)


def create(name: str, x: torch.Tensor, hparams_list: list[dict], seeds: list[int]) -> BatchedOptimizer:
    """Batched optimizer `name` over x (P, n): lane i has hyperparameters hparams_list[i] (registry
    defaults for the rest) and seed seeds[i]. Each lane's values are checked by building the
    unbatched `lodo.create(name, ...)` for it, so errors are the registry's own."""
    if name not in _OPTIMIZERS:
        raise ValueError(f"Invalid optimizer: {name!r} (batched: {', '.join(_OPTIMIZERS)})")
    if len(hparams_list) != x.shape[0] or len(seeds) != x.shape[0]:
        raise ValueError(f"Invalid hparams_list: {len(hparams_list)} entries and {len(seeds)} seeds "
                         f"(must be one of each per lane, {x.shape[0]})")
    tunable = [h.name for h in lodo.hyperparameters(name)]
    options = [{k: v for k, v in hp.items() if k not in tunable} for hp in hparams_list]
    if any(o != options[0] for o in options):
        raise ValueError(f"Invalid hparams_list: options {options[0]!r} and {next(o for o in options if o != options[0])!r} "
                         "differ between lanes (a batch shares them)")
    dummy = torch.zeros(x.shape[1] if name == "LODO" else 1, dtype=x.dtype)
    if name == "LODO":  # a lane at a time, its θ_0 and permutations read from its state: not P optimizers at once
        built, theta, perm = [], None, None
        for lane, (hp, seed) in enumerate(zip(hparams_list, seeds)):
            state = lodo.create(name, [dummy.clone()], seed=seed, **hp).state_dict()["state"][0]
            if theta is None:
                depth, nb, k, _ = state["theta"].shape
                theta = x.new_empty(depth, k, k, len(seeds), nb)
                perm = torch.empty(depth, len(seeds), nb * k, dtype=state["permutations"].dtype, device=x.device)
            theta[:, :, :, lane] = state["theta"].permute(0, 2, 3, 1)
            perm[:, lane] = state["permutations"]
        del state  # the last lane's optimizer state, before the batch's own is allocated
    else:
        built = [lodo.create(name, [dummy.clone()], seed=seed, **hp) for hp, seed in zip(hparams_list, seeds)]
    defaults = {h.name: h.default for h in lodo.hyperparameters(name)}
    columns = {key: torch.tensor([float(hp.get(key, default)) for hp in hparams_list], dtype=torch.float64)
               for key, default in defaults.items()}
    if name == "L2LBGDBGD":
        return L2LBGDBGD(x, columns, built[0]._net_for(x.dtype, x.device))
    if name == "LODO":
        return BatchedLODO(x, columns, theta, perm, list(zip(hparams_list, seeds)))
    return _OPTIMIZERS[name](x, columns, **options[0])
