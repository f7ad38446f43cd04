"""The Rosenbrock task (docs/paper.md §3, paper §5.2 and App. G).

    f(x, y) = 0.01 (x − 1)² + (x² − y)²,    start (x, y) = (−0.5, 2),    minimum f(1, 1) = 0

No noise: `sample()` returns None. 200 steps; the reported loss is the mean over steps 180–200.
"""
from __future__ import annotations

import torch

from tasks.base import Task

START = (-0.5, 2.0)
MINIMUM = (1.0, 1.0)


def rosenbrock(x, y):
    """f(x, y) = 0.01 (x − 1)² + (x² − y)², elementwise on tensors or arrays."""
    return 0.01 * (x - 1.0) ** 2 + (x * x - y) ** 2


class Rosenbrock(Task):
    """A deterministic 2-D valley; the one parameter is the point (x, y), float64.

    `report_window = (180, 200)` is a half-open range of 0-based evaluation indices: the paper's
    "steps 180–200" of a 200-step run are evaluations 180, 181, ..., 199, i.e. the 1-based steps
    181..200 — the run's last 10 %, so the window agrees with the reported metric everywhere else.
    `tuner.trial.loop.run_trial` averages over this window whenever the run recorded all of it.
    """

    name = "rosenbrock"
    report_window = (180, 200)

    @staticmethod
    def memory_footprint(**_) -> dict:
        """Two float64 numbers and nothing else, for Ray's placement."""
        return {"parameters": 2, "itemsize": 8, "bytes": 0}

    def __init__(self, seed: int = 0, device="cpu"):
        super().__init__(seed=seed, device=device, dtype=torch.float64)
        self.xy = torch.tensor(START, dtype=self.dtype, device=self.device, requires_grad=True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.xy]

    def sample(self) -> None:
        return None

    def loss(self, batch=None) -> torch.Tensor:
        """f(x, y) = 0.01 (x − 1)² + (x² − y)²."""
        return rosenbrock(self.xy[0], self.xy[1])

    def state_dict(self) -> dict:
        return {"xy": self.xy.detach().clone()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.xy.copy_(state["xy"])
