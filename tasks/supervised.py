"""A ready `Task` from a model, a batch sampler and a loss: the short way to tune on your own model.

    SupervisedTask(model=lambda: nn.Sequential(...), loss=F.cross_entropy,
                   data=(inputs, targets), batch_size=32, validation=(val_inputs, val_targets),
                   held_out=(test_inputs, test_targets), seed=seed, device=device, name="digits")

The validation split is what a schedule's `objective` selects on (`val_loss`, `val_accuracy`); the
test split (`held_out`: `test_loss`, `test_accuracy`) is only reported, after each full run:
a value chosen by its score on a split is no longer an unbiased estimate on that split.

Every random number comes from the seed (docs/tasks.md): the model is built under
`torch.random.fork_rng` seeded from it, on the CPU, so a seed gives the same initial weights on
every worker and device; batches come from a CPU `torch.Generator` the task owns; the forward
pass of each batch runs under a seed drawn with that batch, so dropout and other random layers
are the same on every evaluation of a step and after a resume. The state (`state_dict`) is the
model's weights and buffers plus the generator's state, so a resumed run is bit-identical.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from tasks.base import ModelTask
from tasks.noisy_bowl import derived_seed

_INIT_STREAM, _DATA_STREAM = 0, 1


class Batch(NamedTuple):
    """One step's batch: model inputs, targets, and the seed of the forward pass's random layers."""

    inputs: Any
    targets: Any
    seed: int


def _pair(name: str, value) -> tuple[torch.Tensor, torch.Tensor]:
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, torch.Tensor) for v in value) or len(value[0]) != len(value[1])
            or len(value[0]) == 0):
        raise ValueError(f"Invalid {name}: {type(value).__name__} (must be a pair (inputs, targets) of "
                         f"tensors with the same non-zero first dimension)")
    return value[0], value[1]


class SupervisedTask(ModelTask):
    """Minimise `loss(model(inputs), targets)` over batches drawn by the task's own generator.

    model: a function () -> nn.Module (called once, under the seed: pass the builder, not a module).
    loss: (outputs, targets) -> scalar tensor, e.g. `torch.nn.functional.cross_entropy`.
    data + batch_size: training tensors (inputs, targets); each `sample()` draws `batch_size`
        rows uniformly with replacement. Or instead
    sample: a function (generator) -> (inputs, targets) drawing every random number it needs
        from `generator` (a CPU torch.Generator) and keeping no other state.
    validation: optional (inputs, targets); `evaluate()` -> {"val_loss"} (+ "val_accuracy" when the
        targets are class indices): what `objective: {metric: val_accuracy, mode: max}` selects on.
    held_out: optional (inputs, targets), the test split; `evaluate()` -> {"test_loss"} (+
        "test_accuracy"), reported after each full run, never for selection. Both in eval mode, in
        chunks of `eval_batch_size`.
    name: the display name of the instance (tables use the spec's name, see docs/tasks.md).
    no_weight_decay: optional name patterns of `model.named_parameters()` ("*.bias", "*norm*",
        fnmatch) or a function (name, parameter) -> True, for parameters that get no weight decay:
        `param_groups()` puts them in a group with weight_decay 0 (a tuned weight decay applies
        to the other group only).
    """

    def __init__(self, model: Callable[[], nn.Module], loss: Callable, data=None, *, batch_size: int | None = None,
                 sample: Callable | None = None, held_out=None, seed: int = 0, device="cpu",
                 name: str | None = None, eval_batch_size: int = 1024, validation=None,
                 no_weight_decay=None):
        if isinstance(model, nn.Module) or not callable(model):
            raise ValueError(f"Invalid model: {type(model).__name__} (must be a function that builds the "
                             f"nn.Module, so that the seed decides its initialisation)")
        if not callable(loss):
            raise ValueError(f"Invalid loss: {type(loss).__name__} (must be a function (outputs, targets) -> loss)")
        if (data is None) == (sample is None):
            raise ValueError("Invalid data/sample: give exactly one (training tensors with batch_size, "
                             "or a function generator -> (inputs, targets))")
        if sample is not None and not callable(sample):
            raise ValueError(f"Invalid sample: {type(sample).__name__} (must be a function generator -> (inputs, targets))")
        for field, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is None and field == "batch_size" and data is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Invalid {field}: {value!r} (must be an integer >= 1)")
        super().__init__(seed=seed, device=device)
        if name is not None:
            self.name = str(name)
        self.loss_fn, self.sample_fn = loss, sample
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        if data is not None:
            self.train_inputs, self.train_targets = (t.to(self.device) for t in _pair("data", data))
        self.held_out = None if held_out is None else tuple(t.to(self.device) for t in _pair("held_out", held_out))
        self.validation = None if validation is None else tuple(t.to(self.device) for t in _pair("validation", validation))
        with torch.random.fork_rng(devices=[]):  # CPU init: the same weights on every device
            torch.manual_seed(derived_seed(self.seed, _INIT_STREAM))
            built = model()
        if not isinstance(built, nn.Module):
            raise ValueError(f"Invalid model: it returned {type(built).__name__} (must return an nn.Module)")
        self.model = built.to(self.device).train()
        self.generator = torch.Generator().manual_seed(derived_seed(self.seed, _DATA_STREAM))
        self._rng_devices = [] if self.device.type != "cuda" else [self.device.index or 0]
        self.no_weight_decay = _no_decay_rule(no_weight_decay, [n for n, _ in self.model.named_parameters()])

    def param_groups(self) -> list[dict] | None:
        """With `no_weight_decay`: [{"params": decayed}, {"params": not decayed, "weight_decay": 0.0}]
        (an empty group left out); else None (one group)."""
        if self.no_weight_decay is None:
            return None
        named = list(self.model.named_parameters())
        off = [bool(self.no_weight_decay(n, p)) for n, p in named]
        groups = [{"params": [p for (_, p), o in zip(named, off) if not o]},
                  {"params": [p for (_, p), o in zip(named, off) if o], "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]

    @property
    def train_images(self) -> torch.Tensor:
        """The training inputs (ModelTask's name for them; `info()` counts their rows)."""
        return self.train_inputs

    def info(self) -> dict[str, float]:
        if self.sample_fn is not None:
            return {"num_parameters": float(sum(p.numel() for p in self.model.parameters()))}
        return super().info()

    def sample(self) -> Batch:
        """The next batch and its forward seed, both from the task's generator."""
        if self.sample_fn is None:
            index = torch.randint(len(self.train_inputs), (self.batch_size,), generator=self.generator)
            index = index.to(self.device)
            inputs, targets = self.train_inputs[index], self.train_targets[index]
        else:
            drawn = self.sample_fn(self.generator)
            if not isinstance(drawn, (tuple, list)) or len(drawn) != 2:
                raise ValueError(f"Invalid sample: it returned {type(drawn).__name__} (must return (inputs, targets))")
            inputs, targets = (t.to(self.device) if isinstance(t, torch.Tensor) else t for t in drawn)
        seed = int(torch.randint(2**62, (), generator=self.generator))
        return Batch(inputs, targets, seed)

    def _forward(self, inputs, seed: int):
        with torch.random.fork_rng(devices=self._rng_devices):
            torch.manual_seed(seed)
            return self.model(inputs)

    def loss(self, batch: Batch) -> torch.Tensor:
        """`loss(model(inputs), targets)` on the batch; the same value on every call with that batch."""
        return self.loss_fn(self._forward(batch.inputs, batch.seed), batch.targets)

    def evaluate(self) -> dict[str, float]:
        """Validation (`val_loss`, `val_accuracy`) and test (`test_loss`, `test_accuracy`) metrics of the
        splits given; {} without either."""
        metrics = {}
        for prefix, split in (("val", self.validation), ("test", self.held_out)):
            if split is not None:
                metrics.update({f"{prefix}_{k}": v for k, v in self._metrics(*split).items()})
        return metrics

    @torch.no_grad()
    def _metrics(self, inputs, targets) -> dict[str, float]:
        """Loss (the mean of the chunks' losses weighted by size) and, for class-index targets, accuracy."""
        classes = targets.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8) and targets.dim() == 1
        was_training = self.model.training
        self.model.eval()
        try:
            total, correct = 0.0, 0
            for start in range(0, len(inputs), self.eval_batch_size):
                x, y = inputs[start:start + self.eval_batch_size], targets[start:start + self.eval_batch_size]
                outputs = self.model(x)
                total += float(self.loss_fn(outputs, y)) * len(x)
                if classes and outputs.dim() == 2:
                    correct += int((outputs.argmax(1) == y).sum())
        finally:
            self.model.train(was_training)
        metrics = {"loss": total / len(inputs)}
        if classes:
            metrics["accuracy"] = correct / len(inputs)
        return metrics


def _no_decay_rule(rule, names: list[str]):
    """`no_weight_decay` as a function (name, parameter) -> bool; ValueError (one line) for a pattern
    that matches no parameter name (a typo would otherwise decay everything silently)."""
    if rule is None or callable(rule):
        return rule
    patterns = [rule] if isinstance(rule, str) else rule
    if not isinstance(patterns, (list, tuple)) or not patterns:
        raise ValueError(f"Invalid no_weight_decay: {rule!r} (must be name patterns or a function (name, parameter) -> bool)")
    for pattern in patterns:
        if not isinstance(pattern, str) or not fnmatch.filter(names, pattern):
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            raise ValueError(f"Invalid no_weight_decay: {pattern!r} matches no parameter name (names: {shown})")
    return lambda name, parameter: any(fnmatch.fnmatchcase(name, p) for p in patterns)
