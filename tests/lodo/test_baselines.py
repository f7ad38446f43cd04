"""The baseline optimizers (docs/paper.md §2) against hand-computed updates and independent references."""
import copy
import math

import numpy as np
import pytest
import torch

import lodo
from lodo.lbfgs import two_loop
from lodo.second_order import hessian

# The step protocol's backward(create_graph=True) (ARCHITECTURE.md); hessian() detaches .grad after use.
pytestmark = pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True:UserWarning")


def _param(values):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def _step_with_grad(opt, p, grad):
    p.grad = torch.tensor(grad, dtype=torch.float64)
    opt.step()


# ---- first-order methods: two steps with given gradients, hand arithmetic -------------------

def test_adam_first_two_steps_are_bias_corrected_with_eps_1e7():
    lr, b1, b2, eps = 0.1, 0.8, 0.9, 1e-7
    x = _param([1.0])
    opt = lodo.create("Adam", [x], lr=lr, beta1=b1, beta2=b2)
    _step_with_grad(opt, x, [2.0])
    # step 1: m̂ = g, v̂ = g² → x = 1 − 0.1·2/(2 + 1e-7)
    x1 = 1.0 - lr * 2.0 / (2.0 + eps)
    assert x.item() == pytest.approx(x1, abs=1e-15)
    _step_with_grad(opt, x, [-1.0])
    m = b1 * (1 - b1) * 2.0 + (1 - b1) * -1.0
    v = b2 * (1 - b2) * 4.0 + (1 - b2) * 1.0
    m_hat, v_hat = m / (1 - b1**2), v / (1 - b2**2)
    assert x.item() == pytest.approx(x1 - lr * m_hat / (math.sqrt(v_hat) + eps), abs=1e-14)


def test_momentum_is_heavy_ball():
    x = _param([1.0, -1.0])
    opt = lodo.create("Momentum", [x], lr=0.5, momentum=0.25)
    _step_with_grad(opt, x, [1.0, 2.0])  # v = g; x −= lr·v
    _step_with_grad(opt, x, [3.0, -1.0])  # v = 0.25·v + g
    expected = [1.0 - 0.5 * 1.0 - 0.5 * (0.25 * 1.0 + 3.0), -1.0 - 0.5 * 2.0 - 0.5 * (0.25 * 2.0 - 1.0)]
    assert x.tolist() == pytest.approx(expected, abs=1e-15)


def test_rmsprop_with_momentum_first_two_steps():
    lr, rho, mu, eps = 0.1, 0.5, 0.3, 1e-7
    x = _param([0.0])
    opt = lodo.create("RMSprop", [x], lr=lr, rho=rho, momentum=mu)
    _step_with_grad(opt, x, [2.0])
    v1 = (1 - rho) * 4.0
    b1 = 2.0 / (math.sqrt(v1) + eps)
    _step_with_grad(opt, x, [1.0])
    v2 = rho * v1 + (1 - rho) * 1.0
    b2 = mu * b1 + 1.0 / (math.sqrt(v2) + eps)
    assert x.item() == pytest.approx(-lr * b1 - lr * b2, abs=1e-14)


def test_yogi_has_additive_sign_update_and_no_bias_correction():
    lr, b1, b2 = 0.5, 0.9, 0.99
    x = _param([0.0, 0.0])
    opt = lodo.create("Yogi", [x], lr=lr, beta1=b1, beta2=b2)
    _step_with_grad(opt, x, [2.0, 0.1])
    # v0 = 0 < g² → v = (1 − β2)·g²
    m = [(1 - b1) * 2.0, (1 - b1) * 0.1]
    v = [(1 - b2) * 4.0, (1 - b2) * 0.01]
    x1 = [-lr * m[i] / (math.sqrt(v[i]) + 1e-3) for i in range(2)]
    assert x.tolist() == pytest.approx(x1, abs=1e-14)
    _step_with_grad(opt, x, [0.1, 0.05])
    # coordinate 0: v = 0.04 > g² = 0.01 → v shrinks by (1 − β2)·g²; coordinate 1: v = 1e-4 < 0.0025 → grows
    g = [0.1, 0.05]
    m = [b1 * m[i] + (1 - b1) * g[i] for i in range(2)]
    v = [v[0] - (1 - b2) * g[0] ** 2, v[1] + (1 - b2) * g[1] ** 2]
    x2 = [x1[i] - lr * m[i] / (math.sqrt(v[i]) + 1e-3) for i in range(2)]
    assert x.tolist() == pytest.approx(x2, abs=1e-14)


