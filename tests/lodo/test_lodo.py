"""LODO and its ablations against independent references: dense matrices built from θ and the
permutations, autograd through an explicitly unrolled step, torch.optim.Adam/SGD as the
meta-optimizer, and hand-computed first steps."""
from __future__ import annotations

import copy
import io
import subprocess
import sys
import textwrap

import pytest
import torch

from lodo.lodo import LODO, LODODiagonal, LODOGlobal, LODONoMomentum, LODOResiduals, LODOSGD, hidden_width

DT = torch.float64
ALL = [LODO, LODODiagonal, LODOGlobal, LODOResiduals, LODONoMomentum, LODOSGD]


# ---------------------------------------------------------------------------- independent references
def dense_lodo_G(theta, perms, n, lr):
    """α0 Eᵀ G̃ᵀ G̃ E with G̃ = Π B_i P_i as dense matrices (layer 1 applied first)."""
    width = perms.shape[1]
    eye = torch.eye(width, dtype=theta.dtype)
    g_tilde = eye
    for i in range(perms.shape[0]):
        g_tilde = torch.block_diag(*theta[i]) @ eye[perms[i]] @ g_tilde
    e = eye[:, :n]
    return lr * e.T @ g_tilde.T @ g_tilde @ e


def dense_residuals_G(theta, perms, n, lr):
    depth, width = perms.shape
    w, d = theta[: depth * width].view(depth, width), theta[depth * width:]
    eye = torch.eye(width, dtype=theta.dtype)
    g_tilde = eye
    for i in range(depth):
        g_tilde = (eye + torch.diag(w[i]) @ eye[perms[i]]) @ g_tilde
    e = eye[:, :n]
    return lr * e.T @ g_tilde.T @ torch.diag(d) @ g_tilde @ e


def dense_G(opt, theta, lr):
    n = state_of(opt)["momentum"].numel()
    if isinstance(opt, LODODiagonal):
        return lr * torch.diag(theta)
    if isinstance(opt, LODOGlobal):
        return lr * theta * torch.eye(n, dtype=theta.dtype)
    perms = state_of(opt)["permutations"]
    if isinstance(opt, LODOResiduals):
        return dense_residuals_G(theta, perms, n, lr)
    return dense_lodo_G(theta, perms, n, lr)


def quadratic(n, seed):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    h = (q * torch.logspace(-1, 0, n, dtype=DT)) @ q.T
    return 0.5 * (h + h.T), g


def make(cls, n, seed=0, **kw):
    kw = {"lr": 0.8, "meta_lr": 0.01, **kw}
    if cls is LODONoMomentum:
        kw.pop("beta", None)
    x = torch.zeros(n, dtype=DT, requires_grad=True)
    return x, cls([x], seed=seed, **kw)


def state_of(opt):
    return opt.state[opt.param_groups[0]["params"][0]]


def snapshot(opt):
    return {key: value.clone() for key, value in state_of(opt).items() if isinstance(value, torch.Tensor)}


def hypergradient_taken(opt, before):
    """The ∇θ of the meta-step just taken, read back from the state: from Adam's first moment,
    μ_s = 0.9 μ_{s−1} + 0.1 h, or for LODO-SGD from θ_s = θ_{s−1} − meta_lr h."""
    after = state_of(opt)
    if isinstance(opt, LODOSGD):
        return (before["theta"] - after["theta"]) / opt.param_groups[0]["meta_lr"]
    return (after["meta_exp_avg"] - 0.9 * before["meta_exp_avg"]) / 0.1


# ---------------------------------------------------------------------------- 1, 5: initialisation
@pytest.mark.parametrize("n", [1, 2, 3, 100, 1000])
def test_initial_preconditioner_is_lr_times_identity(n):
    x = torch.zeros(n, dtype=DT, requires_grad=True)
    opt = LODO([x], lr=0.7, seed=n)
    v = torch.eye(n, dtype=DT) if n <= 100 else torch.randn(8, n, dtype=DT)
    torch.testing.assert_close(opt.preconditioner(v), 0.7 * v, rtol=0, atol=1e-12)
    torch.testing.assert_close(opt.preconditioner(v[0]), 0.7 * v[0], rtol=0, atol=1e-12)


