"""A small real model for the tuner: an MLP on scikit-learn's bundled 8×8 digits (no download).

    lodo-tune --task examples/digits/digits.py:digits --schedule examples/digits/schedule.yaml

1,797 images of 64 pixels in 0..16, scaled to [0, 1]; 297 are held out (the same split for every
seed, so seeds differ only in the initialisation and the batches). Needs scikit-learn:
`pip install -e ".[examples]"`.
"""
import torch
from sklearn.datasets import load_digits
from torch import nn

from tasks.supervised import SupervisedTask

HELD_OUT = 297


def digits(seed=0, device="cpu", hidden=24, batch_size=32):
    """An MLP 64 → hidden → 10 (tanh) trained with cross-entropy on batches of `batch_size`."""
    images, labels = load_digits(return_X_y=True)
    inputs, targets = torch.tensor(images, dtype=torch.float32) / 16, torch.tensor(labels)
    order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(0))
    train, test = order[HELD_OUT:], order[:HELD_OUT]
    return SupervisedTask(
        model=lambda: nn.Sequential(nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10)),
        loss=nn.functional.cross_entropy,
        data=(inputs[train], targets[train]), batch_size=batch_size,
        held_out=(inputs[test], targets[test]),
        seed=seed, device=device, name="digits")