def test_lars_trust_ratio_momentum_and_polynomial_decay():
    lr, mu, wd = 0.1, 0.5, 0.1
    w = _param([3.0, 4.0])  # ‖w‖ = 5
    opt = lodo.create("LARS", [w], lr=lr, momentum=mu, weight_decay=wd, total_steps=4)
    _step_with_grad(opt, w, [0.6, 0.8])  # ‖g‖ = 1 → local = 5 / (1 + 0.5); progress 0
    local = 5.0 / 1.5
    v = [lr * local * (0.6 + wd * 3.0), lr * local * (0.8 + wd * 4.0)]
    w1 = [3.0 - v[0], 4.0 - v[1]]
    assert w.tolist() == pytest.approx(w1, abs=1e-14)
    _step_with_grad(opt, w, [0.0, 2.0])  # progress = 1/4 → factor (3/4)²
    local = math.hypot(*w1) / (2.0 + wd * math.hypot(*w1))
    g = [0.0, 2.0]
    v = [mu * v[i] + lr * 0.75**2 * local * (g[i] + wd * w1[i]) for i in range(2)]
    assert w.tolist() == pytest.approx([w1[0] - v[0], w1[1] - v[1]], abs=1e-14)


def test_lars_uses_trust_ratio_one_for_a_zero_tensor():
    b = _param([0.0, 0.0])
    opt = lodo.create("LARS", [b], lr=0.1, momentum=0.0, weight_decay=0.0)
    _step_with_grad(opt, b, [1.0, -2.0])
    assert b.tolist() == pytest.approx([-0.1, 0.2], abs=1e-15)


def test_lars_without_total_steps_does_not_decay():
    w = _param([1.0])
    opt = lodo.create("LARS", [w], lr=0.1, momentum=0.0, weight_decay=0.0)
    for _ in range(3):
        before = w.item()
        _step_with_grad(opt, w, [1.0])  # local = |w| / 1
        assert w.item() == pytest.approx(before - 0.1 * abs(before), abs=1e-15)


# ---- L-BFGS family ----------------------------------------------------------------------------

def _dense_lbfgs_inverse(pairs, gamma, n):
    """B from B0 = γI by the BFGS inverse update, oldest pair first: B ← VᵀBV + ρ s sᵀ, V = I − ρ y sᵀ."""
    B = gamma * np.eye(n)
    for s, y in pairs:
        rho = 1.0 / (s @ y)
        V = np.eye(n) - rho * np.outer(y, s)
        B = V.T @ B @ V + rho * np.outer(s, s)
    return B


