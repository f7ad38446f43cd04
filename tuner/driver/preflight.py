"""The pre-flight: the task and every optimizer of a run tried for a couple of steps before the first trial.

A mistake in a user's task or schedule would otherwise surface as a run whose every trial raises,
or, worse, as a run that tunes a value nothing reads. `check` builds the task (seed 0, CPU) and,
for every optimizer at its starting values, takes `STEPS` optimizer steps:

- `parameters()` is a non-empty list of tensors, some of which require grad (a frozen one is fine);
- `loss(sample())` is a one-element floating tensor, finite, with a graph to the parameters;
- `evaluate()` (a user task's) returns a mapping of names to numbers;
- each optimizer constructs and steps (a step that raises after a NaN/inf loss is a divergence,
  which the trials judge, not a mistake);
- a hyperparameter or fixed argument that reaches a constructor only through its `**kwargs` is
  read by a step from the optimizer's `param_groups` or `defaults`: a misspelt one is swallowed,
  and stored there or not (pytorch_optimizer keeps its **kwargs in `defaults`), nothing reads it.

The first problem found is a `PreflightError` naming the task or the optimizer, one line. The paper's
image tasks are not built (that loads a dataset and a network): their optimizers step on a
10-dimensional noisy bowl instead. Everything runs with the global random generators (torch,
numpy, `random`) saved and restored, so what runs afterwards draws exactly as without it.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import math
import random
import warnings
from collections.abc import Mapping

import numpy as np
import torch

import lodo
import tasks
from lodo.registry import OptimizerSpec, validate
from tuner.trial import recipe as recipes
from tuner.driver.schedule import Schedule, space_for

STEPS = 2               # optimizer steps per optimizer
_BUILT = ("noisy_bowl", "rosenbrock")  # built-in tasks cheap enough to build; the others step on a stand-in
_STAND_IN = {"dim": 10}  # the noisy bowl the image tasks' optimizers step on


class PreflightError(ValueError):
    """A mistake found before the first trial; `.parameter` is what it is about ("task", "optimizers",
    "schedule", "hyperparameters") and str(error) one line."""

    def __init__(self, parameter: str, message: str):
        super().__init__(message)
        self.parameter, self.message = parameter, message


def cause(error: BaseException) -> str:
    """`Type: first line` of an exception, cut to a readable length."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextlib.contextmanager
def global_rng_kept():
    """Run the block with torch's, numpy's and `random`'s global generators restored afterwards."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def starting_values(schedule: Schedule, optimizer: str, given: dict | None) -> dict[str, float]:
    """What a first trial or full run of `optimizer` would run: the given values, else generation 0's mean."""
    if given is not None:
        return dict(given[optimizer])
    return {d.name: d.default for d in space_for(schedule, optimizer)}


def _check_loss(loss, params: list[torch.Tensor], where: str) -> None:
    if not isinstance(loss, torch.Tensor):
        raise PreflightError("task", f"{where}: loss() returned {type(loss).__name__}, not a tensor")
    if loss.numel() != 1:
        raise PreflightError("task", f"{where}: loss() returned a tensor of shape {tuple(loss.shape)}, not a scalar "
                                     f"(reduce it, e.g. with .mean())")
    if not loss.dtype.is_floating_point:
        raise PreflightError("task", f"{where}: loss() returned a {loss.dtype} tensor (must be floating point)")
    if not math.isfinite(loss.item()):
        raise PreflightError("task", f"{where}: loss() at the initial parameters is {loss.item()}")
    if loss.grad_fn is None:
        raise PreflightError("task", f"{where}: loss() has no graph to the parameters (computed under no_grad, "
                                     f"detached, or from tensors that are not parameters())")
    grads = torch.autograd.grad(loss, [p for p in params if p.requires_grad], allow_unused=True, retain_graph=True)
    if all(g is None for g in grads):
        raise PreflightError("task", f"{where}: loss() does not depend on parameters() (no gradient reaches any)")


