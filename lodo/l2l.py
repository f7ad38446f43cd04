"""L2LBGDBGD: the meta-trained LSTM optimizer of Andrychowicz et al. (2016), "Learning to learn
by gradient descent by gradient descent" — a baseline of the LODO paper (docs/paper.md §2, Table 1).

A coordinate-wise two-layer LSTM m_φ (20 hidden units per layer, weights φ shared by every
coordinate) maps each coordinate's gradient to that coordinate's step:

    (u_t, h_{t+1}) = m_φ(ρ(∇f(x_t)), h_t)        x_{t+1} = x_t + u_t

with the paper's gradient preprocessing (their App. A, p = 10), applied per coordinate:

    ρ(g) = (log|g| / p, sign g)     if |g| ≥ e^(−p)
           (−1, e^p · g)            otherwise

and u_t = output_scale · (W h_t^(2) + b), a linear read-out of the top layer scaled by
`output_scale` (0.1 in the original; the shipped checkpoint uses 1.0, see `lodo/meta_train.py`).
φ is fixed at run time: it is meta-trained offline on the task distribution
(`lodo/meta_train.py`) and loaded from a checkpoint; the optimizer itself only carries the
per-coordinate hidden states h_t (in `self.state`, so they round-trip through `state_dict`).

The shipped checkpoint (5500 meta-steps; its `meta["runs"]` lists the schedule) scores
15.22 ± 0.01 on the 100k-step noisy bowl (seeds 0–3; paper Table 1: 14.79 ± 0.08; tuned Adam
15.28; the best heavy-ball momentum filter, from its stationary covariance: ≈ 15.35).
"""
from __future__ import annotations

import copy
import importlib.resources
import math
import os

import torch
from torch import nn

from lodo.lodo import validate_positive_int

#: the shipped checkpoint, meta-trained on the noisy bowl (docs/paper.md §3) by `lodo/meta_train.py`
SHIPPED_CHECKPOINT = "l2lbgdbgd_noisy_bowl.pt"
CHECKPOINT_FORMAT = "l2lbgdbgd/1"

LSTMState = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (num_layers, coordinates, hidden_size)


def preprocess(grad: torch.Tensor, p: float = 10.0) -> torch.Tensor:
    """ρ(g): (log|g|/p, sign g) if |g| ≥ e^(−p), else (−1, e^p·g); shape (..., 2).

    Differentiable in g everywhere (the log is taken of |g| clamped at e^(−p), so no inf/NaN
    gradients leak from the unused branch).
    """
    threshold = math.exp(-p)
    magnitude = grad.abs()
    large = magnitude >= threshold
    log_part = torch.log(magnitude.clamp_min(threshold)) / p
    first = torch.where(large, log_part, torch.full_like(grad, -1.0))
    second = torch.where(large, torch.sign(grad), grad * math.exp(p))
    return torch.stack((first, second), dim=-1)


def lstm_cell(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, cell: nn.LSTMCell) -> LSTMState:
    """One step of `cell` (nn.LSTMCell's equations and weights), with tanh written through σ::

        (i, f, g, o) = W_ih x + b_ih + W_hh h + b_hh        (the four gates' pre-activations)
        c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)        h' = σ(o) ⊙ tanh(c')        tanh(z) = 2σ(2z) − 1

    Equal to nn.LSTMCell to rounding (≈ 1e-16 absolute) and faster on CPU in float64, where torch's
    tanh costs ≈ 5× its σ per element: one σ over all four gates (g's pre-activation doubled in
    place, which is exact) replaces three σ and two tanh on strided chunks (L2LNet's step at 800
    coordinates: 1.85 → 1.09 ms, benchmarks/RESULTS.md). Differentiable like nn.LSTMCell
    (meta-training unrolls through it)."""
    gates = x @ cell.weight_ih.t() if cell.bias_ih is None else torch.addmm(cell.bias_ih, x, cell.weight_ih.t())
    gates.addmm_(h, cell.weight_hh.t())
    if cell.bias_hh is not None:
        gates.add_(cell.bias_hh)
    hidden = cell.hidden_size
    gates[:, 2 * hidden:3 * hidden].mul_(2.0)
    i, f, g2, o = torch.sigmoid(gates).chunk(4, 1)  # g2 = σ(2g)
    c_new = f * c + i * (2.0 * g2 - 1.0)
    h_new = o * (2.0 * torch.sigmoid(2.0 * c_new) - 1.0)
    return h_new, c_new