def test_two_loop_equals_dense_inverse_hessian_product():
    rng = np.random.default_rng(0)
    n, m = 7, 5
    M = rng.standard_normal((n, n))
    A = M @ M.T + n * np.eye(n)  # SPD, so every sᵀy = sᵀAs > 0
    pairs = [(s, A @ s + 0.1 * rng.standard_normal(n)) for s in rng.standard_normal((m, n))]
    assert all(s @ y > 0 for s, y in pairs)
    g = rng.standard_normal(n)
    gamma = 0.37
    expected = _dense_lbfgs_inverse(pairs, gamma, n) @ g
    S = torch.tensor(np.array([s for s, _ in pairs]))
    Y = torch.tensor(np.array([y for _, y in pairs]))
    got = two_loop(torch.tensor(g), S, Y, torch.tensor(gamma, dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


def _quadratic_closure(x, A, counter):
    At = torch.tensor(A)

    def closure():
        x.grad = None
        loss = 0.5 * x @ (At @ x)
        loss.backward()
        counter.append(loss.item())
        return loss

    return closure


@pytest.mark.parametrize("name", ["L-BFGS", "O-LBFGS"])
def test_lbfgs_iterations_match_schraudolph_algorithm(name):
    """Three iterations on f = ½xᵀAx, replayed with dense matrices: first step −1e-10·g, then
    s = −lr·tau/(tau + t)·B g with γ = newest (L-BFGS) or mean (O-LBFGS) of sᵀy/yᵀy; y on the same sample."""
    A = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.3]])
    x0 = np.array([1.0, -2.0, 0.5])
    lr, tau = 0.7, 3.0
    x = torch.tensor(x0, requires_grad=True)
    evaluations = []
    opt = lodo.create(name, [x], lr=lr, tau=tau)
    closure = _quadratic_closure(x, A, evaluations)

    ref, pairs = x0.copy(), []
    for t in range(3):
        opt.step(closure)
        g = A @ ref
        if not pairs:
            s = -1e-10 * g
        else:
            ratios = [si @ yi / (yi @ yi) for si, yi in pairs]
            gamma = ratios[-1] if name == "L-BFGS" else np.mean(ratios)
            s = -lr * tau / (tau + t) * _dense_lbfgs_inverse(pairs, gamma, 3) @ g
        pairs.append((s, A @ (ref + s) - g))
        ref = ref + s
        np.testing.assert_allclose(x.detach().numpy(), ref, rtol=1e-12, atol=1e-15)
    assert len(evaluations) == 6  # two evaluations per iteration


def test_olbfgs_scaling_is_the_memory_mean_and_lbfgs_the_newest_pair():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([[2.0, 0.0], [0.0, 4.0], [1.0, 0.0]], dtype=torch.float64)
    # sᵢᵀyᵢ / yᵢᵀyᵢ = 2/4, 4/16, 1/1
    x = _param([0.0, 0.0])
    assert lodo.OLBFGS([x]).initial_scaling(s, y).item() == pytest.approx((0.5 + 0.25 + 1.0) / 3)
    assert lodo.LBFGS([x]).initial_scaling(s, y).item() == pytest.approx(1.0)


def test_lbfgs_keeps_only_the_last_memory_pairs():
    A = np.diag([1.0, 2.0, 3.0])
    x = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt = lodo.LBFGS([x], lr=0.1, tau=1e4, memory=2)
    closure = _quadratic_closure(x, A, [])
    for _ in range(5):
        opt.step(closure)
    assert opt.state[x]["s"].shape == (2, 3)


def test_bfgs_first_two_steps_use_the_dense_inverse_update():
    A = np.array([[3.0, 1.0], [1.0, 2.0]])
    x0 = np.array([1.0, 1.0])
    lr, h0 = 0.1, 2.0
    x = torch.tensor(x0, requires_grad=True)
    opt = lodo.create("BFGS", [x], lr=lr, h0_scale=h0)
    closure = _quadratic_closure(x, A, [])
    opt.step(closure)
    g0 = A @ x0
    x1 = x0 - lr * h0 * g0
    np.testing.assert_allclose(x.detach().numpy(), x1, rtol=1e-14)
    opt.step(closure)
    g1 = A @ x1
    s, y = x1 - x0, g1 - g0
    rho = 1.0 / (s @ y)
    V = np.eye(2) - rho * np.outer(y, s)
    B1 = V.T @ (h0 * np.eye(2)) @ V + rho * np.outer(s, s)
    np.testing.assert_allclose(x.detach().numpy(), x1 - lr * B1 @ g1, rtol=1e-13)


# ---- exact-Hessian methods ----------------------------------------------------------------------

