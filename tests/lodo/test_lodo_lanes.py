"""One LODO (lodo.lodo.BlockLanes) for one lane and for P: against the two implementations it
replaced, kept here as references: the bmm-layout LODO (within float rounding, over thousands of
steps) and the columns-layout batched LODO (bit for bit); a lane of a batch is the LODO built with
its seed, bit for bit; an old-layout state_dict resumes bit for bit; the state fits in 5·T."""
from __future__ import annotations

import io

import pytest
import torch

import lodo.lodo
from lodo import batched
from lodo.lodo import LODO, LODOSGD
from torch.optim.adam import adam

DT = torch.float64
LANES = [dict(lr=0.5), dict(lr=1.0, meta_lr=0.01, beta=0.5), dict(lr=0.2, meta_lr=0.003), {}]


def gradient(noise, x, t):
    """A gradient that depends on x, so that any last-bit difference would grow."""
    return noise[t] * torch.log1p(x.abs()) + noise[t] + 0.1 * x


def initial_state(n, seed):
    """θ_0 (N, ñ/k, k, k) and the permutations (N, ñ) of LODO(seed), contiguous copies."""
    state = LODO([torch.zeros(n, dtype=DT)], seed=seed).state_dict()["state"][0]
    return state["theta"].contiguous().clone(), state["permutations"].clone()


# ---------------------------------------------------------------------------- reference 1: bmm layout
class BmmLODO:
    """lodo.LODO as it was before BlockLanes: G̃ as N gathers and N bmm's over (ñ/k) k×k blocks,
    G̃ᵀ with each block transposed, the hypergradient as blockwise outer products, torch's Adam."""

    def __init__(self, n, seed, lr=1.0, meta_lr=1e-3, beta=0.9):
        self.theta, self.perms = initial_state(n, seed)
        self.inverses = torch.argsort(self.perms, dim=1)
        self.mu, self.nu = torch.zeros_like(self.theta), torch.zeros_like(self.theta)
        self.s = torch.zeros((), dtype=torch.float32)
        self.n, self.lr, self.meta_lr, self.beta, self.t = n, lr, meta_lr, beta, 0
        self.m = torch.zeros(n, dtype=DT)
        self.last = None

    def passes(self, v):
        """a_i = P_i z_{i−1}, λ_i (the adjoint of layer i's output, λ_N = G̃ v̂) and G̃ᵀ G̃ v̂."""
        depth, nb, k, _ = self.theta.shape
        z = torch.zeros(nb * k, dtype=DT)
        z[: self.n] = v
        inputs = []
        for i in range(depth):
            inputs.append(z[self.perms[i]])
            z = torch.bmm(self.theta[i], inputs[-1].view(nb, k, 1)).view(-1)
        adjoints = [None] * depth
        for i in reversed(range(depth)):
            adjoints[i] = z
            z = torch.bmm(self.theta[i].transpose(1, 2).contiguous(), z.view(nb, k, 1)).view(-1)[self.inverses[i]]
        return inputs, adjoints, z

    def step(self, x, g):
        depth, nb, k, _ = self.theta.shape
        if self.t > 0:
            a_g, lam_p, _ = self.passes(-self.lr * g)
            a_m, lam_y = self.last
            h = torch.stack([lam_p[i].view(nb, k, 1) * a_m[i].view(nb, 1, k) for i in range(depth)])
            h.addcmul_(torch.stack(lam_y).view(depth, nb, k, 1), torch.stack(a_g).view(depth, nb, 1, k))
            adam([self.theta], [h], [self.mu], [self.nu], [], [self.s], fused=True, amsgrad=False, beta1=0.9,
                 beta2=0.999, lr=self.meta_lr, weight_decay=0.0, eps=1e-7, maximize=False)
        else:
            self.s += 1
        self.m.lerp_(g, 1 - self.beta)
        a_m, lam_y, w = self.passes(self.m)
        self.last = (a_m, lam_y)
        x.sub_(w[: self.n] * self.lr)
        self.t += 1


