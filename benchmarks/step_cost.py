"""Cost of one LODO training step relative to one Adam (AdamW) training step, and in sweeps over θ.

A training step is the whole loop body: sample, zero_grad, loss, backward, optimizer step.
LODO and Adam run side by side in one process on two copies of the same task, interleaved in
rounds; each ratio is the median over rounds of (LODO seconds per step) / (Adam seconds per step).

    python benchmarks/step_cost.py                 # (a) bowl n = 100, (b) image CNN, (c) transformer, (d) sweeps
    python benchmarks/step_cost.py --threads 1 --skip-cnn
    python benchmarks/step_cost.py --threads 1 --skip-cnn --baseline /tmp/lodo_old.py   # and an older lodo.py

(c) is a ≈ 30k-parameter transformer from torch.nn (3 encoder layers, d_model 32) on random
tokens against AdamW; (d) is one LODO step (optimizer.step on a fixed gradient) at n = 2·10⁵ in
units of `theta.add_(1)` over LODO's own θ, timed in the same process.
Targets: (a) ≤ 2.5, (b) ≤ 0.96, (c) ≤ 2.5, (d) ≤ 15 sweeps.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import time

import torch

import tasks
from lodo.lodo import LODO


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def training_step(task, optimizer) -> None:
    batch = task.sample()
    optimizer.zero_grad()
    task.loss(batch).backward()
    optimizer.step()


DEVICE = torch.device("cpu")  # --device


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def seconds_per_step(task, optimizer, steps: int) -> float:
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        training_step(task, optimizer)
    synchronize()
    return (time.perf_counter() - start) / steps


def load_lodo(path: str) -> type:
    """The LODO class of another copy of lodo.py (e.g. `git show HEAD:lodo/lodo.py > old.py`)."""
    spec = importlib.util.spec_from_file_location("baseline_lodo", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module.LODO


class TinyTransformer(torch.nn.Module):
    """A ≈ 30k-parameter next-token model from torch.nn on random tokens (vocabulary 64, context 32,
    batch 16): embeddings, 3 pre-norm encoder layers of width 32 (4 heads, feed-forward 64), a head."""

    def __init__(self, seed: int, vocab: int = 64, context: int = 32, width: int = 32, batch: int = 16):
        super().__init__()
        torch.manual_seed(seed)
        self.vocab, self.context, self.batch = vocab, context, batch
        self.embed, self.position = torch.nn.Embedding(vocab, width), torch.nn.Parameter(torch.zeros(context, width))
        layer = torch.nn.TransformerEncoderLayer(width, 4, 64, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
        self.head = torch.nn.Linear(width, vocab)
        self.mask = torch.nn.Transformer.generate_square_subsequent_mask(context)
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self) -> torch.Tensor:
        tokens = torch.randint(0, self.vocab, (self.batch, self.context + 1), generator=self.generator)
        return tokens.to(self.head.weight.device)

    def loss(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = self.mask.to(tokens.device)
        h = self.encoder(self.embed(tokens[:, :-1]) + self.position, mask=mask, is_causal=True)
        return torch.nn.functional.cross_entropy(self.head(h).reshape(-1, self.vocab), tokens[:, 1:].reshape(-1))


def make_task(name: str, seed: int, options: dict):
    if name == "transformer":
        return TinyTransformer(seed).to(DEVICE)
    return tasks.create(name, seed=seed, device=DEVICE, **options)


def compare(name: str, options: dict, steps: int, rounds: int, warmup: int,
            lodo_classes: dict | None = None, adam=None) -> dict[str, tuple[float, float]]:
    """For each LODO class (default {"LODO": LODO}): median seconds per step, and the median over
    rounds of its per-round ratio to Adam (or `adam`, a factory); "Adam" maps to (median seconds per step, 1.0)."""
    factories = {"Adam": adam or (lambda params: torch.optim.Adam(params, lr=1e-3, eps=1e-7))}
    for label, cls in (lodo_classes or {"LODO": LODO}).items():
        factories[label] = lambda params, cls=cls: cls(params, seed=0)
    runs = {}
    for label, factory in factories.items():
        task = make_task(name, 0, options)
        runs[label] = (task, factory(task.parameters()))
    for task, optimizer in runs.values():
        seconds_per_step(task, optimizer, warmup)
    times = {label: [] for label in runs}
    for _ in range(rounds):
        for label, (task, optimizer) in runs.items():
            times[label].append(seconds_per_step(task, optimizer, steps))
    return {label: (statistics.median(t), statistics.median(a / b for a, b in zip(t, times["Adam"])))
            for label, t in times.items()}


def sweeps_per_step(cls, n: int, rounds: int, steps: int = 3) -> float:
    """Median over rounds of (seconds of a LODO step on a fixed gradient) / (seconds of theta.add_(1))
    with theta a tensor of θ's size, both in this process."""
    x = torch.zeros(n, requires_grad=True, device=DEVICE)
    x.grad = (torch.randn(n, generator=torch.Generator().manual_seed(0)) * 1e-4).to(DEVICE)
    opt = cls([x], seed=0)
    opt.step()
    opt.step()
    theta = torch.zeros(opt.state[x]["theta"].numel(), device=DEVICE)
    ratios = []
    for _ in range(rounds):
        synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            opt.step()
        synchronize()
        step = (time.perf_counter() - start) / steps
        start = time.perf_counter()
        for _ in range(steps):
            theta.add_(1)
        synchronize()
        ratios.append(step / ((time.perf_counter() - start) / steps))
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--bowl-steps", type=int, default=500, help="steps per round on the noisy bowl")
    parser.add_argument("--cnn-steps", type=int, default=2, help="steps per round on the image CNN")
    parser.add_argument("--transformer-steps", type=int, default=20, help="steps per round on the transformer")
    parser.add_argument("--sweep-n", type=int, default=200_000, help="n of the sweeps measurement (d)")
    parser.add_argument("--skip-cnn", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--baseline", metavar="LODO_PY",
                        help="also time the LODO class of this copy of lodo.py, interleaved (every measurement)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = torch.device(args.device)
    where = torch.cuda.get_device_name() if DEVICE.type == "cuda" else f"CPU: {cpu_name()}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {where}")

    classes = {"LODO": LODO}
    if args.baseline:
        classes["baseline"] = load_lodo(args.baseline)
    result = compare("noisy_bowl", {}, args.bowl_steps, args.rounds, warmup=200, lodo_classes=classes)
    adam = result["Adam"][0]
    for label in classes:
        lodo, ratio = result[label]
        print(f"(a) noisy bowl n=100 float64: Adam {adam * 1e6:.1f} us/step, {label} {lodo * 1e6:.1f} us/step, "
              f"ratio {ratio:.2f} (target <= 2.5)", flush=True)

    model = TinyTransformer(0)
    n = sum(p.numel() for p in model.parameters())
    result = compare("transformer", {}, args.transformer_steps, args.rounds, warmup=10, lodo_classes=classes,
                     adam=lambda params: torch.optim.AdamW(params, lr=1e-3))
    adam = result["Adam"][0]
    for label in classes:
        lodo, ratio = result[label]
        print(f"(c) transformer n={n:,} float32: AdamW {1 / adam:.1f} steps/s, {label} {1 / lodo:.1f} steps/s, "
              f"ratio {ratio:.2f} (target <= 2.5)", flush=True)

    for label, cls in classes.items():
        sweeps = sweeps_per_step(cls, args.sweep_n, args.rounds)
        print(f"(d) n={args.sweep_n:,} float32: one {label} step = {sweeps:.1f} sweeps theta.add_(1) (target <= 15)",
              flush=True)

    if not args.skip_cnn:
        result = compare("image_generation", {"synthetic": True, "batch_size": 256}, args.cnn_steps, args.rounds,
                         warmup=2, lodo_classes=classes)
        adam = result["Adam"][0]
        for label in classes:
            lodo, ratio = result[label]
            print(f"(b) image CNN batch 256 float32: Adam {1 / adam:.3f} steps/s, {label} {1 / lodo:.3f} steps/s, "
                  f"ratio {ratio:.3f} (target <= 0.96)", flush=True)


if __name__ == "__main__":
    main()