def test_hidden_width_follows_the_spec():
    assert [hidden_width(n, 4) for n in (1, 2, 3, 5, 100, 94696)] == [4, 4, 4, 8, 200, 189392]
    assert hidden_width(1, 3) == 3  # floor(2/3)·3 = 0 < 1 → smallest multiple of 3 ≥ 2


@pytest.mark.parametrize("cls", [LODODiagonal, LODOGlobal])
def test_diagonal_and_global_start_at_lr_times_identity(cls):
    x, opt = make(cls, 5, lr=0.3)
    torch.testing.assert_close(opt.preconditioner(torch.eye(5, dtype=DT)), 0.3 * torch.eye(5, dtype=DT), rtol=0, atol=0)
    assert torch.equal(state_of(opt)["theta"], torch.ones(5 if cls is LODODiagonal else 1, dtype=DT))


def test_residuals_start_with_unit_D_and_weights_of_variance_one_over_depth():
    x = torch.zeros(200, dtype=DT, requires_grad=True)
    opt = LODOResiduals([x], seed=0)
    theta, perms = state_of(opt)["theta"], state_of(opt)["permutations"]
    assert perms.shape == (64, 400)
    w, d = theta[: 64 * 400], theta[64 * 400:]
    assert torch.equal(d, torch.ones(400, dtype=DT))
    assert abs(w.mean().item()) < 0.01 and abs(w.var().item() * 64 - 1) < 0.05
    small = torch.zeros(6, dtype=DT, requires_grad=True)
    opt = LODOResiduals([small], lr=0.4, seed=1)
    torch.testing.assert_close(opt.preconditioner(torch.eye(6, dtype=DT)),
                               dense_G(opt, state_of(opt)["theta"], 0.4), rtol=1e-12, atol=1e-12)


def test_permutations_and_blocks_come_from_the_seed():
    a, b, c = (make(LODO, 10, seed=s)[1] for s in (3, 3, 4))
    assert torch.equal(state_of(a)["theta"], state_of(b)["theta"])
    assert torch.equal(state_of(a)["permutations"], state_of(b)["permutations"])
    assert not torch.equal(state_of(a)["permutations"], state_of(c)["permutations"])
    torch.manual_seed(0)
    d = make(LODO, 10, seed=None)[1]
    torch.manual_seed(0)
    e = make(LODO, 10, seed=None)[1]
    assert torch.equal(state_of(d)["permutations"], state_of(e)["permutations"])


# ---------------------------------------------------------------------------- 2: symmetric PSD
@pytest.mark.parametrize("cls", [LODO, LODOResiduals])
def test_preconditioner_stays_symmetric_psd_while_learning(cls):
    n = 12
    h, gen = quadratic(n, 1)
    x, opt = make(cls, n, meta_lr=0.01)
    for _ in range(60):
        c = torch.randn(n, generator=gen, dtype=DT)
        opt.zero_grad()
        (0.5 * (x - c) @ h @ (x - c)).backward()
        opt.step()
    g = opt.preconditioner(torch.eye(n, dtype=DT))
    assert (g - 0.8 * torch.eye(n, dtype=DT)).abs().max() > 1e-3  # θ has moved
    scale = g.abs().max().item()
    torch.testing.assert_close(g, g.T, rtol=0, atol=1e-12 * scale)
    assert torch.linalg.eigvalsh(0.5 * (g + g.T)).min() > -1e-12 * scale


