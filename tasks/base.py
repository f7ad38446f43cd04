"""The task interface: a task owns its parameters, its randomness, its data and its loss.

Optimizers never know which task they run on, and tasks never import an optimizer.
"""
from __future__ import annotations

import abc

import torch


class Task(abc.ABC):
    """A benchmark problem (docs/paper.md §3) or the user's own (docs/tasks.md).

    Protocol, once per optimizer step::

        batch = task.sample()          # next noise sample / minibatch; advances the task's RNG
        loss = task.loss(batch)        # any number of evaluations on that same batch, same function

    Guarantees the tuner relies on: one `sample()` per optimizer step; every `loss(batch)` of a
    step sees the same function; the initial parameters and all batches follow from `seed` alone
    (generators the task owns, not torch's global RNG); after `load_state_dict(state_dict())` the
    task continues bit-identically. `tasks.supervised.SupervisedTask` provides all of this.
    """

    name: str = "task"

    def __init__(self, seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        self.seed = int(seed)
        self.device = torch.device(device)
        self.dtype = dtype

    @abc.abstractmethod
    def parameters(self) -> list[torch.Tensor]:
        """The leaf tensors to optimise (requires_grad), initialised from the seed."""

    @abc.abstractmethod
    def sample(self):
        """Draw the next noise sample or minibatch."""

    @abc.abstractmethod
    def loss(self, batch) -> torch.Tensor:
        """Scalar training loss at the current parameters on `batch`."""

    def param_groups(self) -> list[dict] | None:
        """Optional: torch's parameter groups over `parameters()` (each exactly once), e.g.
        [{"params": weights}, {"params": biases_and_norms, "weight_decay": 0.0}]; a group without a
        setting takes the optimizer's (tuned) value. None (default): one group of `parameters()`."""
        return None

    def evaluate(self) -> dict[str, float]:
        """Held-out metrics (validation loss, test accuracy); empty for tasks without held-out data."""
        return {}

    def info(self) -> dict[str, float]:
        """Constants worth reporting next to the results (e.g. the noisy bowl's Newton loss)."""
        return {}

    @abc.abstractmethod
    def state_dict(self) -> dict:
        """Everything needed to continue bit-identically: parameters, RNG state, data position."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""


class ModelTask(Task):
    """A task whose parameters are those of an `nn.Module` (`self.model`, buffers such as
    BatchNorm statistics included in its state) and whose randomness is one device generator
    (`self.generator`), its training images `self.train_images`: the image tasks."""

    def parameters(self) -> list[torch.Tensor]:
        return list(self.model.parameters())

    def info(self) -> dict[str, float]:
        return {
            "num_parameters": float(sum(p.numel() for p in self.model.parameters())),
            "num_train": float(self.train_images.shape[0]),
        }

    def state_dict(self) -> dict:
        return {
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.generator.set_state(state["generator"].cpu())