class L2LNet(nn.Module):
    """m_φ: the coordinate-wise LSTM, as a pure function of (gradient, hidden state).

    `forward(grad, state)` takes a flat gradient (N,) — N coordinates, any number of parameter
    tensors or bowls stacked — and the hidden state, and returns (update (N,), new state). It is
    differentiable in φ, which meta-training unrolls through; the optimizer calls the very same
    function under `no_grad`.
    """

    def __init__(self, hidden_size: int = 20, num_layers: int = 2, p: float = 10.0, output_scale: float = 0.1):
        super().__init__()
        validate_positive_int("hidden_size", hidden_size)
        validate_positive_int("num_layers", num_layers)
        if not (math.isfinite(p) and p > 0):
            raise ValueError(f"Invalid p: {p!r} (must be finite and > 0)")
        if not (math.isfinite(output_scale) and output_scale > 0):
            raise ValueError(f"Invalid output_scale: {output_scale!r} (must be finite and > 0)")
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.p, self.output_scale = float(p), float(output_scale)
        sizes = [2] + [hidden_size] * num_layers
        self.cells = nn.ModuleList(nn.LSTMCell(sizes[i], hidden_size) for i in range(num_layers))
        self.out = nn.Linear(hidden_size, 1)

    @property
    def config(self) -> dict:
        """The constructor arguments, stored next to the weights in a checkpoint."""
        return {"hidden_size": self.hidden_size, "num_layers": self.num_layers,
                "p": self.p, "output_scale": self.output_scale}

    def initial_state(self, coordinates: int, dtype=torch.float32, device="cpu") -> LSTMState:
        """h_0 = c_0 = 0 for every coordinate."""
        shape = (self.num_layers, coordinates, self.hidden_size)
        return torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)

    def forward(self, grad: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        """u = output_scale · W h^(L) + b after one LSTM step per layer on ρ(grad)."""
        h, c = state
        inp = preprocess(grad, self.p)
        hs, cs = [], []
        for layer, cell in enumerate(self.cells):
            h_l, c_l = lstm_cell(inp, h[layer], c[layer], cell)
            hs.append(h_l)
            cs.append(c_l)
            inp = h_l
        update = self.output_scale * self.out(inp).squeeze(-1)
        return update, (torch.stack(hs), torch.stack(cs))


def load_net(checkpoint: str | os.PathLike | None = None) -> L2LNet:
    """The meta-trained L2LNet of a checkpoint file; None loads the shipped noisy-bowl one."""
    if checkpoint is None:
        resource = importlib.resources.files("lodo").joinpath("checkpoints", SHIPPED_CHECKPOINT)
        with importlib.resources.as_file(resource) as path:
            data = torch.load(path, map_location="cpu", weights_only=True)
    else:
        data = torch.load(os.fspath(checkpoint), map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"Invalid checkpoint: {checkpoint!r} (not an {CHECKPOINT_FORMAT} file)")
    net = L2LNet(**data["config"])
    net.load_state_dict(data["net"])
    net.requires_grad_(False)
    return net.eval()


class L2LBGDBGD(torch.optim.Optimizer):
    """The meta-trained coordinate-wise LSTM optimizer (Andrychowicz et al. 2016).

    Per step, for every coordinate i of every parameter (all coordinates in one batched call):

        (u_i, h_i) ← m_φ(ρ(g_i), h_i);    x_i ← x_i + u_i

    Args:
        params: the parameters to optimise.
        checkpoint: path of a meta-trained checkpoint; None loads the shipped one, meta-trained
            on the noisy bowl (docs/paper.md §3).
        seed: accepted for the registry's uniform signature; the LSTM draws no random numbers.

    The weights φ are fixed; `state_dict` holds the hidden states (h, c) of every coordinate.
    """

    def __init__(self, params, checkpoint: str | os.PathLike | None = None, seed: int | None = None):
        if checkpoint is not None and not os.path.isfile(os.fspath(checkpoint)):
            raise ValueError(f"Invalid checkpoint: {checkpoint!r} (no such file)")
        self.net = load_net(checkpoint)
        self._nets: dict[tuple[torch.dtype, torch.device], L2LNet] = {}
        defaults = {"checkpoint": None if checkpoint is None else os.fspath(checkpoint)}
        super().__init__(params, defaults)

    def _net_for(self, dtype: torch.dtype, device: torch.device) -> L2LNet:
        """m_φ cast to the parameters' dtype and device (float64 bowls run a float64 LSTM)."""
        key = (dtype, device)
        if key not in self._nets:
            self._nets[key] = copy.deepcopy(self.net).to(dtype=dtype, device=device)
        return self._nets[key]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return loss
        for p in params:
            if p.grad.is_sparse:
                raise RuntimeError("L2LBGDBGD does not support sparse gradients")
            state = self.state[p]
            if len(state) == 0:
                h, c = self.net.initial_state(p.numel(), dtype=p.dtype, device=p.device)
                state["h"], state["c"] = h, c
        # One batched LSTM call over all coordinates of all parameters (grouped by dtype/device).
        groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
        for p in params:
            groups.setdefault((p.dtype, p.device), []).append(p)
        for (dtype, device), ps in groups.items():
            net = self._net_for(dtype, device)
            if len(ps) == 1:  # the common case: no concatenation
                p, state = ps[0], self.state[ps[0]]
                update, (state["h"], state["c"]) = net(p.grad.reshape(-1), (state["h"], state["c"]))
                p.add_(update.view_as(p))
                continue
            grad = torch.cat([p.grad.reshape(-1) for p in ps])
            h = torch.cat([self.state[p]["h"] for p in ps], dim=1)
            c = torch.cat([self.state[p]["c"] for p in ps], dim=1)
            update, (h, c) = net(grad, (h, c))
            offset = 0
            for p in ps:
                n = p.numel()
                p.add_(update[offset:offset + n].view_as(p))
                self.state[p]["h"] = h[:, offset:offset + n].clone()
                self.state[p]["c"] = c[:, offset:offset + n].clone()
                offset += n
        return loss