# ---------------------------------------------------------------------------- 3, 6: exactness
def reference_run(opt, x0, h, centres, lr, meta_lr, beta):
    """LODO from the algorithm's text: dense G(θ), autograd through the unrolled step, and
    torch.optim.Adam (or SGD for LODO-SGD) as the meta-optimizer. Returns x, θ, ∇θ per step."""
    theta = state_of(opt)["theta"].clone().requires_grad_(True)
    if isinstance(opt, LODOSGD):
        meta = torch.optim.SGD([theta], lr=meta_lr)
    else:
        meta = torch.optim.Adam([theta], lr=meta_lr, betas=(0.9, 0.999), eps=1e-7)
    x, m = x0.clone(), torch.zeros_like(x0)
    out = []
    for t, c in enumerate(centres):
        f = lambda z: 0.5 * (z - c) @ h @ (z - c)  # noqa: E731
        g = h @ (x - c)
        if t == 0:
            hyper = torch.zeros_like(theta)
        else:  # ℓ(θ') = f(x_t − G(θ') m_t) with x_{t+1} = x_t − G(θ_t) m_t, at θ' = θ_t
            at = theta.detach().clone().requires_grad_(True)
            step = (dense_G(opt, at, lr) - dense_G(opt, at, lr).detach()) @ m
            (hyper,) = torch.autograd.grad(f(x - step), at)
        theta.grad = hyper.clone()
        meta.step()
        m = beta * m + (1 - beta) * g
        with torch.no_grad():
            x = x - dense_G(opt, theta.detach(), lr) @ m
        out.append((x.clone(), theta.detach().clone(), hyper))
    return out