# ---------------------------------------------------------------------------- reference 2: the batched LODO
class ColumnsLODO:
    """lodo.batched.LODO as it was before BlockLanes (columns layout, the whole meta-step at once
    into a zeroed δ), with torch's public Adam in place of the private fused call it made."""

    def __init__(self, x, lanes, seeds):
        states = [initial_state(x.shape[1], seed) for seed in seeds]
        def column(key, default):
            return torch.tensor([float(hp.get(key, default)) for hp in lanes], dtype=DT).view(-1, 1)

        self.lr, self.meta_lr, self.beta = column("lr", 1.0), column("meta_lr", 1e-3), column("beta", 0.9)
        theta = torch.stack([s[0] for s in states], dim=1)  # (N, P, nb, k, k)
        self.theta = theta.permute(0, 3, 4, 1, 2).contiguous()  # (N, k, k, P, nb)
        self.perm = torch.stack([s[1] for s in states], dim=1)  # (N, P, ñ)
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(self.theta), torch.zeros_like(self.theta)
        self.m, self.t = torch.zeros_like(x), 0
        depth, k, _, lanes_, nb = self.theta.shape
        self.vectors = [self.theta.new_zeros(depth, k, lanes_, nb) for _ in range(4)]  # a(m), λ(y), a(g), λ(p)
        width, blocks = nb * k, lanes_ * nb
        lane, j = torch.arange(lanes_).view(-1, 1), torch.arange(width).view(1, -1)
        position = lambda p, v: (v % k) * blocks + p * nb + v // k  # noqa: E731
        inverse = torch.argsort(self.perm, dim=2)

        def gather(out_positions, in_positions):
            index = torch.empty(lanes_ * width, dtype=torch.int64)
            index[out_positions.reshape(-1)] = in_positions.reshape(-1)
            return index

        here = position(lane, j)
        self.fwd = [gather(here, lane * width + self.perm[0] if i == 0 else position(lane, self.perm[i]))
                    for i in range(depth)]
        self.bwd = [gather(lane * width + j if i == 0 else here, position(lane, inverse[i])) for i in range(depth)]

    def forward(self, z, inputs, out):
        depth, k, _, lanes, nb = self.theta.shape
        source = z.reshape(-1)
        for i in range(depth):
            a = self.vectors[inputs][i].view(k, -1)
            a.view(-1)[:] = source[self.fwd[i]]
            cols = self.theta[i].view(k, k, -1)
            z = self.vectors[out][i].view(k, -1) if i == depth - 1 else torch.empty(k, lanes * nb, dtype=DT)
            torch.mul(cols[:, 0], a[0], out=z)
            for c in range(1, k):
                z.addcmul_(cols[:, c], a[c])
            source = z.reshape(-1)

    def backward(self, adjoints, full):
        depth, k, _, lanes, nb = self.theta.shape
        for i in range(depth - 1, -1 if full else 0, -1):
            lam = self.vectors[adjoints][i].view(k, -1)
            rows = self.theta[i].view(k, k, -1)
            u = torch.mul(rows[0], lam[0])
            for r in range(1, k):
                u.addcmul_(rows[r], lam[r])
            below = u.reshape(-1)[self.bwd[i]]
            if i == 0:
                return below.view(lanes, -1)
            self.vectors[adjoints][i - 1].view(-1)[:] = below

    def step(self, x, g):
        self.t += 1
        depth, k, _, lanes, nb = self.theta.shape
        n = x.shape[1]
        if self.t > 1:
            pad = torch.zeros(lanes, nb * k, dtype=DT)
            torch.mul(g, -self.lr, out=pad[:, :n])
            self.forward(pad, 2, 3)
            self.backward(3, full=False)
            column, row = (depth, k, 1, lanes, nb), (depth, 1, k, lanes, nb)
            a_m, lam_y, a_g, lam_p = self.vectors
            h = torch.mul(lam_p.view(column), a_m.view(row))
            h.addcmul_(lam_y.view(column), a_g.view(row))
            delta, s = torch.zeros_like(self.theta), torch.tensor(float(self.t - 1))
            adam([delta], [h], [self.exp_avg], [self.exp_avg_sq], [], [s], fused=True, amsgrad=False, beta1=0.9,
                 beta2=0.999, lr=1.0, weight_decay=0.0, eps=1e-7, maximize=False)
            self.theta.addcmul_(delta, self.meta_lr.view(1, 1, 1, -1, 1))
        self.m.lerp_(g, 1 - self.beta)
        pad = torch.zeros(lanes, nb * k, dtype=DT)
        pad[:, :n] = self.m
        self.forward(pad, 0, 1)
        x.sub_(self.lr * self.backward(1, full=True)[:, :n])


