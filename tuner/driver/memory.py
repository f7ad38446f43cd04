"""How much memory one trial needs, so that Ray places no more trials on a node than fit.

    need = BASE_BYTES + itemsize · (2n + optimizer_values(optimizer, n)) + task_bytes

n is the task's parameter count and itemsize its dtype's size (float32: 4, the noisy bowl's
float64: 8); 2n are the parameters and their gradients. `optimizer_values` is the optimizer's
peak state and step temporaries in values of that dtype:

    Momentum, LARS                       n          (one momentum buffer)
    Adam, Yogi, RMSprop                  2n         (two moments)
    L-BFGS, O-LBFGS                      2·48·n + 4n (48 (s, y) pairs of history)
    BFGS, Levenberg-Marquardt, Newton    4n²        (an n×n matrix and the step's n×n temporaries)
    LODO, LODO-No-Momentum, LODO-SGD     5T + n     with T = N·ñ·k = 16 · 2n · 4 ≈ 128n, the size of θ
    LODO-Residuals                       15T + n
    LODO-Diagonal, LODO-Global           8n
    L2LBGDBGD                            100n       (a 2-layer, 20-unit LSTM state per coordinate)
    any other (a registered optimizer)   DEFAULT_VALUES_PER_PARAMETER · n = 4n

LODO's state is θ and its two Adam moments, 3T = 3·16·2n·4 ≈ 384n values (ResNet-18, n = 11.2 M:
16 GiB in float32), plus the N·ñ int32 permutations (0.25T in float32 units) and the momentum; the
step keeps each layer's a(m), λ(y), a(g) (0.75T) and int32 gather indices (0.5T), and runs the
meta-step a layer at a time (lodo.lodo.BlockLanes): 4.7T held, a peak resident set of 4.9–5.0T
(benchmarks/lodo_memory.py), so 5T: ResNet-18 + LODO needs ≈ 27 GiB per trial besides its data.

task_bytes is what the task holds besides its parameters: its data, its activations. A task may
say it, and its parameter count, without being built: a `memory_footprint(**options)` attribute
on its class or factory returning {"parameters": n, "itemsize": bytes, "bytes": task_bytes}, as
every built-in task has (the task owns what it holds). Any other task is built once on the driver
(CPU, seed 0) and its parameters counted (task_bytes 0).

BASE_BYTES (1 GiB) is one trial process without its trial: Python, torch, Ray's worker.
"""
from __future__ import annotations

import tasks
from lodo.lodo import hidden_width
from tuner.driver.plan import PlanError

BASE_BYTES = 1 << 30
DEFAULT_VALUES_PER_PARAMETER = 4
GiB = float(1 << 30)

_LINEAR = {"Momentum": 1, "LARS": 1, "Adam": 2, "Yogi": 2, "RMSprop": 2, "L-BFGS": 100, "O-LBFGS": 100,
           "LODO-Diagonal": 8, "LODO-Global": 8, "L2LBGDBGD": 100}
_QUADRATIC = {"BFGS", "Levenberg-Marquardt", "Newton"}
_LODO_PEAK = {"LODO": 5, "LODO-No-Momentum": 5, "LODO-SGD": 5, "LODO-Residuals": 15}


def optimizer_values(optimizer: str, n: int) -> int:
    """Peak optimizer state + step temporaries of `optimizer` over n parameters, in values (table above)."""
    if optimizer in _LODO_PEAK:
        theta = 16 * hidden_width(n, 4) * 4  # N · ñ · k at the defaults depth 16, block size 4
        return int(_LODO_PEAK[optimizer] * theta) + n
    if optimizer in _QUADRATIC:
        return 4 * n * n
    return _LINEAR.get(optimizer, DEFAULT_VALUES_PER_PARAMETER) * n


def task_footprint(task, task_options: dict | None = None) -> dict:
    """{"parameters", "itemsize", "bytes"} of `task` (anything `tasks.resolve` takes) with its options."""
    options = dict(task_options or {})
    spec = tasks.resolve(task)
    own = getattr(spec.factory, "memory_footprint", None)
    if callable(own):
        out = dict(own(**options))
        return {"parameters": int(out["parameters"]), "itemsize": int(out.get("itemsize", 4)),
                "bytes": int(out.get("bytes", 0))}
    params = list(spec.create(seed=0, device="cpu", **options).parameters())
    return {"parameters": sum(p.numel() for p in params),
            "itemsize": params[0].element_size() if params else 4, "bytes": 0}


def trial_memory(task, optimizer: str, task_options: dict | None = None) -> int:
    """Bytes one trial of `optimizer` on `task` needs (module docstring)."""
    f = task_footprint(task, task_options)
    n = f["parameters"]
    return int(BASE_BYTES + f["itemsize"] * (2 * n + optimizer_values(optimizer, n)) + f["bytes"])


def slot_memory(task, optimizers, task_options: dict | None = None) -> tuple[int, str]:
    """The memory one worker slot requests, and whose need it is: the largest need among the run's
    optimizers, since slots are long-lived actors that run every optimizer's trials."""
    needs = {o: trial_memory(task, o, task_options) for o in optimizers}
    worst = max(needs, key=needs.get)
    return needs[worst], worst


def check_memory(plan) -> int:
    """The bytes each worker slot of `plan` requests (`resources.memory_per_trial` GiB, else
    `slot_memory`); PlanError when that is more than the largest alive Ray node has. Needs Ray."""
    import ray  # imported by init_ray already

    r, options = plan.resources, dict(plan.schedule.task_options)
    if r.memory_per_trial is not None:
        need, what = int(r.memory_per_trial * GiB), "a trial (resources.memory_per_trial)"
    else:
        try:
            need, worst = slot_memory(plan.spec, plan.optimizers, options)
        except Exception as e:  # noqa: BLE001 - a user task that cannot be built here
            raise PlanError("resources.memory_per_trial", f"cannot estimate a trial's memory: building task "
                            f"{plan.task!r} failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                            "give it explicitly") from None
        what = f"a trial of {worst} on {plan.task}"
    nodes = [n.get("Resources", {}).get("memory", 0) for n in ray.nodes() if n.get("Alive")]
    largest = max(nodes, default=0)
    if need > largest:
        raise PlanError("resources.memory_per_trial", f"{what} needs {need / GiB:.1f} GiB, more than the largest "
                        f"Ray node has ({largest / GiB:.1f} GiB of Ray memory): use a larger node or another optimizer")
    return need