def _call(where: str, what: str, fn):
    """fn(), its exception one line naming the task and the call."""
    try:
        return fn()
    except PreflightError:
        raise
    except Exception as error:  # noqa: BLE001 - the user's code raised
        raise PreflightError("task", f"{where}: {what} failed ({cause(error)})") from None


def _check_task(task, where: str, user: bool) -> None:
    returned = _call(where, "parameters()", task.parameters)
    params = list(returned) if isinstance(returned, (list, tuple)) or inspect.isgenerator(returned) else None
    if params is None or not params or not all(isinstance(p, torch.Tensor) for p in params):
        raise PreflightError("task", f"{where}: parameters() returned {type(returned).__name__}"
                                     f"{' without tensors' if params is not None else ''} (must be a non-empty "
                                     f"list of tensors)")
    if not any(p.requires_grad for p in params):
        raise PreflightError("task", f"{where}: none of parameters() requires grad (nothing to optimise)")
    batch = _call(where, "sample()", task.sample)
    _check_loss(_call(where, "loss()", lambda: task.loss(batch)), list(params), where)
    if user:
        metrics = _call(where, "evaluate()", task.evaluate)
        if not isinstance(metrics, Mapping) or not all(
                isinstance(k, str) and isinstance(v, (int, float, torch.Tensor, np.number)) for k, v in metrics.items()):
            raise PreflightError("task", f"{where}: evaluate() returned {type(metrics).__name__} "
                                         f"(must be a mapping of metric names to numbers)")


class _Reads(dict):
    """A param group (or `defaults`) that notes which of its keys are read."""

    def __init__(self, data, read: set):
        super().__init__(data)
        self.read = read

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def setdefault(self, key, default=None):
        self.read.add(key)
        return super().setdefault(key, default)

    def items(self):  # whoever reads them all reads every one
        self.read.update(self.keys())
        return super().items()

    def values(self):
        self.read.update(self.keys())
        return super().values()


def _kwargs_only(spec: OptimizerSpec) -> tuple[str, list[str]]:
    """The constructor's name and the spec's argument names it takes only through **kwargs."""
    constructor = validate(spec)
    params = list(inspect.signature(constructor).parameters.values())
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        return "", []
    named = {p.name for p in params}
    keys = [h.name for h in spec.hyperparameters] + list(spec.fixed)
    bases = dict.fromkeys(k.partition(".")[0] if k.partition(".")[2].isdigit() else k for k in keys)
    label = spec.optimizer if isinstance(spec.optimizer, str) else getattr(constructor, "__qualname__", "it")
    return label, [b for b in bases if b not in named]


def stepper(task, opt, after_backward=None):
    """(step, losses): `step()` takes one optimizer step on `task` as the trial loop does (a sample,
    then `opt.step(closure)`; `after_backward()` in the closure: a recipe's clipping), and `losses`
    gets each evaluation's loss."""
    create_graph = getattr(opt, "create_graph", False)
    losses: list[float] = []
    batch = None

    def closure():
        opt.zero_grad()
        loss = task.loss(batch)
        loss.backward(create_graph=create_graph)
        if after_backward is not None:
            after_backward()
        losses.append(loss.item())
        return loss

    def step() -> None:
        nonlocal batch
        batch = task.sample()
        opt.step(closure)

    return step, losses


