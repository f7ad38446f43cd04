"""Benchmark tasks (SPEC §3): `available()` names them, `create(name, ...)` builds one.

Registry entries are "module:Class" strings, imported only when that task is created, so the
small tasks never pay for torchvision-sized imports.
"""
from __future__ import annotations

import importlib
import inspect

from tasks.base import Task

__all__ = ["Task", "available", "create"]

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


def create(name: str, seed: int = 0, device="cpu", **options) -> Task:
    """Build task `name`, initialised from `seed`; `options` are the task's own keyword arguments."""
    cls = _task_class(name)
    params = inspect.signature(cls.__init__).parameters.values()
    valid = [p.name for p in params if p.name not in ("self", "seed", "device") and p.kind is not p.VAR_KEYWORD]
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params)
    unknown = sorted(set(options) - set(valid))
    if unknown and not accepts_any:
        listed = ", ".join(valid) or "none"
        raise ValueError(f"Unknown option for task {name!r}: {', '.join(unknown)} (valid: {listed})")
    return cls(seed=seed, device=device, **options)