def layer_at_a_time(monkeypatch):
    """Make every BlockLanes built from now on run its meta-step a layer at a time."""
    monkeypatch.setattr(lodo.lodo, "META_CHUNK_VALUES", 0)


# ---------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("chunked", [False, True])
def test_batched_lodo_is_the_columns_implementation_bit_for_bit(monkeypatch, chunked):
    if chunked:
        layer_at_a_time(monkeypatch)
    n, steps = (100, 2000) if not chunked else (30, 500)
    noise = torch.randn(steps, n, dtype=DT, generator=torch.Generator().manual_seed(0))
    x, y = torch.zeros(len(LANES), n, dtype=DT), torch.zeros(len(LANES), n, dtype=DT)
    new, old = batched.create("LODO", x, LANES, [3, 7, 11, 5]), ColumnsLODO(y, LANES, [3, 7, 11, 5])
    assert (new.lanes.chunk == 1) == chunked
    for t in range(steps):
        g = gradient(noise, x, t)
        new.step(x, lambda: (None, g))
        old.step(y, gradient(noise, y, t))
        assert torch.equal(x, y), f"step {t}"


@pytest.mark.parametrize("chunked", [False, True])
def test_a_lane_is_lodo_built_with_its_seed_bit_for_bit(monkeypatch, chunked):
    if chunked:
        layer_at_a_time(monkeypatch)
    n, steps, seeds = 40, 2000 if not chunked else 400, [3, 7, 11, 5]
    noise = torch.randn(steps, n, dtype=DT, generator=torch.Generator().manual_seed(1))
    x = torch.zeros(len(LANES), n, dtype=DT)
    batch = batched.create("LODO", x, LANES, seeds)
    params = [torch.zeros(n, dtype=DT, requires_grad=True) for _ in LANES]
    singles = [LODO([p], seed=seed, **hp) for p, seed, hp in zip(params, seeds, LANES)]
    for t in range(steps):
        g = gradient(noise, x, t)
        batch.step(x, lambda: (None, g))
        for lane, (p, opt) in enumerate(zip(params, singles)):
            p.grad = gradient(noise, p.detach(), t)
            opt.step()
            assert torch.equal(p.detach(), x[lane]), f"lane {lane} step {t}"