def _check_optimizer(task, state, where: str, name: str, spec, values: dict, full_steps: int, given: bool,
                     recipe: dict | None = None) -> None:
    """Two steps of `name` at `values` on `task`, the way a trial takes them: over the task's
    parameter groups, with the schedule's `recipe` (clipping, lr schedule, train() mode)."""
    _call(where, "load_state_dict()", lambda: task.load_state_dict(copy.deepcopy(state)))
    params = list(task.parameters())
    values, resolved = recipes.split(recipe, values)
    kwargs = dict(values)
    if "total_steps" in lodo.options(spec if spec is not None else name) and "total_steps" not in kwargs:
        kwargs["total_steps"] = full_steps  # LARS's decay over the run
    try:
        opt = lodo.create(spec if spec is not None else name, recipes.param_groups(task, name, params), seed=0,
                          **kwargs)
        loop = recipes.Loop(resolved, opt, params, full_steps, getattr(opt, "create_graph", False))
    except Exception as error:  # noqa: BLE001 - the optimizer's own code raised
        shown = ", ".join(f"{k}={v:g}" for k, v in values.items())
        raise PreflightError("hyperparameters" if given else "optimizers",
                             f"{name}: building it at {shown or 'its defaults'} failed ({cause(error)})") from None
    label, only_kwargs = _kwargs_only(spec) if spec is not None else ("", [])
    read: set = set()
    if only_kwargs:  # watch which of its settings a step reads
        opt.defaults = _Reads(opt.defaults, read)
        opt.param_groups[:] = [_Reads(group, read) for group in opt.param_groups]
    create_graph = getattr(opt, "create_graph", False)
    step, losses = stepper(task, opt, loop.after_backward)
    for _ in range(STEPS):
        try:
            step()
            loop.after_step(len(losses))
        except Exception as error:  # noqa: BLE001 - the optimizer's or the task's code raised
            if not all(math.isfinite(x) for x in losses):
                return  # diverged: the trials judge that
            raise PreflightError("optimizers", f"{name}: a step at its starting values raised "
                                               f"({cause(error)})") from None
        if not all(math.isfinite(x) for x in losses):
            return
    for key in only_kwargs:
        if key not in read:
            taken = sorted(k for k in read if k != "params")
            raise PreflightError("schedule", f"optimizer {name!r}: {label} does not take {key!r} (its **kwargs "
                                             f"accept it, but a step never reads it: misspelt? a step reads: "
                                             f"{', '.join(taken) or 'none of its settings'})")
    if create_graph:
        opt.zero_grad(set_to_none=True)


def _known_to_run(spec: tasks.TaskSpec, schedule: Schedule, name: str, given: dict | None, paper: bool) -> bool:
    """A paper's task with one of our optimizers at the registry's defaults or Table 6's values: what the
    test suite runs. Skipped, so the paper's runs pay nothing (constructing a first torch optimizer
    imports torch._dynamo: about a second)."""
    ours = name not in schedule.optimizer_specs and lodo.registered(name) is None
    plain = not schedule.recipe.get(name) and (paper or given is None and not schedule.start.get(name))
    return spec.builtin and ours and plain


def check(spec: tasks.TaskSpec, schedule: Schedule, optimizers, given: dict | None = None, paper: bool = False,
          task=None) -> None:
    """Raise `PreflightError` for the first mistake in task `spec` (or its already built `task`, seed 0,
    CPU) or in `optimizers` at their starting values (`given`: {optimizer: values} instead of the
    schedule's; `paper`: they are Table 6's)."""
    user = not spec.builtin
    where = repr(spec.name)
    todo = [name for name in optimizers if not _known_to_run(spec, schedule, name, given, paper)]
    if spec.builtin and not todo and not schedule.task_options:
        return  # the paper's task as bundled, with our optimizers at values the test suite runs
    with global_rng_kept(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the trials show the user's code's warnings, not the pre-flight
        if spec.builtin and spec.name not in _BUILT:
            task = tasks.create("noisy_bowl", seed=0, **_STAND_IN)
        elif task is None:
            try:
                task = spec.create(seed=0, device="cpu", **schedule.task_options)
            except Exception as error:  # noqa: BLE001
                options = f" with task_options {schedule.task_options}" if schedule.task_options else ""
                raise PreflightError("task", f"{where}: building it{options} failed ({cause(error)})") from None
        _check_task(task, where, user)
        state = _call(where, "state_dict()", lambda: copy.deepcopy(task.state_dict()))
        for name in todo:
            _check_optimizer(task, state, where, name, schedule.optimizer_specs.get(name),
                             starting_values(schedule, name, given), schedule.full_run.steps, given is not None,
                             schedule.recipe.get(name))
