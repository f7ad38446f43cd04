"""The noisy quadratic bowl (docs/paper.md §3, paper §5.1 and App. F.1).

    H = U D Uᵀ,   U uniformly random orthogonal,   D = geometric sequence from 0.001 to 1
    c_0 = 0,      c_{t+1} = c_t + ε_t,   ε_t ~ N(0, v·I)        (a random walk; one move per sample())
    f(x) = ½ (x − c)ᵀ H (x − c),   x_0 = 0

The ideal tracker (Newton) jumps to c_t every step and then pays E[½ εᵀHε] = ½·v·tr(H) per step
(7.412 for v = 1, n = 100): `info()["newton_loss"]`.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from tasks.base import Task


def derived_seed(seed: int, stream: int) -> int:
    """A 63-bit seed for one named random stream of a task, independent of the other streams."""
    state = np.random.SeedSequence([int(seed) % 2**64, int(stream)]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


_SETUP_STREAM, _NOISE_STREAM = 0, 1


def random_orthogonal(n: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """A Haar-uniform orthogonal matrix: QR of a Gaussian, with the columns' signs fixed by diag(R)."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=dtype))
    return q * torch.sign(torch.diagonal(r))


class NoisyBowl(Task):
    """A quadratic bowl whose centre does a Gaussian random walk, one move per `sample()`.

    `sample()` moves the centre and returns it; every `loss(batch)` on that batch sees the same
    centre, so a second evaluation inside one optimizer step (L-BFGS's y) does not move it.
    All randomness comes from private generators seeded from `seed`: the setup stream draws U and
    the probe vectors of `hessian_error`, the noise stream draws the random walk.
    """

    name = "noisy_bowl"

    @staticmethod
    def memory_footprint(dim: int = 100, **_) -> dict:
        """What a trial holds besides parameters and optimizer (H, U, the probe vectors), for Ray's placement."""
        return {"parameters": dim, "itemsize": 8, "bytes": 8 * (6 * dim * dim + 110 * dim)}

    def __init__(self, seed: int = 0, noise_variance: float = 1.0, dim: int = 100, device="cpu"):
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
            raise ValueError(f"Invalid dim: {dim!r} (must be an integer >= 1)")
        if not math.isfinite(noise_variance) or noise_variance < 0:
            raise ValueError(f"Invalid noise_variance: {noise_variance!r} (must be finite and >= 0)")
        super().__init__(seed=seed, device=device, dtype=torch.float64)
        self.dim = int(dim)
        self.noise_variance = float(noise_variance)
        self._noise_std = math.sqrt(self.noise_variance)

        # Setup on the CPU so a seed gives the same bowl on every device.
        self._setup_generator = torch.Generator().manual_seed(derived_seed(self.seed, _SETUP_STREAM))
        self.eigenvalues = torch.logspace(-3.0, 0.0, dim, dtype=torch.float64)  # D: 0.001 ... 1
        self.eigenvectors = random_orthogonal(dim, self._setup_generator)       # U
        hessian = (self.eigenvectors * self.eigenvalues) @ self.eigenvectors.T  # U D Uᵀ
        self.hessian = (0.5 * (hessian + hessian.T)).to(self.device)            # exactly symmetric
        self.eigenvalues, self.eigenvectors = self.eigenvalues.to(self.device), self.eigenvectors.to(self.device)
        self._half_hessian = 0.5 * self.hessian  # ½ is exact in floating point: one op less per loss
        self._probes: dict[int, torch.Tensor] = {}
        self.probes(100)  # the default probe set comes right after U in the setup stream

        self._noise_generator = torch.Generator(device=self.device)
        self._noise_generator.manual_seed(derived_seed(self.seed, _NOISE_STREAM))
        self._step = torch.zeros(dim, dtype=self.dtype, device=self.device)  # buffer for ε_t
        self.centre = torch.zeros(dim, dtype=self.dtype, device=self.device)
        self.x = torch.zeros(dim, dtype=self.dtype, device=self.device, requires_grad=True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.x]

    def sample(self) -> torch.Tensor:
        """c ← c + ε, ε ~ N(0, v·I); returns the new centre (a fresh tensor, never mutated later)."""
        self._step.normal_(0.0, self._noise_std, generator=self._noise_generator)
        self.centre = self.centre + self._step
        return self.centre

    def loss(self, batch: torch.Tensor | None = None) -> torch.Tensor:
        """½ dᵀ(H d) = dᵀ(½H) d, d = x − c; `batch` is the centre from `sample()` (default: the current one)."""
        d = self.x - (self.centre if batch is None else batch)
        return torch.dot(d, torch.mv(self._half_hessian, d))

    def info(self) -> dict[str, float]:
        """newton_loss = ½·v·tr(H): the expected loss of the ideal tracker (docs/paper.md §3)."""
        return {"newton_loss": 0.5 * self.noise_variance * float(self.eigenvalues.sum())}

    def probes(self, num_probes: int) -> torch.Tensor:
        """A fixed set of `num_probes` random unit vectors (rows), drawn once from the seed's setup stream."""
        if num_probes not in self._probes:
            generator = self._setup_generator
            if self._probes:  # sets other than the first get their own stream, so order never matters
                generator = torch.Generator().manual_seed(derived_seed(self.seed, 1000 + num_probes))
            v = torch.randn(num_probes, self.dim, generator=generator, dtype=torch.float64)
            self._probes[num_probes] = (v / v.norm(dim=1, keepdim=True)).to(self.device)
        return self._probes[num_probes]

    @torch.no_grad()
    def hessian_error(self, preconditioner, num_probes: int = 100) -> float:
        """σ = sqrt(‖I − G H‖_F² / n) (docs/paper.md §1.2), estimated as sqrt(mean_i ‖(I − G H) v_i‖²).

        For v uniform on the unit sphere E‖A v‖² = ‖A‖_F²/n, so the mean over the fixed probes
        v_1..v_m is an unbiased estimate of σ². `preconditioner` maps a batch (b, n) to G·v.
        σ = 1 for G = 0 and σ = 0 for G = H⁻¹.
        """
        if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
            raise ValueError(f"Invalid num_probes: {num_probes!r} (must be an integer >= 1)")
        v = self.probes(num_probes)
        hv = v @ self.hessian  # rows (H v_i)ᵀ, H symmetric
        ghv = preconditioner(hv).to(dtype=v.dtype, device=v.device)
        residual = v - ghv
        return math.sqrt(float(residual.pow(2).sum(dim=1).mean()))

    def state_dict(self) -> dict:
        return {
            "x": self.x.detach().clone(),
            "centre": self.centre.clone(),
            "noise_rng": self._noise_generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.x.copy_(state["x"])
        self.centre = state["centre"].to(dtype=self.dtype, device=self.device).clone()
        self._noise_generator.set_state(state["noise_rng"])
