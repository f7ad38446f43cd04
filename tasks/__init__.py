"""Benchmark tasks (docs/paper.md §3): `available()` names them, `create(name, ...)` builds one.

Registry entries are "module:Class" strings, imported only when that task is created, so the
small tasks never pay for torchvision-sized imports.
"""
from __future__ import annotations

import importlib
import inspect

from tasks.base import Task

__all__ = ["Task", "available", "create", "options"]

_REGISTRY = {
    "noisy_bowl": "tasks.noisy_bowl:NoisyBowl",
    "rosenbrock": "tasks.rosenbrock:Rosenbrock",
    "image_generation": "tasks.image_generation:ImageGeneration",
    "resnet18_cifar10": "tasks.resnet18_cifar10:ResNet18CIFAR10",
}


def available() -> list[str]:
    """The task names, in the paper's order."""
    return list(_REGISTRY)


def _task_class(name: str) -> type[Task]:
    if name not in _REGISTRY:
        raise ValueError(f"Unknown task: {name!r} (valid: {', '.join(_REGISTRY)})")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def options(name: str) -> list[str]:
    """The keyword options task `name` accepts (its constructor's, less seed and device)."""
    params = inspect.signature(_task_class(name).__init__).parameters.values()
    return [p.name for p in params if p.name not in ("self", "seed", "device") and p.kind is not p.VAR_KEYWORD]


def create(name: str, seed: int = 0, device="cpu", **options_) -> Task:
    """Build task `name`, initialised from `seed`; the rest are the task's own options (`options(name)`)."""
    valid = options(name)
    unknown = sorted(set(options_) - set(valid))
    if unknown:
        raise ValueError(f"Unknown option for task {name!r}: {', '.join(unknown)} (valid: {', '.join(valid) or 'none'})")
    return _task_class(name)(seed=seed, device=device, **options_)
