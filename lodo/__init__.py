"""LODO and its baselines as PyTorch optimizers, with a registry keyed by the paper's names.

    opt = lodo.create("LODO", model.parameters(), seed=0, lr=0.27, meta_lr=9.6e-4, beta=0.195)
    lodo.available(); lodo.hyperparameters("Adam"); lodo.paper_hyperparameters("noisy_bowl")
    lodo.register(name="AdamW", optimizer="torch.optim.AdamW", hyperparameters={"lr": {"default": 1e-3, "scale": "log"}})
"""
import logging

from lodo.lars import LARS
from lodo.lbfgs import LBFGS, OLBFGS
from lodo.lodo import LODO, LODOSGD, LODODiagonal, LODOGlobal, LODONoMomentum, LODOResiduals
from lodo.registry import (Hyperparameter, OptimizerSpec, OptimizerSpecError, available, create, hyperparameters,
                           options, paper_hyperparameters, register, registered, unregister)
from lodo.second_order import BFGS, LevenbergMarquardt, Newton
from lodo.yogi import Yogi

logging.getLogger(__name__).addHandler(logging.NullHandler())  # a library: the application configures logging

__all__ = [
    "available", "create", "hyperparameters", "options", "paper_hyperparameters", "Hyperparameter",
    "OptimizerSpec", "OptimizerSpecError", "register", "registered", "unregister",
    "LODO", "LODODiagonal", "LODOGlobal", "LODOResiduals", "LODONoMomentum", "LODOSGD",
    "Yogi", "LARS", "LBFGS", "OLBFGS", "BFGS", "LevenbergMarquardt", "Newton",
]


def __getattr__(name: str):
    """L2LBGDBGD (meta-trained, optional) is imported on first use, so `import lodo` works without it."""
    if name == "L2LBGDBGD":
        from lodo.l2l import L2LBGDBGD

        return L2LBGDBGD
    raise AttributeError(f"module 'lodo' has no attribute {name!r}")
