"""Meta-training L2LBGDBGD's LSTM on a task distribution (Andrychowicz et al. 2016, §2).

The optimizee is a freshly drawn noisy bowl (docs/paper.md §3) per episode. Inside the unroll its loss
and gradient are written in closed form on the tracking error e = x − c, which is all that
matters (f depends on x only through x − c):

    u_t, h_{t+1} = m_φ(g_t, h_t)              # the LSTM's step, g_t = H e_t  (∂g/∂φ = 0: detached)
    e_{t+1} = e_t + u_t − ε_{t+1}             # x moves by u, the centre by ε ~ N(0, v·I)
    ℓ_{t+1} = ½ e_{t+1}ᵀ H e_{t+1}

Meta-loss of one truncation = Σ_{t=1..unroll} ℓ_t (+ V(e_T), below), averaged over the batch of
bowls; Adam on φ after every truncation (truncated backpropagation through time); the error and
the hidden states carry over between the `episode / unroll` truncations of an episode, detached.

Generalising from 100-step episodes to 100k-step runs: the 100k-step score is the *stationary*
tracking loss, so training must see the steady state, not the transient from x0 = c0, and must
value what a step does after the truncation ends:
- steady-state starts: the first episode starts from the stationary error of a gradient-descent
  tracker (closed form per eigen-direction: Var e_i = v / (ηλ_i(2 − ηλ_i))); every later episode
  from the previous episode's final error, expressed in its bowl's eigenbasis and placed in the
  new bowl's (all bowls share the spectrum D), i.e. a draw from the current LSTM's own steady
  state on fresh bowls; then `warmup` steps without gradient let the hidden states settle;
- a tail value V(e_T) closes each truncation's sum with the loss the remaining error will still
  cost (`tail_matrix`); without it, 20-step truncations are blind to errors in flat directions
  (λ = 0.001 decays over ~1/(ηλ) ≈ 300 steps) and learn too timid steps.

With `workers > 1`, each truncation's bowls are split into shares and Ray tasks compute the
meta-gradient of each share with the current weights; the driver sums them and applies Adam.
All randomness (bowls, start states, noise) is drawn by the driver from (seed, episode), so the
meta-gradient does not depend on the number of workers (up to float summation order) and a
resumed run continues exactly where the interrupted one stopped.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

import tasks
from lodo.l2l import CHECKPOINT_FORMAT, L2LNet, LSTMState

DTYPE = torch.float32  # meta-training precision (the optimizer casts φ to the parameters' dtype)


# ----------------------------------------------------------------------------------- the unroll

def rollout(net: L2LNet, hessians: torch.Tensor, error: torch.Tensor, state: LSTMState,
           noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, LSTMState]:
    """Run m_φ for T steps on B bowls at once; differentiable in φ.

    hessians (B, n, n), error e (B, n), state (h, c) of B·n coordinates, noise ε (T, B, n).
    Returns the losses ℓ (T, B), the final error and the final hidden state.
    """
    batch, n = error.shape
    losses = []
    grad = torch.bmm(hessians, error.detach().unsqueeze(-1)).squeeze(-1)  # g = H e, H symmetric
    for eps in noise:
        update, state = net(grad.detach().reshape(-1), state)  # ∂g/∂φ = 0 (Andrychowicz et al.)
        error = error + update.view(batch, n) - eps
        h_error = torch.bmm(hessians, error.unsqueeze(-1)).squeeze(-1)
        losses.append(0.5 * (error * h_error).sum(dim=1))
        grad = h_error
    return torch.stack(losses), error, state


def tail_matrix(hessians: torch.Tensor, tail_lr: float) -> torch.Tensor:
    """M with eᵀM e = V(e), the loss still to come from an error e left at a truncation's end.

    Truncated BPTT is myopic: an error left in a flat direction (λ = 0.001) costs for ~1/(ηλ)
    steps, far beyond a 20-step unroll, so truncations alone learn too small steps there. V closes
    the sum with the future of a tracker that shrinks direction i by r_i = 1 − min(ηλ_i, 1) per step:

        V(e) = Σ_i ½λ_i z_i² Σ_{s≥1} r_i^(2s) = Σ_i ½λ_i z_i² r_i² / (1 − r_i²),     z = Qᵀe
    """
    lam, q = torch.linalg.eigh(hessians.double())
    r2 = (1 - (tail_lr * lam).clamp(max=1.0)) ** 2
    weight = 0.5 * lam * r2 / (1 - r2)
    return ((q * weight.unsqueeze(1)) @ q.transpose(1, 2)).to(hessians.dtype)


def share_gradient(net: L2LNet, hessians, error, state, noise, tail=None):
    """∇_φ [Σ_{t,b} ℓ_t(b) + Σ_b V_b(e_T)] for one share of bowls (V: `tail_matrix`, optional).

    Returns (grads, Σ ℓ, final error, final state), all detached.
    """
    net.zero_grad(set_to_none=True)
    losses, error, (h, c) = rollout(net, hessians, error, state, noise)
    total = losses.sum()
    objective = total
    if tail is not None:
        objective = objective + (error * torch.bmm(tail, error.unsqueeze(-1)).squeeze(-1)).sum()
    objective.backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in net.parameters()]
    return grads, float(total.detach()), error.detach(), (h.detach(), c.detach())


def _remote_share_gradient(config: dict, weights: dict, hessians, error, state, noise, tail):
    """`share_gradient` in a Ray task: rebuild m_φ from its config and current weights."""
    torch.set_num_threads(1)
    net = L2LNet(**config)
    net.load_state_dict(weights)
    return share_gradient(net.to(hessians.dtype), hessians, error, state, noise, tail)


def meta_gradient(net: L2LNet, hessians, error, state, noise, workers: int = 1, tail=None):
    """The meta-gradient of one truncation, averaged over bowls: (1/B) Σ_shares ∇_φ (Σ ℓ + V).

    workers = 1 computes it in this process; workers > 1 splits the B bowls into `workers`
    contiguous shares and runs one Ray task per share (Ray must be initialised).
    Returns (grads, mean loss per step and bowl, final error, final state).
    """
    batch, n = error.shape
    steps = noise.shape[0]
    if workers <= 1:
        grads, total, error, state = share_gradient(net, hessians, error, state, noise, tail)
    else:
        import ray

        remote = ray.remote(num_cpus=1)(_remote_share_gradient)
        weights = ray.put({k: v.detach().clone() for k, v in net.state_dict().items()})
        h, c = state
        bounds = np.linspace(0, batch, min(workers, batch) + 1).round().astype(int)
        futures = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            coords = slice(lo * n, hi * n)
            futures.append(remote.remote(net.config, weights, hessians[lo:hi], error[lo:hi],
                                         (h[:, coords], c[:, coords]), noise[:, lo:hi],
                                         None if tail is None else tail[lo:hi]))
        results = ray.get(futures)
        grads = [sum(parts) for parts in zip(*(r[0] for r in results))]
        total = sum(r[1] for r in results)
        error = torch.cat([r[2] for r in results])
        state = (torch.cat([r[3][0] for r in results], dim=1), torch.cat([r[3][1] for r in results], dim=1))
    return [g / batch for g in grads], total / (batch * steps), error, state


# ---------------------------------------------------------------------------- episodes' data

def _episode_seed(seed: int, episode: int, stream: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(episode), int(stream)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def draw_bowls(task: str, seeds, noise_variance: float) -> torch.Tensor:
    """The Hessians H (B, n, n) of the task's bowls for `seeds` (the task's own distribution)."""
    hessians = []
    for s in seeds:
        bowl = tasks.create(task, seed=int(s), noise_variance=noise_variance)
        if not isinstance(getattr(bowl, "hessian", None), torch.Tensor):
            raise ValueError(f"Invalid task: {task!r} (meta-training needs a quadratic task exposing `hessian`)")
        hessians.append(bowl.hessian.detach().cpu())
    return torch.stack(hessians)


def stationary_error(hessians: torch.Tensor, noise_variance: float, start_lr: float,
                     generator: torch.Generator) -> torch.Tensor:
    """e ~ the stationary error of gradient descent x ← x − η g tracking the bowl (η = start_lr).

    Per eigen-direction (λ, q) of H: e_{t+1} = (1 − ηλ) e_t − ε  ⇒  Var = v / (ηλ(2 − ηλ)).
    """
    lam, q = torch.linalg.eigh(hessians.double())
    eta_lam = (start_lr * lam).clamp(1e-12, 2 - 1e-6)
    std = torch.sqrt(noise_variance / (eta_lam * (2 - eta_lam)))
    z = torch.randn(lam.shape, generator=generator, dtype=torch.float64)
    return torch.bmm(q, (std * z).unsqueeze(-1)).squeeze(-1)


def gd_stationary_loss(hessians: torch.Tensor, noise_variance: float, start_lr: float) -> float:
    """E ℓ of that tracker, averaged over the bowls: Σ_i ½λ_i·Var e_i = Σ_i v / (2η(2 − ηλ_i))."""
    lam = torch.linalg.eigvalsh(hessians.double())
    eta_lam = (start_lr * lam).clamp(1e-12, 2 - 1e-6)
    return float((noise_variance / (2 * start_lr * (2 - eta_lam))).sum(dim=1).mean())


def draw_episode(task: str, seed: int, episode: int, batch_of_bowls: int, noise_variance: float,
                 start_lr: float, steps: int, dtype=DTYPE):
    """(H (B, n, n), e_0 (B, n), ε (steps, B, n)) of one episode, a pure function of (seed, episode)."""
    bowl_seeds = [_episode_seed(seed, episode, 1 + b) for b in range(batch_of_bowls)]
    hessians = draw_bowls(task, bowl_seeds, noise_variance)
    generator = torch.Generator().manual_seed(_episode_seed(seed, episode, 0))
    error = stationary_error(hessians, noise_variance, start_lr, generator)
    noise = math.sqrt(noise_variance) * torch.randn(steps, *error.shape, generator=generator, dtype=torch.float64)
    return hessians.to(dtype), error.to(dtype), noise.to(dtype)


def eigen_coordinates(error: torch.Tensor, hessians: torch.Tensor) -> torch.Tensor:
    """Qᵀe: the error in the eigenbasis of its bowl (eigenvalues ascending), detached."""
    _, q = torch.linalg.eigh(hessians.double())
    return torch.bmm(q.transpose(1, 2), error.detach().double().unsqueeze(-1)).squeeze(-1)


def rotate_error(coordinates: torch.Tensor, hessians: torch.Tensor) -> torch.Tensor:
    """Q z: eigen-coordinates z placed on new bowls with the same spectrum (the noisy bowl's D is fixed).

    The stationary error distribution is covariant under rotation of the bowl, so the previous
    episode's final error, expressed in its bowl's eigenbasis and put into the new bowl's, is a
    draw from the current LSTM's own steady state — on fresh bowls.
    """
    _, q = torch.linalg.eigh(hessians.double())
    return torch.bmm(q, coordinates.unsqueeze(-1)).squeeze(-1).to(hessians.dtype)


# --------------------------------------------------------------------------------- training

def new_net(seed: int, output_scale: float = 0.1) -> L2LNet:
    """m_φ with PyTorch's default initialisation drawn from `seed` (the global RNG is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return L2LNet(output_scale=output_scale)


def save_checkpoint(path: str, net: L2LNet, adam: torch.optim.Optimizer, meta: dict) -> None:
    """Atomic (a temp file in the same folder, then os.replace), so a crash never leaves a
    half-written checkpoint: `--resume` finds the previous one or the new one."""
    data = {"format": CHECKPOINT_FORMAT, "config": net.config,
            "net": {k: v.detach().float().clone() for k, v in net.state_dict().items()},
            "meta_optimizer": adam.state_dict(), "meta": meta}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(data, tmp)
    os.replace(tmp, path)


def meta_train(task: str = "noisy_bowl", out: str | os.PathLike | None = None, steps: int = 2000,
               unroll: int = 20, episode: int = 100, batch_of_bowls: int = 16, lr: float = 3e-3,
               seed: int = 0, resume: bool = False, workers: int = 1, progress: bool = True, *,
               noise_variance: float = 1.0, warmup: int = 50, start_lr: float = 1.5,
               output_scale: float = 1.0, checkpoint_every: int = 10, clip: float = 10.0,
               carry_error: bool = True, tail_lr: float | None = 3.0) -> str:
    """Meta-train m_φ by truncated BPTT; returns the checkpoint path (loadable by L2LBGDBGD).

    Long: the docstring documents every setting; the body is named steps (_check_settings, _start, _episode).

    steps: meta-optimizer (Adam) updates, one per truncation of `unroll` steps; the learning
    rate decays linearly from `lr` to lr/10 over `steps`. An episode is `warmup` steps without
    gradient, then `episode // unroll` truncations, on `batch_of_bowls` fresh bowls.
    Steady-state starts: the first episode starts from the stationary error of gradient descent
    with step `start_lr`; later ones (`carry_error`) from the previous episode's final error
    rotated onto the new bowls (`rotate_error`). `tail_lr`: close every truncation's meta-loss
    with the value V of the error it leaves (`tail_matrix`); None: plain truncated sums.
    `output_scale` multiplies the LSTM's read-out (0.1 in Andrychowicz et al.; 1.0 here: the
    bowl needs steps of order 1, which 0.1 reaches only with ~10× larger weights, and trained
    slower in our runs). `checkpoint_every` episodes the checkpoint is rewritten atomically;
    `resume=True` continues from `out` (same arguments) where it stopped. `clip` bounds the
    meta-gradient's norm (unrolled LSTMs have occasional gradient spikes).
    """
    _check_settings(task, steps=steps, unroll=unroll, episode=episode, batch_of_bowls=batch_of_bowls,
                    workers=workers, warmup=warmup, checkpoint_every=checkpoint_every, lr=lr, start_lr=start_lr,
                    output_scale=output_scale, clip=clip, tail_lr=tail_lr, noise_variance=noise_variance)
    path = os.fspath(out) if out is not None else os.path.join("checkpoints", f"l2lbgdbgd_{task}.pt")

    fresh = {"task": task, "step": 0, "episode": 0, "seed": seed, "unroll": unroll, "episode_length": episode,
             "batch_of_bowls": batch_of_bowls, "lr": lr, "noise_variance": noise_variance, "warmup": warmup,
             "start_lr": start_lr, "output_scale": output_scale, "carry_error": carry_error, "tail_lr": tail_lr,
             "history": []}
    net, adam, meta = _start(path, resume, seed, output_scale, lr, fresh)
    # Every call (the first and each resume) is logged, so a checkpoint tells how it was made.
    meta.setdefault("runs", []).append({
        "from_step": meta["step"], "steps": steps, "unroll": unroll, "episode": episode,
        "batch_of_bowls": batch_of_bowls, "lr": lr, "warmup": warmup, "start_lr": start_lr,
        "carry_error": carry_error, "tail_lr": tail_lr, "clip": clip, "workers": workers})

    ray_started = False
    if workers > 1:
        import ray

        if not ray.is_initialized():
            ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
            ray_started = True

    truncations = episode // unroll
    carry = meta.get("carry")
    bar = None
    if progress:
        bar = Progress(TextColumn("meta-train {task.fields[task]}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("loss/step {task.fields[loss]:.3f}"), TimeRemainingColumn())
        bar.start()
        bar_task = bar.add_task("meta", total=steps, completed=meta["step"], task=task, loss=float("nan"))
    try:
        while meta["step"] < steps:
            carry = _episode(net, adam, meta, carry, task=task, seed=seed, steps=steps, unroll=unroll,
                             truncations=truncations, batch_of_bowls=batch_of_bowls, lr=lr, clip=clip,
                             noise_variance=noise_variance, start_lr=start_lr, warmup=warmup, workers=workers,
                             carry_error=carry_error, tail_lr=tail_lr,
                             advance=(lambda loss: bar.update(bar_task, advance=1, loss=loss)) if bar else None)
            if meta["episode"] % checkpoint_every == 0 or meta["step"] >= steps:
                save_checkpoint(path, net, adam, meta)
    finally:
        if bar is not None:
            bar.stop()
        if ray_started:
            import ray

            ray.shutdown()
    return path


def _check_settings(task: str, *, lr, start_lr, output_scale, clip, tail_lr, noise_variance, **counts) -> None:
    """ValueError naming the first setting of `meta_train` that cannot run."""
    for name, (value, low) in {k: (v, 0 if k == "warmup" else 1) for k, v in counts.items()}.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"Invalid {name}: {value!r} (must be an integer >= {low})")
    if counts["episode"] % counts["unroll"]:
        raise ValueError(f"Invalid episode: {counts['episode']!r} (must be a multiple of unroll = {counts['unroll']})")
    for name, value in (("lr", lr), ("start_lr", start_lr), ("output_scale", output_scale), ("clip", clip)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"Invalid {name}: {value!r} (must be finite and > 0)")
    if tail_lr is not None and not (math.isfinite(tail_lr) and tail_lr > 0):
        raise ValueError(f"Invalid tail_lr: {tail_lr!r} (must be None or finite and > 0)")
    if not (math.isfinite(noise_variance) and noise_variance > 0):
        raise ValueError(f"Invalid noise_variance: {noise_variance!r} (must be finite and > 0)")
    if task not in tasks.available():
        raise ValueError(f"Unknown task: {task!r} (valid: {', '.join(tasks.available())})")


def _start(path: str, resume: bool, seed: int, output_scale: float, lr: float, fresh: dict):
    """(net, Adam, meta): fresh from `seed` (meta `fresh`), or the checkpoint at `path` when resuming."""
    if resume and os.path.exists(path):
        data = torch.load(path, map_location="cpu", weights_only=True)
        net = L2LNet(**data["config"]).to(DTYPE)
        net.load_state_dict(data["net"])
        adam = torch.optim.Adam(net.parameters(), lr=lr)
        adam.load_state_dict(data["meta_optimizer"])
        return net, adam, data["meta"]
    net = new_net(seed, output_scale).to(DTYPE)
    return net, torch.optim.Adam(net.parameters(), lr=lr), fresh


def _episode(net, adam, meta: dict, carry, *, task, seed, steps, unroll, truncations, batch_of_bowls, lr, clip,
             noise_variance, start_lr, warmup, workers, carry_error, tail_lr, advance):
    """One episode on fresh bowls: `warmup` steps without gradient, then a meta-step (Adam on φ)
    per truncation of `unroll` steps. Advances `meta`; returns the error to carry to the next one."""
    hessians, error, noise = draw_episode(task, seed, meta["episode"], batch_of_bowls, noise_variance,
                                          start_lr, warmup + truncations * unroll)
    if carry is not None and carry.shape[1] == error.shape[1]:
        # the previous episode's final errors (cycled if the batch grew on resume), on the new bowls
        error = rotate_error(carry[torch.arange(len(error)) % len(carry)], hessians)
    state = net.initial_state(error.numel(), dtype=DTYPE)
    tail = tail_matrix(hessians, tail_lr) if tail_lr else None
    if warmup:  # let the current LSTM's hidden states (and the error) settle, no gradient
        with torch.no_grad():
            _, error, state = rollout(net, hessians, error, state, noise[:warmup])
    losses = []
    for k in range(truncations):
        chunk = noise[warmup + k * unroll: warmup + (k + 1) * unroll]
        grads, loss, error, state = meta_gradient(net, hessians, error, state, chunk, workers, tail)
        for p, g in zip(net.parameters(), grads):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        for group in adam.param_groups:  # linear decay to lr/10 over the run
            group["lr"] = lr * (1 - 0.9 * meta["step"] / steps)
        adam.step()
        losses.append(loss)
        meta["step"] += 1
        if advance is not None:
            advance(loss)
        if meta["step"] >= steps:
            break
    meta["history"].append(float(np.mean(losses)))
    # Carry only a settled state: a diverging early LSTM would otherwise feed its blow-up forward.
    settled = losses[-1] <= 1.5 * gd_stationary_loss(hessians, noise_variance, start_lr)
    carry = eigen_coordinates(error, hessians) if carry_error and settled else None
    meta["episode"] += 1
    meta["carry"] = carry
    return carry


# --------------------------------------------------------------------------------------- CLI

def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of `lodo-tune meta-train`."""
    parser.add_argument("--task", default="noisy_bowl", help="task distribution to meta-train on")
    parser.add_argument("--out", default=None, help="checkpoint path (default checkpoints/l2lbgdbgd_TASK.pt)")
    parser.add_argument("--steps", type=int, default=2000, help="meta-optimizer updates (one per truncation)")
    parser.add_argument("--unroll", type=int, default=20, help="truncation length")
    parser.add_argument("--episode", type=int, default=100, help="episode length (a multiple of --unroll)")
    parser.add_argument("--batch-of-bowls", type=int, default=16, help="optimizees per episode")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate on the LSTM's weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from --out")
    parser.add_argument("--workers", type=int, default=1, help="Ray workers for parallel rollouts (1: no Ray)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    """Run `meta_train` from parsed CLI arguments; prints the checkpoint path; exit status 0."""
    start = time.time()
    path = meta_train(task=args.task, out=args.out, steps=args.steps, unroll=args.unroll, episode=args.episode,
                      batch_of_bowls=args.batch_of_bowls, lr=args.lr, seed=args.seed, resume=args.resume,
                      workers=args.workers, progress=args.progress)
    print(f"wrote {path} ({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_from_args(configure_parser(argparse.ArgumentParser()).parse_args()))