def test_lodo_follows_the_bmm_implementation_within_rounding_over_thousands_of_steps():
    """The block products' sums are rounded in another order (k multiply-adds against a bmm), so
    the two part in the last bits; on a quadratic with noisy centres they stay within 1e-9."""
    n, steps = 20, 3000
    gen = torch.Generator().manual_seed(4)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=DT))
    h = (q * torch.logspace(-1, 0, n, dtype=DT)) @ q.T
    centres = torch.randn(steps, n, generator=gen, dtype=DT)
    for hp in (dict(lr=0.5, meta_lr=0.01, beta=0.5), dict(lr=1.0, meta_lr=1e-3, beta=0.9)):
        x = torch.zeros(n, dtype=DT, requires_grad=True)
        opt, reference, y = LODO([x], seed=2, **hp), BmmLODO(n, 2, **hp), torch.zeros(n, dtype=DT)
        worst = 0.0
        for t in range(steps):
            x.grad = h @ (x.detach() - centres[t])
            opt.step()
            reference.step(y, h @ (y - centres[t]))
            worst = max(worst, float((x.detach() - y).abs().max() / y.abs().max()))
        assert 0 < worst < 1e-9, hp  # not equal (another summation order), yet within rounding
        theta = opt.state[x]["theta"]
        torch.testing.assert_close(theta, reference.theta, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("cls", [LODO, LODOSGD])
def test_a_state_dict_in_the_old_layout_resumes_bit_for_bit(monkeypatch, chunked, cls):
    """A checkpoint written before BlockLanes holds θ and its moments as contiguous (N, ñ/k, k, k)
    tensors; loading it continues exactly as the optimizer that was never stopped."""
    if chunked:
        layer_at_a_time(monkeypatch)
    n, noise = 30, torch.randn(1000, 30, dtype=DT, generator=torch.Generator().manual_seed(2))
    x = torch.zeros(n, dtype=DT, requires_grad=True)
    kw = dict(lr=0.5, meta_lr=0.01 if cls is LODO else 1e-4, beta=0.5)
    opt = cls([x], seed=0, **kw)
    for t in range(500):
        x.grad = gradient(noise, x.detach(), t)
        opt.step()
    saved = opt.state_dict()
    state = saved["state"][0]
    assert state["theta"].shape == (16, 15, 4, 4) and not state["theta"].is_contiguous()
    buffer = io.BytesIO()
    old_layout = {**saved, "state": {0: {k: v.contiguous() if torch.is_tensor(v) else v for k, v in state.items()}}}
    torch.save({"opt": old_layout, "x": x.detach().clone()}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)
    y = loaded["x"].requires_grad_(True)
    resumed = cls([y], seed=9, **kw)
    resumed.load_state_dict(loaded["opt"])
    for t in range(500, 1000):
        x.grad = gradient(noise, x.detach(), t)
        opt.step()
        y.grad = gradient(noise, y.detach(), t)
        resumed.step()
        assert torch.equal(x, y), f"step {t}"
    assert torch.isfinite(x).all()


def held_bytes(tensors) -> int:
    """Bytes of the distinct storages under `tensors`."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


@pytest.mark.parametrize("form", ["LODO", "batched"])
def test_the_state_and_buffers_fit_in_five_theta(monkeypatch, form):
    """What LODO holds between steps (state, gather indices, vectors, work space), in units of T
    (the size of θ, here in float32), at a size whose meta-step runs a layer at a time."""
    monkeypatch.setattr(lodo.lodo, "META_CHUNK_VALUES", 1 << 12)
    n, lanes = 3000, (1 if form == "LODO" else 3)
    x = torch.zeros(lanes, n)
    if form == "LODO":
        p = torch.zeros(n, requires_grad=True)
        opt = LODO([p], seed=0)
        for _ in range(3):
            p.grad = torch.randn(n) * 1e-3
            opt.step()
        core = opt._lanes()
        held = [t for t in opt.state[p].values() if torch.is_tensor(t)]
    else:
        opt = batched.create("LODO", x, [{}] * lanes, list(range(lanes)))
        for _ in range(3):
            opt.step(x, lambda: (None, torch.randn(lanes, n) * 1e-3))
        core, held = opt.lanes, [opt.m, opt.lanes.perm]
    assert core.chunk == 1
    held += [t for t in vars(core).values() if torch.is_tensor(t)]
    held += [t for key in ("_fwd", "_bwd") for t in getattr(core, key)]
    theta_bytes = core.theta.numel() * 4
    assert core.theta.numel() == 16 * 6000 * 4 * lanes
    assert held_bytes(held) <= 5 * theta_bytes, held_bytes(held) / theta_bytes
