"""The MNIST autoregressive pixel task against hand-written references (docs/paper.md §3, App. F.2)."""
import copy
import gzip
import hashlib
import math
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tasks import datasets
from tasks.image_generation import (
    ImageGeneration, PixelBatch, ResidualBlock, build_model, make_inputs, synthetic_images,
)

from conftest import train_by_hand


def reference_inputs(image: torch.Tensor, r: int, c: int) -> torch.Tensor:
    """Per-pixel loops, straight from the definition of the five input channels."""
    out = torch.zeros(5, 28, 28)
    for i in range(28):
        for j in range(28):
            visible = i < r or (i == r and j < c)
            out[0, i, j] = float(image[i, j]) / 256 if visible else 0.0
            out[1, i, j] = 1.0 if j <= c else -1.0
            out[2, i, j] = 1.0 if visible else -1.0
            out[3, i, j] = 2 * i / 28 - 1
            out[4, i, j] = 2 * j / 28 - 1
    return out


def reference_pool(x: torch.Tensor) -> torch.Tensor:
    """2×2 mean over the real pixels of each window, odd sizes padded at the end (TF 'SAME')."""
    pad = x.shape[-1] % 2
    total = F.pad(x, (0, pad, 0, pad))
    count = F.pad(torch.ones_like(x), (0, pad, 0, pad))
    b, ch, h, w = total.shape
    return total.view(b, ch, h // 2, 2, w // 2, 2).sum((3, 5)) / count.view(b, ch, h // 2, 2, w // 2, 2).sum((3, 5))


def reference_logits(model, x: torch.Tensor) -> torch.Tensor:
    """The network written out with F.conv2d from the model's own weights."""
    x = F.conv2d(x, model.stem.weight, model.stem.bias)
    for stage in model.stages:
        for block in stage:
            y = torch.atan(F.conv2d(x, block.expand.weight, block.expand.bias))
            y = torch.atan(F.conv2d(y, block.depthwise.weight, block.depthwise.bias, padding=1, groups=40))
            x = x + F.conv2d(y, block.project.weight, block.project.bias)
        x = reference_pool(x)
    assert x.shape[-2:] == (1, 1)
    return x[:, :, 0, 0] @ model.head.weight.T + model.head.bias


def test_parameter_count_is_the_authors_94696():
    model = build_model(torch.Generator().manual_seed(0))
    assert sum(p.numel() for p in model.parameters()) == 94_696
    block = model.stages[0][0]
    assert isinstance(block, ResidualBlock)
    assert block.depthwise.weight.shape == (120, 1, 3, 3)  # multiplier 3: each of 40 inputs feeds 3 outputs


@pytest.mark.parametrize("r,c", [(0, 0), (27, 27), (0, 27), (27, 0), (13, 5), (5, 13)])
def test_inputs_match_per_pixel_reference(r, c):
    images = torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(r * 28 + c))
    rows, cols = torch.tensor([r, 27 - r]), torch.tensor([c, 27 - c])
    got = make_inputs(images, rows, cols)
    assert got.shape == (2, 5, 28, 28) and got.dtype == torch.float32
    for b in range(2):
        torch.testing.assert_close(got[b], reference_inputs(images[b], int(rows[b]), int(cols[b])), rtol=0, atol=1e-6)


def test_query_pixel_and_later_pixels_are_hidden():
    images = torch.full((1, 28, 28), 255, dtype=torch.uint8)
    x = make_inputs(images, torch.tensor([10]), torch.tensor([3]))
    assert x[0, 0, 10, 3] == 0 and x[0, 0, 10, 2] > 0 and x[0, 0, 11, 0] == 0 and x[0, 0, 9, 27] > 0


def test_init_std_per_layer_is_one_over_sqrt_fan_in_plus_one():
    model = build_model(torch.Generator().manual_seed(1))
    blocks = [block for stage in model.stages for block in stage]
    groups = {  # name: (tensors, fan_in, relative tolerance)
        "stem": ([model.stem.weight, model.stem.bias], 5, 0.3),
        "expand": ([t for b in blocks for t in (b.expand.weight, b.expand.bias)], 20, 0.05),
        "depthwise": ([t for b in blocks for t in (b.depthwise.weight, b.depthwise.bias)], 9, 0.05),
        "project": ([t for b in blocks for t in (b.project.weight, b.project.bias)], 120, 0.05),
        "head": ([model.head.weight, model.head.bias], 20, 0.1),
        "biases": ([b.expand.bias for b in blocks], 20, 0.15),
    }
    for name, (tensors, fan_in, tol) in groups.items():
        values = torch.cat([t.detach().flatten() for t in tensors])
        expected = 1 / math.sqrt(fan_in + 1)
        assert abs(values.std().item() / expected - 1) < tol, name
        assert abs(values.mean().item()) < 5 * expected / math.sqrt(values.numel()), name


def test_network_matches_written_out_reference_with_same_padding_pools():
    model = build_model(torch.Generator().manual_seed(2))
    images = synthetic_images(3, seed=3)
    x = make_inputs(images, torch.tensor([0, 14, 27]), torch.tensor([0, 9, 27]))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_logits(model, x), rtol=1e-5, atol=1e-5)