def _quartic(z):
    """f(z) = Σ z⁴/4 + z0·z1 + ½·z2²·z0; analytic gradient and Hessian below."""
    return (z**4).sum() / 4 + z[0] * z[1] + 0.5 * z[2] ** 2 * z[0]


def _quartic_grad_hess(z):
    a, b, c = z
    g = np.array([a**3 + b + 0.5 * c**2, b**3 + a, c**3 + c * a])
    H = np.array([[3 * a**2, 1.0, c], [1.0, 3 * b**2, 0.0], [c, 0.0, 3 * c**2 + a]])
    return g, H


def _split_params(z0):
    """The flat vector z as two parameter tensors, to exercise the flattening."""
    return [torch.tensor(z0[:2], requires_grad=True), torch.tensor(z0[2:], requires_grad=True)]


def _graph_closure(params):
    def closure():
        for p in params:
            p.grad = None
        loss = _quartic(torch.cat(params))
        loss.backward(create_graph=True)
        return loss

    return closure


def test_hessian_by_batched_double_backward_matches_analytic():
    z0 = np.array([0.7, -1.3, 0.4])
    params = _split_params(z0)
    _graph_closure(params)()
    g, H = hessian(params)
    g_ref, H_ref = _quartic_grad_hess(z0)
    np.testing.assert_allclose(g.numpy(), g_ref, rtol=1e-14)
    np.testing.assert_allclose(H.numpy(), H_ref, rtol=1e-14)
    assert all(p.grad.grad_fn is None for p in params)  # graph released


def test_hessian_has_zero_rows_for_a_parameter_the_gradient_does_not_depend_on():
    a = _param([1.0, 2.0])
    c = _param([5.0])
    loss = (a**3).sum() + 2.0 * c.sum()  # ∂²/∂c² = 0 and ∂²/∂a∂c = 0; c.grad = 2 has no graph
    loss.backward(create_graph=True)
    g, H = hessian([a, c])
    np.testing.assert_allclose(g.numpy(), [3.0, 12.0, 2.0])
    np.testing.assert_allclose(H.numpy(), [[6.0, 0.0, 0.0], [0.0, 12.0, 0.0], [0.0, 0.0, 0.0]])


def test_newton_step_is_minus_inverse_hessian_times_gradient():
    z0 = np.array([0.7, -1.3, 0.4])
    params = _split_params(z0)
    opt = lodo.create("Newton", params)
    assert opt.create_graph and opt.requires_closure
    opt.step(_graph_closure(params))
    g, H = _quartic_grad_hess(z0)
    np.testing.assert_allclose(torch.cat(params).detach().numpy(), z0 - np.linalg.solve(H, g), rtol=1e-12)


def test_levenberg_marquardt_step_damps_by_diagonal_of_h_squared():
    z0 = np.array([0.7, -1.3, 0.4])
    lam = 0.3
    params = _split_params(z0)
    opt = lodo.create("Levenberg-Marquardt", params, damping=lam)
    opt.step(_graph_closure(params))
    g, H = _quartic_grad_hess(z0)
    H2 = H @ H
    expected = z0 - np.linalg.solve(H2 + lam * np.diag(np.diag(H2)), H @ g)
    np.testing.assert_allclose(torch.cat(params).detach().numpy(), expected, rtol=1e-12)


def test_second_order_methods_reject_a_closure_without_graph():
    x = _param([1.0, 2.0])

    def closure():
        x.grad = None
        loss = (x**4).sum()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="create_graph=True"):
        lodo.Newton([x]).step(closure)


# ---- state_dict round trip and validation ------------------------------------------------------

BASELINES = ["Adam", "Momentum", "RMSprop", "Yogi", "LARS", "L-BFGS", "O-LBFGS", "BFGS",
             "Levenberg-Marquardt", "Newton"]
SMALL_HPARAMS = {"Adam": {"lr": 0.05}, "Momentum": {"lr": 0.05, "momentum": 0.5}, "RMSprop": {"lr": 0.01, "momentum": 0.5},
                 "Yogi": {"lr": 0.05}, "LARS": {"lr": 0.05, "total_steps": 20}, "L-BFGS": {"lr": 0.5},
                 "O-LBFGS": {"lr": 0.5}, "BFGS": {"lr": 0.05}, "Levenberg-Marquardt": {"damping": 0.1}, "Newton": {}}


