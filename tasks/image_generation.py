"""Autoregressive pixel model on MNIST (docs/paper.md §3 "image_generation"; paper §5.3, App. F.2).

Each sample is a random training image and a random query pixel (r, c); the network sees the
image with the query pixel and everything after it in raster order blackened, and predicts the
query pixel's brightness as one of 256 classes (cross-entropy, nats).

Input channels (`make_inputs`), for pixel (i, j) of the 28×28 grid and query (r, c):

    visible(i, j) = 28·i + j < 28·r + c                      (raster order)
    x1 = image(i, j)/256 · visible(i, j)
    x2 = +1 if j ≤ c else −1                                   (column at or left of the query)
    x3 = +1 if visible(i, j) else −1
    x4 = 2·i/28 − 1,   x5 = 2·j/28 − 1                         (coordinate ramps in [−1, 1))

The ramps follow the authors' code (`pixel/28·2 − 1`, row ramp first), so they run from −1 to
1 − 1/14 rather than exactly to 1.

Network (94,696 parameters, the authors' count): 1×1 conv 5→20, then 5 stages of
[4 residual blocks x ← x + conv1×1(atan(dwconv3×3(atan(conv1×1(x)))))] + 2×2 average pooling
(28→14→7→4→2→1; odd sizes padded at the end and averaged over the real pixels only, TF "SAME"),
then dense 20→256. The depthwise conv has multiplier 3 (40→120 channels, 9·120 weights +
120 biases): per block 840 + 1,200 + 2,420 = 4,460 parameters; 120 + 20·4,460 + 5,376 = 94,696.
Every weight and bias is drawn from N(0, 1/(fan_in + 1)), fan_in = inputs per output
(5, 20, 9 for the depthwise conv, 120, 20).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tasks import datasets
from tasks.base import ModelTask

SIZE = 28
NUM_PIXELS = SIZE * SIZE
NUM_CLASSES = 256
NUM_VALIDATION = 64
NUM_MNIST_TRAIN = 60_000
CHANNELS_IN = 5
WIDTH = 20  # residual stream
HIDDEN = 40
DEPTH_MULTIPLIER = 3
BLOCKS_PER_STAGE = 4
STAGES = 5


def make_inputs(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """The 5-channel network input (B, 5, 28, 28) for uint8 images (B, 28, 28) and query pixels (B,)."""
    device = images.device
    i = torch.arange(SIZE, device=device).view(1, SIZE, 1)
    j = torch.arange(SIZE, device=device).view(1, 1, SIZE)
    rows, cols = rows.view(-1, 1, 1), cols.view(-1, 1, 1)
    visible = (i * SIZE + j) < (rows * SIZE + cols)  # (B, 28, 28)
    left = (j <= cols).expand_as(visible)
    ramp = torch.arange(SIZE, device=device, dtype=dtype) * (2.0 / SIZE) - 1.0
    batch = images.shape[0]
    return torch.stack(
        [
            images.to(dtype) * visible.to(dtype) / 256.0,
            left.to(dtype) * 2 - 1,
            visible.to(dtype) * 2 - 1,
            ramp.view(SIZE, 1).expand(batch, SIZE, SIZE),
            ramp.view(1, SIZE).expand(batch, SIZE, SIZE),
        ],
        dim=1,
    )


class ResidualBlock(nn.Module):
    """x + conv1×1(atan(depthwise3×3(atan(conv1×1(x))))), widths 20 → 40 → 120 → 20."""

    def __init__(self):
        super().__init__()
        self.expand = nn.Conv2d(WIDTH, HIDDEN, 1)
        self.depthwise = nn.Conv2d(HIDDEN, HIDDEN * DEPTH_MULTIPLIER, 3, padding=1, groups=HIDDEN)
        self.project = nn.Conv2d(HIDDEN * DEPTH_MULTIPLIER, WIDTH, 1)

    def forward(self, x):
        return x + self.project(torch.atan(self.depthwise(torch.atan(self.expand(x)))))


class PixelModel(nn.Module):
    """The autoregressive pixel classifier: (B, 5, 28, 28) inputs → (B, 256) logits."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(CHANNELS_IN, WIDTH, 1)
        self.stages = nn.ModuleList(
            nn.Sequential(*(ResidualBlock() for _ in range(BLOCKS_PER_STAGE))) for _ in range(STAGES)
        )
        self.head = nn.Linear(WIDTH, NUM_CLASSES)

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages:
            # ceil_mode pads odd sizes at the end; the divisor counts only real pixels (TF "SAME").
            x = F.avg_pool2d(stage(x), 2, 2, ceil_mode=True)
        return self.head(x.flatten(1))  # 1×1 spatial after five poolings