def test_loss_is_cross_entropy_of_query_pixel_brightness_and_near_ln256_at_init():
    task = ImageGeneration(seed=0, synthetic=True, num_train=50, batch_size=8)
    batch = task.sample()
    assert batch.index.max() < 50 and batch.rows.max() < 28 and batch.cols.max() < 28
    loss = task.loss(batch)
    with torch.no_grad():
        per_sample = []
        for b in range(8):
            image, r, c = task.train_images[batch.index[b]], int(batch.rows[b]), int(batch.cols[b])
            logits = reference_logits(task.model, reference_inputs(image, r, c)[None])[0]
            per_sample.append(torch.logsumexp(logits, 0) - logits[int(image[r, c])])
    torch.testing.assert_close(loss.detach(), torch.stack(per_sample).mean(), rtol=1e-5, atol=1e-5)
    assert abs(loss.item() - math.log(256)) < 3.0


def test_a_few_adam_steps_reduce_the_loss():
    task = ImageGeneration(seed=1, synthetic=True, num_train=32, batch_size=8)
    batch = task.sample()
    opt = torch.optim.Adam(task.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = task.loss(batch)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def write_idx_gz(path, array, magic):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape) + array.tobytes())


def test_last_64_training_images_are_held_out_and_never_sampled(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (100, 28, 28)).astype(np.uint8)
    files = {"train-images-idx3-ubyte.gz": (train, 2051), "train-labels-idx1-ubyte.gz": (np.zeros(100, np.uint8), 2049),
             "t10k-images-idx3-ubyte.gz": (train[:2], 2051), "t10k-labels-idx1-ubyte.gz": (np.zeros(2, np.uint8), 2049)}
    for name, (array, magic) in files.items():
        write_idx_gz(tmp_path / name, array, magic)
    monkeypatch.setattr(datasets, "MNIST_MD5", {n: hashlib.md5((tmp_path / n).read_bytes()).hexdigest() for n in files})
    task = ImageGeneration(seed=0, data_dir=tmp_path, download=False, batch_size=512)
    np.testing.assert_array_equal(task.train_images.numpy(), train[:36])
    np.testing.assert_array_equal(task.validation_images.numpy(), train[36:])
    assert int(task.sample().index.max()) < 36


def test_evaluate_averages_nll_over_all_784_pixels_of_held_out_images():
    task = ImageGeneration(seed=2, synthetic=True, num_train=4)
    assert task.validation_images.shape == (64, 28, 28)
    # A cheap stand-in network keeps the CPU test short; what is checked is evaluate()'s sweep.
    task.model = torch.nn.Sequential(torch.nn.AvgPool2d(7), torch.nn.Flatten(), torch.nn.Linear(5 * 16, 256))
    result = task.evaluate()
    assert set(result) == {"validation_loss"}
    pixel = torch.arange(784)
    per_image = []
    with torch.no_grad():  # each image at all 784 query pixels; the target is pixel p of the raster
        for image in task.validation_images:
            logits = task.model(make_inputs(image.expand(784, 28, 28), pixel // 28, pixel % 28))
            per_image.append(F.cross_entropy(logits, image.flatten().long()))
    assert result["validation_loss"] == pytest.approx(torch.stack(per_image).mean().item(), rel=1e-5)


def test_state_dict_round_trip_resumes_bit_identically():
    run = train_by_hand  # float32 losses read exactly as Python floats: equality is bitwise
    task = ImageGeneration(seed=3, synthetic=True, num_train=40, batch_size=4)
    opt = torch.optim.Adam(task.parameters(), lr=1e-3)
    run(task, opt, 2)
    saved_task, saved_opt = task.state_dict(), copy.deepcopy(opt.state_dict())
    first = run(task, opt, 2)

    fresh = ImageGeneration(seed=99, synthetic=True, num_train=40, batch_size=4)
    fresh.train_images = task.train_images  # same data, different init and RNG until loaded
    fresh.load_state_dict(saved_task)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    fresh_opt.load_state_dict(saved_opt)
    second = run(fresh, fresh_opt, 2)
    assert first == second
    for a, b in zip(task.parameters(), fresh.parameters()):
        assert torch.equal(a, b)


def test_channels_last_gives_the_same_loss():
    plain = ImageGeneration(seed=4, synthetic=True, num_train=8, batch_size=4)
    fast = ImageGeneration(seed=4, synthetic=True, num_train=8, batch_size=4, channels_last=True)
    batch = plain.sample()
    torch.testing.assert_close(fast.loss(PixelBatch(*batch)), plain.loss(batch), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("field,value", [("batch_size", 0), ("num_train", 0), ("num_train", 60_000)])
def test_invalid_options_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"Invalid {field}: {value}"):
        ImageGeneration(synthetic=True, **{field: value})


@pytest.mark.slow
def test_real_mnist_from_the_cache_passes_the_published_checksums():
    try:
        task = ImageGeneration(seed=0, download=False, batch_size=4)
    except datasets.DatasetUnavailableError as error:
        pytest.skip(str(error))
    assert task.train_images.shape == (59_936, 28, 28) and task.validation_images.shape == (64, 28, 28)
    assert abs(task.loss(task.sample()).item() - math.log(256)) < 3.0