@pytest.mark.parametrize("cls", ALL)
def test_steps_and_hypergradients_match_autograd_through_the_unrolled_step(cls):
    n, lr, meta_lr, beta = 7, 0.8, 0.02, 0.6
    h, gen = quadratic(n, 2)
    centres = [torch.randn(n, generator=gen, dtype=DT) for _ in range(6)]
    x, opt = make(cls, n, lr=lr, meta_lr=meta_lr, beta=beta)
    if cls is LODONoMomentum:
        beta = 0.0
    expected = reference_run(opt, x.detach(), h, centres, lr, meta_lr, beta)
    for c, (x_ref, theta_ref, hyper_ref) in zip(centres, expected):
        before = snapshot(opt)
        opt.zero_grad()
        (0.5 * (x - c) @ h @ (x - c)).backward()
        opt.step()
        hyper = hypergradient_taken(opt, before)
        torch.testing.assert_close(hyper.reshape(-1), hyper_ref.reshape(-1), rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(state_of(opt)["theta"], theta_ref, rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(x.detach(), x_ref, rtol=1e-10, atol=1e-13)
    assert (state_of(opt)["theta"] - theta_ref).abs().max() < 1e-10
    assert hyper.abs().max() > 1e-6  # the comparison was not between zeros


def test_first_steps_match_hand_computation():
    n, lr, meta_lr, beta = 5, 0.5, 0.01, 0.9
    x, opt = make(LODO, n, lr=lr, meta_lr=meta_lr, beta=beta)
    x0, theta0 = x.detach().clone(), state_of(opt)["theta"].clone()
    g1 = torch.arange(1.0, n + 1, dtype=DT)
    x.grad = g1.clone()
    opt.step()
    # m0 = 0: zero hypergradient, Adam's zero step leaves θ, m1 = (1 − β) g1, x moves by −α0 m1
    assert torch.equal(state_of(opt)["theta"], theta0) and state_of(opt)["meta_step"] == 1
    torch.testing.assert_close(x.detach(), x0 - lr * (1 - beta) * g1, rtol=1e-15, atol=1e-15)
    g2 = torch.linspace(-1.0, 2.0, n, dtype=DT)
    x.grad = g2.clone()
    opt.step()
    m1 = (1 - beta) * g1
    at = theta0.clone().requires_grad_(True)
    (hyper,) = torch.autograd.grad(-(g2 @ dense_G(opt, at, lr) @ m1), at)  # −J_θ[G(θ) m1]ᵀ g2
    # Adam's second step with μ1 = ν1 = 0: μ = 0.1 h, ν = 0.001 h², bias corrections 1 − β^2
    expected = theta0 - meta_lr * (0.1 * hyper / (1 - 0.9**2)) / ((0.001 * hyper**2 / (1 - 0.999**2)).sqrt() + 1e-7)
    torch.testing.assert_close(state_of(opt)["theta"], expected, rtol=1e-12, atol=1e-15)
    m2 = beta * (1 - beta) * g1 + (1 - beta) * g2
    x1 = x0 - lr * (1 - beta) * g1
    torch.testing.assert_close(x.detach(), x1 - dense_G(opt, expected, lr) @ m2, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls", ALL)
def test_step_moves_by_the_preconditioner_of_the_momentum(cls):
    """The step's path (one column, intermediates kept) against the batched preconditioner() and
    the dense matrix: x_t − x_{t+1} = G(θ_{t+1}) m_{t+1}."""
    n = 30
    h, gen = quadratic(n, 3)
    x, opt = make(cls, n, meta_lr=0.05)
    for _ in range(20):
        c = torch.randn(n, generator=gen, dtype=DT)
        x_before = x.detach().clone()
        opt.zero_grad()
        (0.5 * (x - c) @ h @ (x - c)).backward()
        opt.step()
    m = state_of(opt)["momentum"]
    moved = x_before - x.detach()
    torch.testing.assert_close(moved, opt.preconditioner(m), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(opt.preconditioner(m.expand(3, n))[1], opt.preconditioner(m), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(moved, dense_G(opt, state_of(opt)["theta"], 0.8) @ m, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls", [LODO, LODOResiduals])
def test_calling_the_preconditioner_between_steps_changes_nothing(cls):
    """σ tracking calls preconditioner() between steps; the next hypergradient must not notice."""
    n = 10
    h, gen = quadratic(n, 10)
    centres = [torch.randn(n, generator=gen, dtype=DT) for _ in range(15)]
    runs = []
    for probe in (False, True):
        x, opt = make(cls, n, meta_lr=0.05)
        for c in centres:
            opt.zero_grad()
            (0.5 * (x - c) @ h @ (x - c)).backward()
            opt.step()
            if probe:
                opt.preconditioner(torch.eye(n, dtype=DT))
                opt.preconditioner(c)
        runs.append((x.detach().clone(), state_of(opt)["theta"].clone()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_meta_step_is_torch_adam():
    """LODO's meta-step against torch.optim.Adam (single-tensor path, betas 0.9/0.999, eps 1e-7)
    fed the same hypergradients; LODO-Diagonal's is −α0 g_{t+1} ⊙ m_t, computed here from the state."""
    n, lr, meta_lr = 6, 0.5, 0.03
    h, gen = quadratic(n, 11)
    x, opt = make(LODODiagonal, n, lr=lr, meta_lr=meta_lr, beta=0.7)
    theta = state_of(opt)["theta"].clone()
    adam = torch.optim.Adam([theta], lr=meta_lr, betas=(0.9, 0.999), eps=1e-7, foreach=False)
    for _ in range(30):
        c = torch.randn(n, generator=gen, dtype=DT)
        m = state_of(opt)["momentum"].clone()
        opt.zero_grad()
        (0.5 * (x - c) @ h @ (x - c)).backward()
        theta.grad = x.grad * m * -lr
        opt.step()
        adam.step()
        torch.testing.assert_close(state_of(opt)["theta"], theta, rtol=1e-14, atol=0)
    assert (theta - 1).abs().min() > 1e-3  # θ has moved


# ---------------------------------------------------------------------------- 4: resume
def train(opt, params, h, gen, steps):
    n = sum(p.numel() for p in params)
    for _ in range(steps):
        c = torch.randn(n, generator=gen, dtype=DT)

        def closure():
            opt.zero_grad()
            x = torch.cat([p.reshape(-1) for p in params])
            loss = 0.5 * (x - c) @ h @ (x - c)
            loss.backward()
            return loss

        opt.step(closure)


def two_params(n):
    return [torch.zeros(n - 3, dtype=DT, requires_grad=True), torch.zeros(3, dtype=DT, requires_grad=True)]


@pytest.mark.parametrize("cls", ALL)
def test_resume_is_bit_identical(cls):
    n = 11
    h, gen = quadratic(n, 4)
    kw = {} if cls is LODONoMomentum else {"beta": 0.5}
    params = two_params(n)
    opt = cls(params, lr=0.5, meta_lr=0.01, seed=0, **kw)
    train(opt, params, h, gen, 100)
    buffer = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "params": [p.detach().clone() for p in params]}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    copies = [p.clone().requires_grad_(True) for p in saved["params"]]
    restored = cls(copies, lr=0.5, meta_lr=0.01, seed=123, **kw)  # another seed: all must come from the state
    restored.load_state_dict(saved["opt"])
    rng = gen.get_state()
    train(opt, params, h, gen, 50)
    gen.set_state(rng)
    train(restored, copies, h, gen, 50)
    for p, q in zip(params, copies):
        assert torch.equal(p, q)
    assert torch.equal(state_of(opt)["theta"], state_of(restored)["theta"])


def test_resume_in_a_fresh_process_is_bit_identical(tmp_path):
    n = 9
    h, gen = quadratic(n, 5)
    x = torch.zeros(n, dtype=DT, requires_grad=True)
    opt = LODO([x], lr=0.5, meta_lr=0.01, seed=0)
    train(opt, [x], h, gen, 100)
    torch.save({"opt": opt.state_dict(), "x": x.detach().clone(), "h": h, "rng": gen.get_state()}, tmp_path / "ckpt.pt")
    train(opt, [x], h, gen, 30)
    script = textwrap.dedent(f"""
        import torch
        from lodo.lodo import LODO
        s = torch.load({str(tmp_path / 'ckpt.pt')!r})
        x = s["x"].clone().requires_grad_(True)
        opt = LODO([x], lr=0.5, meta_lr=0.01, seed=7)
        opt.load_state_dict(s["opt"])
        gen = torch.Generator(); gen.set_state(s["rng"])
        for _ in range(30):
            c = torch.randn({n}, generator=gen, dtype=torch.float64)
            opt.zero_grad(); (0.5 * (x - c) @ s["h"] @ (x - c)).backward(); opt.step()
        torch.save(x.detach(), {str(tmp_path / 'x.pt')!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    assert torch.equal(torch.load(tmp_path / "x.pt"), x.detach())


# ---------------------------------------------------------------------------- 7: validation, dtype
@pytest.mark.parametrize("field,kwargs", [
    ("lr", {"lr": -1.0}), ("meta_lr", {"meta_lr": -0.1}), ("beta", {"beta": 1.0}), ("beta", {"beta": -0.1}),
    ("depth", {"depth": 0}), ("block_size", {"block_size": 0}), ("lr", {"lr": float("nan")}),
])
def test_invalid_hyperparameters_name_the_field(field, kwargs):
    x = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match=f"Invalid {field}: {list(kwargs.values())[0]}"):
        LODO([x], **kwargs)


def test_ablations_validate_and_no_momentum_rejects_beta():
    x = torch.zeros(3, requires_grad=True)
    for cls in (LODODiagonal, LODOGlobal, LODOResiduals, LODOSGD):
        with pytest.raises(ValueError, match="Invalid meta_lr: -1"):
            cls([x], meta_lr=-1.0)
    with pytest.raises(TypeError):
        LODONoMomentum([x], beta=0.5)
    with pytest.raises(ValueError, match="Invalid depth: 0"):
        LODOResiduals([x], depth=0)


def test_rejects_several_param_groups():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="param_groups"):
        LODO([{"params": [a]}, {"params": [b], "lr": 0.1}])


@pytest.mark.parametrize("cls", ALL)
def test_state_follows_the_parameters_dtype(cls):
    x = torch.zeros(6, dtype=torch.float32, requires_grad=True)
    opt = cls([x], seed=0)
    (x - 1.0).pow(2).sum().backward()
    opt.step()
    opt.step()
    for value in state_of(opt).values():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            assert value.dtype == torch.float32
    assert opt.preconditioner(torch.ones(6)).dtype == torch.float32


# ---------------------------------------------------------------------------- 8: descent
@pytest.mark.parametrize("cls", ALL)
def test_descends_on_a_deterministic_quadratic(cls):
    n = 20
    h, _ = quadratic(n, 6)
    target = torch.linspace(-1, 1, n, dtype=DT)
    x = torch.zeros(n, dtype=DT, requires_grad=True)
    kw = {} if cls is LODONoMomentum else {"beta": 0.5}
    opt = cls([x], lr=1.0, meta_lr=1e-3, seed=0, **kw)
    f = lambda: 0.5 * (x - target) @ h @ (x - target)  # noqa: E731
    start = f().item()
    calls = []
    for _ in range(300):
        def closure():
            calls.append(1)
            opt.zero_grad()
            loss = f()
            loss.backward()
            return loss
        loss = opt.step(closure)
    assert len(calls) == 300 and isinstance(loss, torch.Tensor)
    assert f().item() < 1e-3 * start


def test_step_runs_without_autograd_but_leaves_ordinary_tensors():
    """step() updates in inference mode; its state and buffers must stay usable outside it
    (in-place updates there, autograd on the parameters, a closure that builds a graph)."""
    n = 12
    h, gen = quadratic(n, 9)
    x, opt = make(LODO, n)
    for _ in range(3):
        c = torch.randn(n, generator=gen, dtype=DT)

        def closure():
            opt.zero_grad()
            loss = 0.5 * (x - c) @ h @ (x - c)
            loss.backward()
            return loss
        assert opt.step(closure).requires_grad
    tensors = [v for v in state_of(opt).values() if isinstance(v, torch.Tensor)]
    assert tensors and not any(t.is_inference() for t in tensors) and not x.is_inference()
    g = opt.preconditioner(torch.eye(n, dtype=DT))  # the step's buffers, outside inference mode
    torch.testing.assert_close(g, dense_G(opt, state_of(opt)["theta"], 0.8), rtol=1e-12, atol=1e-14)
    opt.zero_grad()
    (x * x).sum().backward()  # the parameters still take part in autograd
    torch.testing.assert_close(x.grad, 2 * x.detach())


@pytest.mark.parametrize("cls", [LODO, LODOResiduals])
def test_loading_into_a_used_optimizer_replaces_everything_derived_from_the_state(cls):
    n = 8
    h, gen = quadratic(n, 12)
    x, opt = make(cls, n, meta_lr=0.05)
    train(opt, [x], h, gen, 40)
    y, other = make(cls, n, seed=5, meta_lr=0.05)
    train(other, [y], h, gen, 10)  # its buffers hold another θ and other permutations
    other.load_state_dict(copy.deepcopy(opt.state_dict()))  # torch's state_dict() shares the tensors
    with torch.no_grad():
        y.copy_(x)
    assert torch.equal(other.preconditioner(torch.eye(n, dtype=DT)), opt.preconditioner(torch.eye(n, dtype=DT)))
    rng = gen.get_state()
    train(opt, [x], h, gen, 10)
    gen.set_state(rng)
    train(other, [y], h, gen, 10)
    assert torch.equal(x, y) and torch.equal(state_of(opt)["theta"], state_of(other)["theta"])
