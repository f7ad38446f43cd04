"""The small tasks (docs/paper.md §3) and the task registry, against closed forms and finite differences."""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import tasks
from tasks.noisy_bowl import NoisyBowl
from tasks.rosenbrock import Rosenbrock


def finite_difference_gradient(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of a scalar function of a float64 vector."""
    grad = np.empty_like(x)
    for i in range(len(x)):
        e = np.zeros_like(x)
        e[i] = h
        grad[i] = (f(x + e) - f(x - e)) / (2 * h)
    return grad


def set_parameter(task, value: np.ndarray) -> None:
    with torch.no_grad():
        task.parameters()[0].copy_(torch.from_numpy(value))


def loss_and_gradient(task, value: np.ndarray, batch):
    set_parameter(task, value)
    (p,) = task.parameters()
    p.grad = None
    loss = task.loss(batch)
    loss.backward()
    return loss.item(), p.grad.numpy().copy()


# --- registry ---------------------------------------------------------------------------------


def test_available_lists_the_four_paper_tasks():
    assert tasks.available() == ["noisy_bowl", "rosenbrock", "image_generation", "resnet18_cifar10"]


def test_unknown_task_name_raises_listing_the_valid_names():
    with pytest.raises(ValueError, match="noisy_bowl.*rosenbrock.*image_generation.*resnet18_cifar10"):
        tasks.create("noisy_bowel")


def test_unknown_task_option_raises_listing_the_valid_options():
    with pytest.raises(ValueError, match="noise_var.*valid: noise_variance, dim"):
        tasks.create("noisy_bowl", noise_var=2.0)


def test_create_passes_seed_and_options_to_the_task():
    task = tasks.create("noisy_bowl", seed=7, noise_variance=2.0, dim=10)
    assert isinstance(task, tasks.Task) and isinstance(task, NoisyBowl)
    assert (task.seed, task.noise_variance, task.dim) == (7, 2.0, 10)
    assert isinstance(tasks.create("rosenbrock"), Rosenbrock)


def test_creating_a_small_task_does_not_import_the_image_tasks():
    code = (
        "import sys, tasks; tasks.create('noisy_bowl'); tasks.create('rosenbrock');"
        "heavy = [m for m in ('tasks.image_generation', 'tasks.resnet18_cifar10', 'torchvision') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "options, field",
    [({"dim": 0}, "dim"), ({"dim": 2.5}, "dim"), ({"noise_variance": -1.0}, "noise_variance"),
     ({"noise_variance": math.nan}, "noise_variance")],
)
def test_invalid_noisy_bowl_options_raise_naming_the_field(options, field):
    with pytest.raises(ValueError, match=f"Invalid {field}"):
        NoisyBowl(**options)


# --- noisy bowl -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bowl():
    return NoisyBowl(seed=3)


def test_noisy_bowl_is_float64_and_starts_at_the_origin():
    task = NoisyBowl(seed=1)
    (x,) = task.parameters()
    assert x.dtype == torch.float64 and x.requires_grad and x.is_leaf
    assert x.shape == (100,) and torch.all(x == 0)


def test_noisy_bowl_hessian_eigenvalues_are_the_geometric_sequence(bowl):
    expected = 0.001 * (1000.0 ** (np.arange(100) / 99))  # 0.001 ... 1, constant ratio
    eigenvalues = np.linalg.eigvalsh(bowl.hessian.numpy())
    np.testing.assert_allclose(eigenvalues, expected, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(bowl.hessian.numpy(), bowl.hessian.numpy().T, atol=0)


def test_noisy_bowl_eigenvectors_are_orthogonal_and_diagonalise_h(bowl):
    u, h = bowl.eigenvectors.numpy(), bowl.hessian.numpy()
    np.testing.assert_allclose(u.T @ u, np.eye(100), atol=1e-12)
    d = u.T @ h @ u
    np.testing.assert_allclose(np.diag(d), np.geomspace(1e-3, 1.0, 100), rtol=1e-9)
    np.testing.assert_allclose(d - np.diag(np.diag(d)), 0.0, atol=1e-12)


def test_noisy_bowl_eigenvectors_are_not_aligned_with_the_axes(bowl):
    # A uniformly random orthogonal U spreads every column: max |U_ij| ~ sqrt(2 ln n / n) ≈ 0.3.
    assert np.abs(bowl.eigenvectors.numpy()).max() < 0.6


def test_newton_loss_is_half_the_trace_of_h_in_closed_form():
    ratio = 1000.0 ** (1 / 99)
    geometric_sum = 0.001 * (ratio**100 - 1) / (ratio - 1)  # Σ_k 0.001·r^k
    assert 0.5 * geometric_sum == pytest.approx(7.412, abs=5e-4)
    for v in (1.0, 2.5):
        task = NoisyBowl(seed=0, noise_variance=v)
        assert task.info()["newton_loss"] == pytest.approx(0.5 * v * geometric_sum, rel=1e-12)
        assert task.info()["newton_loss"] == pytest.approx(0.5 * v * np.trace(task.hessian.numpy()), rel=1e-12)


def test_noisy_bowl_loss_is_the_quadratic_form_around_the_centre(bowl):
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=100), rng.normal(size=100)
    h = bowl.hessian.numpy()
    loss, _ = loss_and_gradient(bowl, x, torch.from_numpy(c))
    assert loss == pytest.approx(0.5 * (x - c) @ h @ (x - c), rel=1e-12)


def test_noisy_bowl_gradient_matches_finite_differences(bowl):
    rng = np.random.default_rng(1)
    x, c = rng.normal(size=100), torch.from_numpy(rng.normal(size=100))
    _, grad = loss_and_gradient(bowl, x, c)
    reference = finite_difference_gradient(lambda z: loss_and_gradient(bowl, z, c)[0], x)
    np.testing.assert_allclose(grad, reference, rtol=1e-6, atol=1e-8)


def test_noisy_bowl_centre_random_walk_variance_grows_by_v_per_sample():
    v, samples, seeds = 2.5, 40, 25
    increments, finals = [], []
    for seed in range(seeds):
        task = NoisyBowl(seed=seed, noise_variance=v)
        previous = np.zeros(100)
        for _ in range(samples):
            centre = task.sample().numpy().copy()
            increments.append(centre - previous)
            previous = centre
        finals.append(previous)
    increments = np.array(increments)  # (seeds·samples, 100), iid N(0, v) if a random walk
    # 100k increments: the variance estimate has relative std sqrt(2/100k) ≈ 0.45 %.
    assert increments.mean() == pytest.approx(0.0, abs=5 * math.sqrt(v / increments.size))
    assert increments.var() == pytest.approx(v, rel=0.025)
    lag1 = np.mean(increments[1:] * increments[:-1]) / v  # successive steps independent
    assert abs(lag1) < 5 / math.sqrt(increments.size)
    # After t samples each coordinate of c is N(0, t·v): 2500 values, relative std ≈ 2.8 %.
    assert np.var(np.array(finals)) == pytest.approx(samples * v, rel=0.15)


def test_two_losses_on_the_same_sample_see_the_same_centre():
    task = NoisyBowl(seed=5)
    first = task.sample()
    centre = first.numpy().copy()
    loss_a = task.loss(first).item()
    loss_b = task.loss(first).item()
    second = task.sample()
    assert loss_a == loss_b
    np.testing.assert_array_equal(first.numpy(), centre)  # the batch is not mutated by the next sample
    assert not np.array_equal(second.numpy(), centre)
    assert loss_a == pytest.approx(0.5 * centre @ task.hessian.numpy() @ centre, rel=1e-12)


def test_noisy_bowl_same_seed_is_identical_and_different_seed_differs():
    a, b, c = NoisyBowl(seed=11), NoisyBowl(seed=11), NoisyBowl(seed=12)
    assert torch.equal(a.hessian, b.hessian) and not torch.equal(a.hessian, c.hessian)
    centres = [[t.sample().clone() for _ in range(5)] for t in (a, b, c)]
    assert all(torch.equal(p, q) for p, q in zip(centres[0], centres[1]))
    assert not any(torch.equal(p, q) for p, q in zip(centres[0], centres[2]))


def test_noisy_bowl_does_not_touch_the_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    task = NoisyBowl(seed=1)
    task.sample()
    task.hessian_error(lambda v: v)
    assert torch.equal(torch.rand(3), expected)


def test_noisy_bowl_resume_from_state_dict_is_bit_identical():
    def advance(task, steps):
        (x,) = task.parameters()
        out = []
        for _ in range(steps):
            batch = task.sample()
            x.grad = None
            loss = task.loss(batch)
            loss.backward()
            with torch.no_grad():
                x.sub_(0.5 * x.grad)
            out.append(loss.item())
        return out

    task = NoisyBowl(seed=2)
    advance(task, 10)
    state = task.state_dict()
    continued = advance(task, 10)
    fresh = NoisyBowl(seed=2)
    fresh.load_state_dict(state)
    assert advance(fresh, 10) == continued


# --- σ, the Hessian-approximation error -------------------------------------------------------


def exact_sigma_and_probe_std(g: np.ndarray, h: np.ndarray, num_probes: int):
    """σ = ‖I − GH‖_F/√n and the standard deviation of the probe estimate of σ².

    For v uniform on the unit sphere and M = AᵀA, A = I − GH:
    E[vᵀMv] = tr M / n and Var[vᵀMv] = 2/(n + 2) · (tr(M²)/n − (tr M / n)²).
    """
    n = len(h)
    a = np.eye(n) - g @ h
    m = a.T @ a
    mean = np.trace(m) / n
    var = 2.0 / (n + 2) * (np.trace(m @ m) / n - mean**2)
    return math.sqrt(mean), math.sqrt(var / num_probes)


def test_hessian_error_is_one_for_g_zero_and_zero_for_the_inverse_hessian(bowl):
    assert bowl.hessian_error(lambda v: torch.zeros_like(v)) == pytest.approx(1.0, abs=1e-12)
    h_inv = torch.linalg.inv(bowl.hessian)
    assert bowl.hessian_error(lambda v: v @ h_inv) < 1e-8


@pytest.mark.parametrize("scale", [1.0, 10.0])
@pytest.mark.parametrize("num_probes", [100, 20_000])
def test_hessian_error_matches_the_dense_frobenius_norm(bowl, num_probes, scale):
    rng = np.random.default_rng(4)
    s = rng.normal(size=(100, 100))
    g = scale * (s + s.T) / math.sqrt(2 * 100)  # a random symmetric G (semicircle of radius ~2·scale)
    sigma, probe_std = exact_sigma_and_probe_std(g, bowl.hessian.numpy(), num_probes)
    estimate = bowl.hessian_error(lambda v: v @ torch.from_numpy(g), num_probes=num_probes)
    assert estimate**2 == pytest.approx(sigma**2, abs=5 * probe_std)
    if num_probes == 20_000:
        assert estimate == pytest.approx(sigma, rel=0.01)


def test_hessian_error_uses_fixed_probes_independent_of_the_noise(bowl):
    g = lambda v: 0.5 * v  # noqa: E731
    before = bowl.hessian_error(g)
    for _ in range(3):
        bowl.sample()
    assert bowl.hessian_error(g) == before
    assert NoisyBowl(seed=3).hessian_error(g) == before
    # ...and measuring σ does not shift the noise stream.
    a, b = NoisyBowl(seed=9), NoisyBowl(seed=9)
    a.hessian_error(g, num_probes=7)
    assert torch.equal(a.sample(), b.sample())


def test_hessian_error_rejects_an_invalid_probe_count(bowl):
    with pytest.raises(ValueError, match="Invalid num_probes: 0"):
        bowl.hessian_error(lambda v: v, num_probes=0)


# --- Rosenbrock -------------------------------------------------------------------------------


def rosenbrock_reference(p):
    x, y = p
    return 0.01 * (x - 1) ** 2 + (x**2 - y) ** 2


def test_rosenbrock_starts_at_minus_half_two_with_the_closed_form_loss():
    task = Rosenbrock()
    (xy,) = task.parameters()
    assert xy.dtype == torch.float64 and xy.requires_grad and xy.is_leaf
    assert xy.tolist() == [-0.5, 2.0]
    assert task.sample() is None
    loss = task.loss(None)
    loss.backward()
    assert loss.item() == pytest.approx(0.01 * 1.5**2 + (0.25 - 2.0) ** 2, rel=1e-15)  # 3.085
    # ∂f/∂x = 0.02(x − 1) + 4x(x² − y) = 3.47, ∂f/∂y = −2(x² − y) = 3.5
    np.testing.assert_allclose(xy.grad.numpy(), [3.47, 3.5], rtol=1e-14)


def test_rosenbrock_gradient_matches_finite_differences():
    task = Rosenbrock()
    for point in ([-0.5, 2.0], [0.3, -1.2], [1.7, 2.9], [-1.1, 0.4]):
        point = np.array(point)
        loss, grad = loss_and_gradient(task, point, None)
        assert loss == pytest.approx(rosenbrock_reference(point), rel=1e-14)
        np.testing.assert_allclose(grad, finite_difference_gradient(rosenbrock_reference, point), rtol=1e-7)


def test_rosenbrock_global_minimum_is_at_one_one():
    task = Rosenbrock()
    loss, grad = loss_and_gradient(task, np.array([1.0, 1.0]), None)
    assert loss == 0.0 and np.all(grad == 0.0)
    # f ≥ 0 everywhere, and nearby points are strictly worse.
    for dx, dy in [(1e-3, 0), (-1e-3, 0), (0, 1e-3), (0, -1e-3), (1e-3, 2e-3)]:
        assert loss_and_gradient(task, np.array([1.0 + dx, 1.0 + dy]), None)[0] > 0.0


def test_rosenbrock_report_window_is_the_last_20_of_200_evaluations():
    from tuner.driver.schedule import load_schedule

    steps = load_schedule("rosenbrock").full_run.steps
    start, stop = Rosenbrock.report_window
    assert steps == 200 and (start, stop) == (180, 200) and stop - start == steps // 10


def test_rosenbrock_is_deterministic_and_resumes_from_state_dict():
    a, b = Rosenbrock(seed=0), Rosenbrock(seed=5)
    assert torch.equal(a.parameters()[0], b.parameters()[0])
    set_parameter(a, np.array([0.25, 0.75]))
    b.load_state_dict(a.state_dict())
    assert b.loss(None).item() == a.loss(None).item() == rosenbrock_reference([0.25, 0.75])