def _noisy_run(opt, params, steps, generator):
    """Steps on a noisy quartic bowl; the noise comes from `generator` (saved with the state)."""
    create_graph = getattr(opt, "create_graph", False)
    for _ in range(steps):
        shift = torch.randn(5, generator=generator, dtype=torch.float64)

        def closure():
            opt.zero_grad()
            z = torch.cat([p.reshape(-1) for p in params]) - shift
            loss = (z**2).sum() + 0.1 * (z**4).sum()
            loss.backward(create_graph=create_graph)
            return loss

        opt.step(closure)
    opt.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", BASELINES)
def test_state_dict_resumes_bit_identically(name):
    def fresh():
        return [torch.linspace(-1, 1, 3, dtype=torch.float64).requires_grad_(),
                torch.tensor([[0.5, -0.5]], dtype=torch.float64, requires_grad=True)]

    params = fresh()
    opt = lodo.create(name, params, **SMALL_HPARAMS[name])
    gen = torch.Generator().manual_seed(0)
    _noisy_run(opt, params, 6, gen)
    saved_state = copy.deepcopy(opt.state_dict())
    saved_params = [p.detach().clone() for p in params]
    saved_gen = gen.get_state()
    _noisy_run(opt, params, 6, gen)
    reference = torch.cat([p.detach().reshape(-1) for p in params])

    params2 = fresh()
    with torch.no_grad():
        for p, v in zip(params2, saved_params):
            p.copy_(v)
    opt2 = lodo.create(name, params2, **SMALL_HPARAMS[name])
    opt2.load_state_dict(saved_state)
    gen.set_state(saved_gen)
    _noisy_run(opt2, params2, 6, gen)
    resumed = torch.cat([p.detach().reshape(-1) for p in params2])
    assert torch.isfinite(reference).all()
    assert torch.equal(resumed, reference)


@pytest.mark.parametrize("name, hparam, value, message", [
    ("Adam", "lr", -1.0, r"Invalid lr: -1.0 \(must be > 0\)"),
    ("Adam", "beta1", 1.0, r"Invalid beta1: 1.0 \(must be in \[0, 1\)\)"),
    ("Adam", "beta2", -0.1, r"Invalid beta2: -0.1"),
    ("Momentum", "momentum", 1.5, r"Invalid momentum: 1.5"),
    ("RMSprop", "rho", 1.0, r"Invalid rho: 1.0"),
    ("RMSprop", "momentum", -0.5, r"Invalid momentum: -0.5"),
    ("Yogi", "beta2", 1.0, r"Invalid beta2: 1.0"),
    ("Yogi", "lr", 0.0, r"Invalid lr: 0.0"),
    ("LARS", "weight_decay", -1e-4, r"Invalid weight_decay: -0.0001"),
    ("LARS", "total_steps", 0, r"Invalid total_steps: 0"),
    ("L-BFGS", "tau", 0.0, r"Invalid tau: 0.0"),
    ("O-LBFGS", "lr", float("nan"), r"Invalid lr: nan"),
    ("BFGS", "h0_scale", -1.0, r"Invalid h0_scale: -1.0"),
    ("Levenberg-Marquardt", "damping", 0.0, r"Invalid damping: 0.0"),
])
def test_invalid_hyperparameter_is_named_in_the_error(name, hparam, value, message):
    with pytest.raises(ValueError, match=message):
        lodo.create(name, [_param([1.0])], **{hparam: value})


def test_flat_vector_methods_reject_several_param_groups():
    groups = [{"params": [_param([1.0])]}, {"params": [_param([2.0])]}]
    with pytest.raises(ValueError, match="Invalid param_groups: 2"):
        lodo.LBFGS(groups)
