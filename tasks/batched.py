"""Population-batched tasks: P lanes of one task as one set of (P, n) tensors (issue 15).

Lane i is exactly the unbatched task built from seed i with the same options: each lane's bowl
(H_i = U_i D U_iᵀ) and noise generator are taken from `NoisyBowl(seed_i, ...)` itself (its
`hessian` and its `state_dict()["noise_rng"]`), and ε_t of lane i is drawn by lane i's own
generator into row i, one `normal_` per lane per step. That is the unbatched task's exact
stream (a single draw for all lanes or a chunk of steps would not be: torch's normal_ fills
blocks of 16 and redraws the tail, so a draw's numbers depend on its size); the P draws per step
are the price, ~1-2 µs each on a CPU.

Gradients are closed form (the bowl: g = H d as one batched dᵀH; Rosenbrock: its two partials):
~10× cheaper than autograd of the summed loss (P = 32, n = 100: 58 vs 567 µs per evaluation) and
equal to the unbatched autograd gradient to rounding (Rosenbrock: bit for bit). L-BFGS's first
pair, y = ∇f(x − 1e-10·g) − ∇f(x), magnifies the bowl's last-bit differences to ~1e-7 relative in
its losses: still well inside the 1e-5 that tests/test_population.py asks for.
An optimizer that is chaotic in its gradients (L2LBGDBGD; RMSprop at a small ρ) sets
`exact_gradients`: the bowl then computes each lane's loss and gradient as the unbatched loss and
its autograd backward do, bit for bit (two bmm instead of one, and a dot per lane).

Protocol, like `tasks.base.Task`: `sample()` once per optimizer step, then any number of
`loss_and_grad()` on that sample. `keep(index)` drops lanes (diverged ones), so the work left is
that of the lanes still running.
"""
from __future__ import annotations

import math

import torch

import tasks
from tasks.noisy_bowl import NoisyBowl
from tasks.rosenbrock import START, Rosenbrock


