"""LODO's peak memory in units of T = N·ñ·k (the size of θ), and the model sizes it implies.

Each measurement runs in a fresh process: a small optimizer of the same form steps first (so the
code a step runs is paged in), x (n,) float32 and its gradient exist; the peak resident set
(VmHWM, reset through /proc/self/clear_refs) is then read over building the optimizer and, reset
again, over its first three steps, each above the resident set before building, divided by 4·T
bytes. Large tensors are mmap'd by malloc and returned on free, so the resident set follows what
is alive; the number is an upper bound (it includes the allocator's retained blocks).

    python benchmarks/lodo_memory.py                       # lodo.LODO and BatchedLODO (P = 2), n = 1e5, 1e6
    python benchmarks/lodo_memory.py --dims 100000 --baseline-lodo /tmp/old_lodo.py --baseline-batched /tmp/old_batched.py

n = 1e7 needs about 5·T·4 bytes = 26 GB (ask for it with --dims 10000000 on a machine that has it).
ResNet-18 (11,173,962 parameters) + LODO in float32: parameters and gradients 2n, plus the peak.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys

RESNET18_PARAMETERS = 11_173_962


def theta_size(n: int, depth: int = 16, k: int = 4) -> int:
    from lodo.lodo import hidden_width

    return depth * hidden_width(n, k) * k


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM ← VmRSS


def child(form: str, n: int, lanes: int, source: str | None) -> dict:
    """Measure one (form, n) in this process: the peaks over construction and over three steps,
    in bytes above the resident set before construction."""
    import torch

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    if form == "LODO":
        cls = _load(source, "baseline_lodo").LODO if source else __import__("lodo.lodo", fromlist=["LODO"]).LODO
        x = torch.zeros(n, requires_grad=True)
        x.grad = torch.randn(n, generator=generator) * 1e-3
        warm = torch.zeros(100, requires_grad=True)  # page in the code a step runs (LAPACK's QR, ...) first
        warm.grad = torch.ones(100)
        opt = cls([warm], seed=0)
        for _ in range(3):
            opt.step()
        del opt
        base = _status("VmRSS")
        _reset_peak()
        opt = cls([x], seed=0)
        built = _status("VmHWM")
        _reset_peak()
        for _ in range(3):
            opt.step()
    else:
        module = _load(source, "baseline_batched") if source else __import__("lodo.batched", fromlist=["create"])
        x = torch.zeros(lanes, n)
        g = torch.randn(lanes, n, generator=generator) * 1e-3
        warm = torch.zeros(lanes, 100)
        opt = module.create("LODO", warm, [{}] * lanes, list(range(lanes)))
        for _ in range(3):
            opt.step(warm, lambda: (None, torch.ones(lanes, 100)))
        del opt
        base = _status("VmRSS")
        _reset_peak()
        opt = module.create("LODO", x, [{}] * lanes, list(range(lanes)))
        built = _status("VmHWM")
        _reset_peak()
        for _ in range(3):
            opt.step(x, lambda: (None, g))
    return {"build_bytes": built - base, "step_bytes": _status("VmHWM") - base}


def measure(form: str, n: int, lanes: int, source: str | None) -> tuple[float, float]:
    """Peaks over construction and over the steps in units of T (of all lanes), in a fresh process."""
    command = [sys.executable, __file__, "--child", form, str(n), str(lanes), source or ""]
    out = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    unit = 4 * theta_size(n) * (lanes if form != "LODO" else 1)
    return out["build_bytes"] / unit, out["step_bytes"] / unit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", nargs="+", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--lanes", type=int, default=2, help="lanes of the batched form")
    parser.add_argument("--baseline-lodo", metavar="LODO_PY", help="also measure the LODO of this copy of lodo.py")
    parser.add_argument("--baseline-batched", metavar="BATCHED_PY", help="also measure this copy of batched.py")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        form, n, lanes, source = args.child
        print(json.dumps(child(form, int(n), int(lanes), source or None)))
        return

    runs = [("LODO", "lodo.LODO", None), ("batched", f"BatchedLODO P={args.lanes}", None)]
    if args.baseline_lodo:
        runs.append(("LODO", "baseline LODO", args.baseline_lodo))
    if args.baseline_batched:
        runs.append(("batched", f"baseline batched P={args.lanes}", args.baseline_batched))
    print("float32, one thread; peak resident memory over construction and over 3 steps, above the parameters and gradient")
    peaks = {}
    for n in args.dims:
        for form, label, source in runs:
            build, peak = measure(form, n, args.lanes, source)
            peaks.setdefault(label, []).append(max(build, peak))
            print(f"{label:>26}  n = {n:>10,}  T = {theta_size(n):>13,}  construction {build:.2f}·T, "
                  f"steps {peak:.2f}·T", flush=True)
    for label, values in peaks.items():
        worst = max(values)
        total = 4 * (2 * RESNET18_PARAMETERS + worst * theta_size(RESNET18_PARAMETERS)) / 2**30
        print(f"{label:>26}: ResNet-18 + LODO ≈ {total:.1f} GiB (float32, at {worst:.2f}·T)")


if __name__ == "__main__":
    main()
