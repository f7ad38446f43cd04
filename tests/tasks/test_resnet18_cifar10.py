"""ResNet-18 on CIFAR-10 against hand-written references; tiny batches keep it cheap on CPU."""
import copy

import pytest
import torch
import torch.nn.functional as F

from tasks.resnet18_cifar10 import AugmentedBatch, ResNet18CIFAR10, augment, build_model


def small_task(**options):
    defaults = dict(seed=0, synthetic=True, num_train=12, num_test=6, batch_size=4, eval_batch_size=4)
    return ResNet18CIFAR10(**{**defaults, **options})


def reference_augment(image: torch.Tensor, dy: int, dx: int, flip: bool) -> torch.Tensor:
    """One image: zero-pad by 4, cut the 32×32 window at (dy, dx), mirror left-right if asked."""
    padded = torch.zeros(3, 40, 40, dtype=image.dtype)
    padded[:, 4:36, 4:36] = image
    crop = padded[:, dy:dy + 32, dx:dx + 32]
    return crop.flip(-1) if flip else crop


def reference_inputs(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def test_parameter_count_is_11173962_with_3x3_stem_and_no_maxpool():
    model = build_model(0)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_augmentation_matches_per_sample_crop_and_flip():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    dy = torch.tensor([0, 8, 4, 0, 8, 3])
    dx = torch.tensor([0, 8, 4, 8, 0, 5])
    flip = torch.tensor([False, True, False, True, False, True])
    got = augment(images, dy, dx, flip)
    assert got.shape == images.shape and got.dtype == torch.uint8
    for b in range(6):
        assert torch.equal(got[b], reference_augment(images[b], int(dy[b]), int(dx[b]), bool(flip[b])))
    assert torch.equal(augment(images, dy * 0 + 4, dx * 0 + 4, flip & False), images)  # centre crop, no flip


def test_sample_draws_offsets_0_to_8_and_both_flips():
    task = small_task(batch_size=2048)
    batch = task.sample()
    assert batch.index.min() >= 0 and batch.index.max() < 12
    assert set(batch.dy.tolist()) == set(range(9)) and set(batch.dx.tolist()) == set(range(9))
    assert 0.4 < batch.flip.float().mean().item() < 0.6


def test_loss_is_cross_entropy_on_normalised_augmented_batch_in_train_mode():
    task = small_task()
    reference = copy.deepcopy(task.model)
    batch = task.sample()
    loss = task.loss(batch)
    images = torch.stack([reference_augment(task.train_images[i], int(y), int(x), bool(f))
                          for i, y, x, f in zip(batch.index, batch.dy, batch.dx, batch.flip)])
    expected = F.cross_entropy(reference.train()(reference_inputs(images)), task.train_labels[batch.index])
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    assert task.model.training
    assert not torch.equal(task.model.bn1.running_mean, build_model(0).bn1.running_mean)  # BN statistics moved
    loss.backward()
    assert all(p.grad is not None for p in task.parameters())


def test_evaluate_uses_eval_mode_batches_the_test_set_and_restores_train_mode():
    task = small_task()
    task.loss(task.sample())  # move the BN running statistics away from their init
    reference = copy.deepcopy(task.model).eval()
    result = task.evaluate()
    assert set(result) == {"test_loss", "test_accuracy"}
    assert task.model.training
    with torch.no_grad():
        logits = reference(reference_inputs(task.test_images))
    assert result["test_loss"] == pytest.approx(F.cross_entropy(logits, task.test_labels).item(), rel=1e-5)
    assert result["test_accuracy"] == pytest.approx((logits.argmax(1) == task.test_labels).float().mean().item())


def test_state_dict_round_trip_resumes_bit_identically():
    def step(task, opt):
        batch = task.sample()
        opt.zero_grad()
        loss = task.loss(batch)
        loss.backward()
        opt.step()
        return loss.detach().clone()

    task = small_task(seed=1)
    opt = torch.optim.Adam(task.parameters(), lr=1e-3)
    step(task, opt)
    saved_task, saved_opt = task.state_dict(), copy.deepcopy(opt.state_dict())
    first = step(task, opt)

    fresh = small_task(seed=1)
    fresh.model = build_model(7)  # a different init, overwritten by the load
    fresh.load_state_dict(saved_task)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    fresh_opt.load_state_dict(saved_opt)
    assert torch.equal(step(fresh, fresh_opt), first)
    for (name, a), b in zip(task.model.state_dict().items(), fresh.model.state_dict().values()):
        assert torch.equal(a, b), name  # parameters and BN buffers


def test_channels_last_gives_the_same_loss():
    plain, fast = small_task(seed=2), small_task(seed=2, channels_last=True)
    batch = plain.sample()
    torch.testing.assert_close(fast.loss(AugmentedBatch(*batch)), plain.loss(batch), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("field,value", [("batch_size", 0), ("num_train", 50_001), ("num_test", 0)])
def test_invalid_options_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"Invalid {field}: {value}"):
        small_task(**{field: value})


@pytest.mark.slow
def test_real_cifar10_from_the_cache_passes_the_published_checksum():
    from tasks.datasets import DatasetUnavailableError

    try:
        task = ResNet18CIFAR10(seed=0, download=False, batch_size=4, num_test=100)
    except DatasetUnavailableError as error:
        pytest.skip(str(error))
    assert task.train_images.shape == (50_000, 3, 32, 32) and task.test_images.shape == (100, 3, 32, 32)
    assert sorted(task.train_labels.unique().tolist()) == list(range(10))
    assert 0.0 <= task.evaluate()["test_accuracy"] <= 1.0
