"""Steps per second of Adam and LODO on the two image tasks, next to the paper's numbers.

Runs `--steps` (default 2,000) optimizer steps on image_generation (batch 256) and
`--resnet-steps` (default 50) on resnet18_cifar10 (batch 2048) with synthetic data of the real
shapes (no downloads), the paper's tuned hyperparameters (docs/paper.md §5, Table 6), float32. Only
the steps after `--warmup` untimed ones are timed, with the device synchronised at both ends.
On CUDA it also checks that the task's sample(), loss() and backward never synchronise with the
host (torch.cuda.set_sync_debug_mode("error")).

Paper (2 V100s for image_generation, Table 2; Table 4 for ResNet-18), steps/s:
image_generation Adam 7.08, LODO 5.64; resnet18_cifar10 Adam 0.0793, LODO 0.0316.

    python benchmarks/gpu_image_tasks.py --device cuda --json $OUT/gpu_image_tasks.json
    python benchmarks/gpu_image_tasks.py --device cpu --steps 5          # smoke test
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tasks.image_generation import ImageGeneration  # noqa: E402
from tasks.resnet18_cifar10 import ResNet18CIFAR10  # noqa: E402

PAPER_STEPS_PER_SECOND = {
    ("image_generation", "Adam"): 7.08,
    ("image_generation", "LODO"): 5.64,
    ("resnet18_cifar10", "Adam"): 0.0793,
    ("resnet18_cifar10", "LODO"): 0.0316,
}
TUNED = {  # docs/paper.md §5 (Table 6); image_generation learning rates already halved
    ("image_generation", "Adam"): dict(lr=0.0009554, beta1=0.9323, beta2=0.99505),
    ("image_generation", "LODO"): dict(meta_lr=7.946e-6, beta=0.9343, lr=0.08459),
    ("resnet18_cifar10", "Adam"): dict(lr=0.0004295, beta1=0.9562, beta2=0.99814),
    ("resnet18_cifar10", "LODO"): dict(meta_lr=0.0001134, beta=0.9490, lr=0.1725),
}
TASKS = {"image_generation": ImageGeneration, "resnet18_cifar10": ResNet18CIFAR10}


def make_optimizer(name: str, params, hparams: dict, seed: int) -> torch.optim.Optimizer:
    """`lodo.create` (the project's registry) if present, else torch.optim.Adam / lodo.lodo.LODO."""
    try:
        from lodo import create
    except ImportError:
        create = None
    if create is not None:
        return create(name, params, seed=seed, **hparams)
    if name == "Adam":
        return torch.optim.Adam(params, lr=hparams["lr"], betas=(hparams["beta1"], hparams["beta2"]), eps=1e-7)
    if name == "LODO":
        from lodo.lodo import LODO

        return LODO(params, seed=seed, **hparams)
    raise ValueError(f"Invalid optimizer: {name} (this benchmark knows Adam and LODO)")


def lodo_state_gib(num_parameters: int, depth: int = 16, block_size: int = 4) -> float:
    """θ of LODO plus its two Adam moments: 3 · N · ñ · k float32 values, ñ ≈ 2n (docs/paper.md §1)."""
    return 3 * depth * 2 * num_parameters * block_size * 4 / 2**30


def physical_memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return math.inf


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(task_name: str, optimizer: str, steps: int, warmup: int, device: torch.device, options: dict) -> dict:
    """Time `steps` steps of `optimizer` on `task_name`; losses stay on the device until the end."""
    task = TASKS[task_name](seed=0, device=device, synthetic=True, **options)
    n = sum(p.numel() for p in task.parameters())
    if optimizer.startswith("LODO") and device.type == "cpu" and lodo_state_gib(n) > 0.5 * physical_memory_gib():
        raise MemoryError(f"LODO's state for n = {n:,} needs about {lodo_state_gib(n):.0f} GiB "
                          f"(this machine has {physical_memory_gib():.0f} GiB); run it on CUDA")
    opt = make_optimizer(optimizer, task.parameters(), TUNED[(task_name, optimizer)], seed=0)
    losses = torch.empty(warmup + steps, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def one_step(i: int) -> None:
        batch = task.sample()

        def closure():
            opt.zero_grad(set_to_none=True)
            loss = task.loss(batch)
            loss.backward()
            return loss

        losses[i] = opt.step(closure).detach()

    for i in range(warmup):
        one_step(i)
    host_syncs = None
    if device.type == "cuda":
        # sample(), loss() and backward must never wait for the device; checked after the warm-up,
        # once cuDNN has chosen its algorithms.
        torch.cuda.set_sync_debug_mode("error")
        try:
            task.loss(task.sample()).backward()
            host_syncs = "none"
        except RuntimeError as error:
            host_syncs = str(error).splitlines()[0]
        finally:
            torch.cuda.set_sync_debug_mode("default")
            opt.zero_grad(set_to_none=True)
    synchronize(device)
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        one_step(i)
    synchronize(device)
    seconds = time.perf_counter() - start
    timed = losses[warmup:].double().cpu()
    last = timed[-max(1, math.ceil(0.1 * steps)):]
    return {
        "task": task_name,
        "optimizer": optimizer,
        "steps": steps,
        "batch_size": task.batch_size,
        "seconds": seconds,
        "steps_per_second": steps / seconds,
        "paper_steps_per_second": PAPER_STEPS_PER_SECOND[(task_name, optimizer)],
        "first_loss": float(losses[0]),
        "last_10pct_loss": float(last.mean()),
        "finite": bool(torch.isfinite(timed).all()),
        "host_syncs_in_sample_loss_backward": host_syncs,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=2000, help="image_generation steps (timed)")
    parser.add_argument("--resnet-steps", type=int, default=None,
                        help="resnet18_cifar10 steps (default 50, at most --steps)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (cuDNN autotuning, allocator)")
    parser.add_argument("--optimizers", nargs="+", default=["Adam", "LODO"])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--batch-size", type=int, default=256, help="image_generation batch")
    parser.add_argument("--resnet-batch-size", type=int, default=None, help="default 2048 on CUDA, 64 on CPU")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format (CUDA)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(1)
    resnet_steps = args.resnet_steps if args.resnet_steps is not None else min(50, args.steps)
    resnet_batch = args.resnet_batch_size or (2048 if device.type == "cuda" else 64)
    options = {
        "image_generation": dict(batch_size=args.batch_size, channels_last=args.channels_last),
        "resnet18_cifar10": dict(batch_size=resnet_batch, channels_last=args.channels_last),
    }
    steps = {"image_generation": args.steps, "resnet18_cifar10": resnet_steps}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}, cudnn.allow_tf32="
          f"{torch.backends.cudnn.allow_tf32}, matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}")

    results = []
    print(f"{'task':<18} {'optimizer':<9} {'batch':>5} {'steps':>6} {'seconds':>9} {'steps/s':>9} "
          f"{'paper':>7} {'loss(last10%)':>13}")
    for task_name in args.tasks:
        for optimizer in args.optimizers:
            try:
                r = benchmark(task_name, optimizer, steps[task_name], args.warmup, device, options[task_name])
            except (ImportError, AttributeError, ValueError, MemoryError) as error:
                print(f"{task_name:<18} {optimizer:<9} skipped: {error}")
                continue
            results.append(r)
            print(f"{task_name:<18} {optimizer:<9} {r['batch_size']:>5} {r['steps']:>6} {r['seconds']:>9.2f} "
                  f"{r['steps_per_second']:>9.3f} {r['paper_steps_per_second']:>7.4g} {r['last_10pct_loss']:>13.4f}"
                  + ("" if r["finite"] else "  (non-finite losses)")
                  + ("" if r["host_syncs_in_sample_loss_backward"] in (None, "none")
                     else f"  (host sync: {r['host_syncs_in_sample_loss_backward']})"), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": name, "torch": torch.__version__, "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
