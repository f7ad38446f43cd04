"""ResNet-18 on CIFAR-10 (docs/paper.md §3 "resnet18_cifar10"; paper §5.4).

The CIFAR variant of ResNet-18: a 3×3 stride-1 stem convolution and no max-pool, then
BasicBlock stages [2, 2, 2, 2] of widths 64-128-256-512 (strides 1, 2, 2, 2; a 1×1 conv + BN
shortcut where the shape changes), global average pooling and a 512→10 linear layer:
11,173,962 parameters. PyTorch's default initialisation, drawn from the task's seed.

Training batches (2048) get the standard augmentation, as one batched gather on the device:

    crop:  out(b, :, i, j) = pad4(image_b)(:, dy_b + i, dx_b + j'),  dy_b, dx_b ~ U{0..8}
    flip:  j' = 31 − j if flip_b else j,                           flip_b ~ Bernoulli(½)

then per-channel normalisation x ← (x/255 − mean)/std. Images are drawn with replacement from
the task's seeded generator, so the generator state is the whole data position. The loss is the
mean cross-entropy with BatchNorm in training mode; `evaluate()` scores the test set with
BatchNorm in eval mode.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tasks import datasets
from tasks.base import ModelTask

NUM_CLASSES = 10
SIZE = 32
PADDING = 4
NUM_CIFAR_TRAIN = 50_000
NUM_CIFAR_TEST = 10_000
MEAN = (0.4914, 0.4822, 0.4465)  # per-channel statistics of the CIFAR-10 training set
STD = (0.2470, 0.2435, 0.2616)


class BasicBlock(nn.Module):
    """relu(bn(conv3×3(relu(bn(conv3×3(x))))) + shortcut(x))."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR ResNet-18: (B, 3, 32, 32) normalised images → (B, 10) logits."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, in_planes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def build_model(seed: int = 0) -> ResNet18:
    """A ResNet18 with PyTorch's default initialisation drawn from `seed` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ResNet18()


def augment(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Random crop of the 4-pixel zero-padded images at offsets (dy, dx), mirrored where `flip`."""
    batch, channels = images.shape[:2]
    padded = F.pad(images, (PADDING,) * 4)
    device = images.device
    offsets = torch.arange(SIZE, device=device)
    rows = dy.view(-1, 1) + offsets  # (B, 32)
    cols = dx.view(-1, 1) + torch.where(flip.view(-1, 1), SIZE - 1 - offsets, offsets)
    return padded[
        torch.arange(batch, device=device).view(-1, 1, 1, 1),
        torch.arange(channels, device=device).view(1, -1, 1, 1),
        rows.view(batch, 1, SIZE, 1),
        cols.view(batch, 1, 1, SIZE),
    ]


@functools.lru_cache(maxsize=None)
def _parameter_count() -> int:
    return sum(p.numel() for p in build_model(0).parameters())


class AugmentedBatch(NamedTuple):
    """A minibatch: training-image indices and their crop offsets and flips, on the task's device."""

    index: torch.Tensor
    dy: torch.Tensor
    dx: torch.Tensor
    flip: torch.Tensor


def synthetic_cifar10(num_train: int, num_test: int, seed: int) -> dict[str, torch.Tensor]:
    """Random uint8 images and labels with CIFAR-10's shapes, for benchmarks and smoke tests."""
    generator = torch.Generator().manual_seed(seed)

    def images(count):
        return torch.randint(0, 256, (count, 3, SIZE, SIZE), generator=generator, dtype=torch.uint8)

    def labels(count):
        return torch.randint(0, NUM_CLASSES, (count,), generator=generator)

    return {"train_images": images(num_train), "train_labels": labels(num_train),
            "test_images": images(num_test), "test_labels": labels(num_test)}


class ResNet18CIFAR10(ModelTask):
    """CIFAR-10 classification with ResNet-18; `evaluate()` → {"test_loss", "test_accuracy"}."""

    name = "resnet18_cifar10"

    @staticmethod
    def memory_footprint(batch_size: int = 2048, **_) -> dict:
        """CIFAR-10 in float32 and ~3 MiB of activations an image, for Ray's placement."""
        return {"parameters": _parameter_count(), "itemsize": 4, "bytes": 60_000 * 3072 * 4 + batch_size * (3 << 20)}

    def __init__(
        self,
        seed: int = 0,
        device: str | torch.device = "cpu",
        batch_size: int = 2048,
        data_dir=None,
        synthetic: bool = False,
        download: bool = True,
        num_train: int | None = None,
        num_test: int | None = None,
        channels_last: bool = False,
        eval_batch_size: int = 1000,
    ):
        super().__init__(seed=seed, device=device, dtype=torch.float32)
        for field, value, high in (("batch_size", batch_size, None), ("eval_batch_size", eval_batch_size, None),
                                   ("num_train", num_train, NUM_CIFAR_TRAIN), ("num_test", num_test, NUM_CIFAR_TEST)):
            if value is None and field.startswith("num_"):
                continue
            if not isinstance(value, int) or value < 1 or (high is not None and value > high):
                allowed = f"an integer in [1, {high}]" if high else "a positive integer"
                raise ValueError(f"Invalid {field}: {value} (must be {allowed})")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.channels_last = bool(channels_last)
        if synthetic:
            data = synthetic_cifar10(num_train or NUM_CIFAR_TRAIN, num_test or NUM_CIFAR_TEST, self.seed)
        else:
            data = datasets.load_cifar10(data_dir, download)
        self.train_images = data["train_images"][:num_train].to(self.device)
        self.train_labels = data["train_labels"][:num_train].long().to(self.device)
        self.test_images = data["test_images"][:num_test].to(self.device)
        self.test_labels = data["test_labels"][:num_test].long().to(self.device)
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1)
        self.model = build_model(self.seed).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed + (1 << 32))  # a stream apart from the init's

    def sample(self) -> AugmentedBatch:
        """Draw `batch_size` training images (with replacement), crop offsets in 0..8 and flips."""
        shape, options = (self.batch_size,), dict(generator=self.generator, device=self.device)
        index = torch.randint(self.train_images.shape[0], shape, **options)
        dy = torch.randint(2 * PADDING + 1, shape, **options)
        dx = torch.randint(2 * PADDING + 1, shape, **options)
        flip = torch.randint(2, shape, **options).bool()
        return AugmentedBatch(index, dy, dx, flip)

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.to(self.dtype) / 255.0 - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def loss(self, batch: AugmentedBatch) -> torch.Tensor:
        """Mean training cross-entropy on the augmented batch (BatchNorm in training mode)."""
        images = augment(self.train_images[batch.index], batch.dy, batch.dx, batch.flip)
        return F.cross_entropy(self.model(self._inputs(images)), self.train_labels[batch.index])

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Test-set cross-entropy and accuracy, BatchNorm in eval mode (training mode restored after)."""
        was_training = self.model.training
        self.model.eval()
        try:
            total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
            correct = torch.zeros((), dtype=torch.int64, device=self.device)
            for start in range(0, self.test_images.shape[0], self.eval_batch_size):
                images = self.test_images[start:start + self.eval_batch_size]
                labels = self.test_labels[start:start + self.eval_batch_size]
                logits = self.model(self._inputs(images))
                total_loss += F.cross_entropy(logits, labels, reduction="sum").double()
                correct += (logits.argmax(1) == labels).sum()
        finally:
            self.model.train(was_training)
        count = self.test_images.shape[0]
        return {"test_loss": float(total_loss) / count, "test_accuracy": float(correct) / count}