def build_model(generator: torch.Generator | None = None) -> PixelModel:
    """A PixelModel with every weight and bias ~ N(0, 1/(fan_in + 1)), drawn from `generator` (CPU)."""
    model = PixelModel()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                std = 1.0 / math.sqrt(module.weight[0].numel() + 1)
                module.weight.normal_(0.0, std, generator=generator)
                module.bias.normal_(0.0, std, generator=generator)
    return model


@functools.lru_cache(maxsize=None)
def _parameter_count() -> int:
    return sum(p.numel() for p in build_model(torch.Generator().manual_seed(0)).parameters())


class PixelBatch(NamedTuple):
    """A minibatch: training-image indices and query pixels (rows, cols), all on the task's device."""

    index: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor


def synthetic_images(count: int, seed: int) -> torch.Tensor:
    """Random uint8 images with MNIST's shape, for benchmarks and smoke tests without files."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, SIZE, SIZE), generator=generator, dtype=torch.uint8)


class ImageGeneration(ModelTask):
    """MNIST autoregressive pixel model; `evaluate()` → {"validation_loss": NLL in nats/pixel}.

    The last 64 of MNIST's 60,000 training images are held out (as in the authors' code) and
    scored on all 784 query pixels; training samples images with replacement from the rest.
    """

    name = "image_generation"

    @staticmethod
    def memory_footprint(batch_size: int = 256, **_) -> dict:
        """MNIST in float32 and a batch's activations (~4 MiB an image), for Ray's placement."""
        return {"parameters": _parameter_count(), "itemsize": 4, "bytes": 70_000 * 784 * 4 + batch_size * (4 << 20)}

    def __init__(
        self,
        seed: int = 0,
        device: str | torch.device = "cpu",
        batch_size: int = 256,
        data_dir=None,
        synthetic: bool = False,
        download: bool = True,
        num_train: int | None = None,
        channels_last: bool = False,
    ):
        super().__init__(seed=seed, device=device, dtype=torch.float32)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Invalid batch_size: {batch_size} (must be a positive integer)")
        most = NUM_MNIST_TRAIN - NUM_VALIDATION
        if num_train is not None and (not isinstance(num_train, int) or not 1 <= num_train <= most):
            raise ValueError(f"Invalid num_train: {num_train} (must be an integer in [1, {most}])")
        self.batch_size = batch_size
        self.channels_last = bool(channels_last)
        if synthetic:
            images = synthetic_images((num_train or most) + NUM_VALIDATION, self.seed)
        else:
            images = datasets.load_mnist(data_dir, download)["train_images"]
        train, held_out = images[:-NUM_VALIDATION], images[-NUM_VALIDATION:]
        self.train_images = train[:num_train].to(self.device)
        self.validation_images = held_out.to(self.device)
        self.model = build_model(torch.Generator().manual_seed(self.seed)).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed + (1 << 32))  # a stream apart from the init's

    def sample(self) -> PixelBatch:
        """Draw `batch_size` training images (with replacement) and a uniform query pixel for each."""
        shape, options = (self.batch_size,), dict(generator=self.generator, device=self.device)
        index = torch.randint(self.train_images.shape[0], shape, **options)
        pixel = torch.randint(NUM_PIXELS, shape, **options)
        return PixelBatch(index, pixel // SIZE, pixel % SIZE)

    def _nll(self, images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, reduction: str = "mean"):
        inputs = make_inputs(images, rows, cols, self.dtype)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        targets = images[torch.arange(images.shape[0], device=images.device), rows, cols].long()
        return F.cross_entropy(self.model(inputs), targets, reduction=reduction)

    def loss(self, batch: PixelBatch) -> torch.Tensor:
        """Mean cross-entropy (nats) of the query pixels' brightness."""
        return self._nll(self.train_images[batch.index], batch.rows, batch.cols)

    @torch.no_grad()
    def nll_per_pixel(self, images: torch.Tensor, pixels_per_chunk: int = 16) -> float:
        """Mean NLL (nats/pixel) of uint8 `images` (N, 28, 28) over all 784 query pixels."""
        count = images.shape[0]
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for start in range(0, NUM_PIXELS, pixels_per_chunk):
            pixel = torch.arange(start, min(start + pixels_per_chunk, NUM_PIXELS), device=self.device)
            pixel = pixel.repeat_interleave(count)  # every image at each pixel of the chunk
            chunk = images.repeat(pixel.numel() // count, 1, 1)
            total += self._nll(chunk, pixel // SIZE, pixel % SIZE, reduction="sum").double()
        return float(total) / (count * NUM_PIXELS)

    def evaluate(self) -> dict[str, float]:
        return {"validation_loss": self.nll_per_pixel(self.validation_images)}