class BatchedTask:
    """P lanes of one task; `x` is the (P, n) parameter tensor, row i lane i's parameters."""

    name = "task"
    report_window = None
    #: set for an optimizer that is chaotic in its gradients (`lodo.batched.exact_gradients`): each
    #: lane's gradient (and loss) then comes out bit for bit as the unbatched task's autograd gives it
    exact_gradients = False

    def __init__(self, seeds: list[int], device="cpu"):
        if len(seeds) < 1:
            raise ValueError(f"Invalid seeds: {seeds!r} (must name at least one lane)")
        self.seeds = [int(s) for s in seeds]
        self.device = torch.device(device)
        self.dtype = torch.float64

    @property
    def lanes(self) -> int:
        return self.x.shape[0]

    def sample(self) -> None:
        """Draw the next noise sample of every lane."""

    def loss_and_grad(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every lane's loss (P,) and gradient (P, n) at the current x, on the current sample."""
        raise NotImplementedError

    def keep(self, index: torch.Tensor) -> None:
        """Keep only lanes `index` (a 1-D index into the current lanes), in that order."""
        raise NotImplementedError

    def lane_state(self, row: int) -> dict:
        """Lane `row`'s state (copies, tensors only): `load_lane_state` into a batch built from the same
        seed and options continues that lane bit for bit (tuner.trial.loop's per-lane checkpoints)."""
        return {"x": self.x[row].clone()}

    def load_lane_state(self, row: int, state: dict) -> None:
        """Set lane `row` to a `lane_state` (in place: the optimizer steps this very x)."""
        self.x[row] = state["x"].to(self.x)


class BatchedNoisyBowl(BatchedTask):
    """P noisy bowls (tasks/noisy_bowl.py), lane i = `NoisyBowl(seeds[i], noise_variance, dim)`::

        c_i ← c_i + ε_i,  ε_i ~ N(0, v·I) from lane i's generator
        f_i(x_i) = ½ d_iᵀ H_i d_i,  ∇f_i = H_i d_i,  d_i = x_i − c_i
    """

    name = "noisy_bowl"

    def __init__(self, seeds: list[int], noise_variance: float = 1.0, dim: int = 100, device="cpu"):
        super().__init__(seeds, device)
        bowls = [NoisyBowl(seed=s, noise_variance=noise_variance, dim=dim, device=device) for s in self.seeds]
        self.dim = bowls[0].dim
        self.hessian = torch.stack([b.hessian for b in bowls])  # (P, n, n)
        self.generators = []
        for bowl in bowls:
            generator = torch.Generator(device=self.device)
            generator.set_state(bowl.state_dict()["noise_rng"])
            self.generators.append(generator)
        self._noise_std = math.sqrt(float(noise_variance))
        self.newton_loss = [b.info()["newton_loss"] for b in bowls]
        self.bowls = bowls  # lane i's unbatched bowl: its fixed probes for `hessian_error`
        self.half_hessians = [b._half_hessian for b in bowls]  # ½H_i exactly as lane i's `loss` uses it
        self._set_noise(torch.zeros(len(bowls), self.dim, dtype=self.dtype, device=self.device))
        self.centre = torch.zeros_like(self._noise)
        self.x = torch.zeros_like(self._noise)
        self._batched_products_exact = None  # whether the BLAS batches `_autograd_loss_and_grad` exactly

    def _set_noise(self, noise: torch.Tensor) -> None:
        """The noise buffer and its row views, made once: iterating a tensor makes P views per step,
        ~1.6 µs each, as much as a step of Adam's update at P = 32."""
        self._noise, self._noise_rows = noise, list(noise.unbind(0))

    def sample(self) -> None:
        """c_i ← c_i + ε_i for every lane; lane i draws ε_i with its own generator into row i."""
        std = self._noise_std
        for row, generator in zip(self._noise_rows, self.generators):
            row.normal_(0.0, std, generator=generator)
        self.centre.add_(self._noise)

    def loss_and_grad(self) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.x - self.centre
        if self.exact_gradients:
            return self._autograd_loss_and_grad(d)
        grad = torch.bmm(d.unsqueeze(1), self.hessian).squeeze(1)  # d_iᵀ H_i = (H_i d_i)ᵀ, H_i exactly symmetric
        return 0.5 * (d * grad).sum(dim=1), grad

    def _autograd_loss_and_grad(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per lane, what `NoisyBowl.loss` and its backward compute, A = ½H: f = d·w, w = A d, and
        autograd's ∇f = w (from the dot) + Aᵀd (from the mv, `A.t().mv(d)`), summed; equal to H d
        only to rounding. The two products are batched: the BLAS row-times-matrix d_iᵀ·A_iᵀ (a
        transposed view) rounds as mv(A_i, d_i) and d_iᵀ·A_i as mv(A_iᵀ, d_i), on the MKL builds
        measured (P = 1–128, n = 2–1,000), and ½ scales exactly, so both are ½ of a bmm with H.
        That is checked on the first call against the per-lane ops; where the BLAS rounds
        otherwise, the per-lane loop stays (2–4× slower from P = 8 on). The loss stays a per-lane
        dot: no batched reduction rounds as the BLAS dot does."""
        if self._batched_products_exact is None:  # the first call: both forms, the check, and its answer
            batched, looped = self._batched_products(d), self._looped_products(d)
            self._batched_products_exact = all(torch.equal(b, l) for b, l in zip(batched, looped))
            w, aTd = looped
        else:
            w, aTd = self._batched_products(d) if self._batched_products_exact else self._looped_products(d)
        loss = torch.stack([torch.dot(d_i, w_i) for d_i, w_i in zip(d, w)]) if len(d) else d.new_empty(0)
        return loss, w.add_(aTd)

    def _batched_products(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = d.unsqueeze(1)
        w = torch.bmm(rows, self.hessian.transpose(1, 2)).squeeze(1).mul_(0.5)  # = mv(A_i, d_i)
        return w, torch.bmm(rows, self.hessian).squeeze(1).mul_(0.5)  # = mv(A_iᵀ, d_i)

    def _looped_products(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w, aTd = torch.empty_like(d), torch.empty_like(d)
        for row, (half_hessian, d_i) in enumerate(zip(self.half_hessians, d)):
            torch.mv(half_hessian, d_i, out=w[row])
            torch.mv(half_hessian.t(), d_i, out=aTd[row])
        return w, aTd

    def keep(self, index: torch.Tensor) -> None:
        self.hessian, self.centre, self.x = self.hessian[index], self.centre[index], self.x[index]
        self._set_noise(self._noise[index])
        self.generators = [self.generators[i] for i in index.tolist()]
        self.newton_loss = [self.newton_loss[i] for i in index.tolist()]
        self.bowls = [self.bowls[i] for i in index.tolist()]
        self.half_hessians = [self.half_hessians[i] for i in index.tolist()]

    def lane_state(self, row: int) -> dict:
        """x, the drifted centre c and the noise generator's position of lane `row`."""
        return {**super().lane_state(row), "centre": self.centre[row].clone(),
                "noise_rng": self.generators[row].get_state()}

    def load_lane_state(self, row: int, state: dict) -> None:
        super().load_lane_state(row, state)
        self.centre[row] = state["centre"].to(self.centre)
        self.generators[row].set_state(state["noise_rng"])

    def hessian_error(self, row: int, preconditioner) -> float:
        """σ of lane `row` (`NoisyBowl.hessian_error`, on that lane's own fixed probes)."""
        return self.bowls[row].hessian_error(preconditioner)


class BatchedRosenbrock(BatchedTask):
    """P copies of the Rosenbrock valley (tasks/rosenbrock.py), each started at (−0.5, 2)::

        f = 0.01 (x − 1)² + (x² − y)²,  ∂f/∂x = 0.02 (x − 1) + 4x (x² − y),  ∂f/∂y = −2 (x² − y)
    """

    name = "rosenbrock"
    report_window = Rosenbrock.report_window

    def __init__(self, seeds: list[int], device="cpu"):
        super().__init__(seeds, device)
        self.x = torch.tensor([START] * len(self.seeds), dtype=self.dtype, device=self.device)

    def loss_and_grad(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.x[:, 0], self.x[:, 1]
        r = x * x - y
        loss = 0.01 * (x - 1.0) ** 2 + r * r
        grad = torch.stack([0.02 * (x - 1.0) + 4.0 * x * r, -2.0 * r], dim=1)
        return loss, grad

    def keep(self, index: torch.Tensor) -> None:
        self.x = self.x[index]


_TASKS = {"noisy_bowl": BatchedNoisyBowl, "rosenbrock": BatchedRosenbrock}


def available() -> list[str]:
    """The tasks with a batched form."""
    return list(_TASKS)


def create(name: str, seeds: list[int], device="cpu", **options) -> BatchedTask:
    """Batched task `name` with one lane per seed; `options` as for `tasks.create(name, ...)`."""
    if name not in _TASKS:
        raise ValueError(f"Invalid task: {name!r} (batched: {', '.join(_TASKS)})")
    valid = tasks.options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"Unknown option for task {name!r}: {', '.join(unknown)} (valid: {', '.join(valid) or 'none'})")
    return _TASKS[name](seeds, device=device, **options)
