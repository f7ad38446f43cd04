"""The pilot behind `lodo-tune init-schedule --task`: how long a task's trials must be, measured.

A GA individual's fitness is its loss over the trial's last 10 %. If the trial ends before the loss
has left its starting level, every individual scores the same up to noise and selection picks noise
(LODO stays flat for about 280 steps on a small GPT-2; 50-100-step generations could not rank it).
So the pilot trains the task (seed 0, CPU) with each optimizer at its starting values and records
the step at which the loss *separates* from its start: the mean of the last `WINDOW` losses differs
from the mean of the first `WINDOW` by more than `SIGMAS` standard errors of that difference (the
per-step noise taken from successive differences, which a trend barely moves) and by at least 1 %
of the start.

`propose` turns the slowest optimizer's separation into the template's generations: a first trial
length of `FACTOR` times it (rounded up to 1, 2, 2.5 or 5 × 10^k, at least `MIN_STEPS`), so the
loss has moved for most of even the shortest trial, then (1, 1, 2, 4) times that, and full runs 10
times as long. An optimizer whose loss did not separate within the pilot's budget counts as that
budget, and says so.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import numpy as np

import lodo
import tasks
from tuner.driver.preflight import cause, global_rng_kept, starting_values, stepper
from tuner.driver.schedule import Schedule

logger = logging.getLogger(__name__)

WINDOW = 10        # losses per mean (start, and the latest)
SIGMAS = 5         # standard errors a separation must exceed: it is tested at every step, so 3 would fire by chance
FACTOR = 3         # the first trial's length in separation times
MIN_STEPS = 20     # the shortest first trial proposed
SHAPE = (1, 1, 2, 4)  # the generations' lengths in first-trial lengths (the template's 200, 200, 400, 800)
FULL = 10          # full runs in first-trial lengths (the template's 2000)


@dataclass(frozen=True)
class Pilot:
    """One optimizer's pilot: the evaluations run, the one at which the loss separated from its start
    (None: not within the budget), the start's mean loss, the per-step noise, whether it diverged."""

    optimizer: str
    steps: int
    separated: int | None
    start: float
    noise: float
    diverged: bool = False
    error: str | None = None  # what a step raised (the pilot goes on with the other optimizers)

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.optimizer}: a step raised after {self.steps} steps ({self.error})"
        if self.diverged:
            return f"{self.optimizer}: the loss diverged after {self.steps} steps at the starting values"
        if self.separated is None:
            return (f"{self.optimizer}: the loss did not leave its start ({self.start:.4g}, noise {self.noise:.2g} "
                    f"per step) within {self.steps} steps")
        return (f"{self.optimizer}: the loss left its start ({self.start:.4g}, noise {self.noise:.2g} per step) "
                f"after {self.separated} steps")


def noise(losses: np.ndarray) -> float:
    """The per-step noise of a loss curve: 1.4826 · median |successive difference| / √2 (robust to a trend)."""
    if len(losses) < 2:
        return 0.0
    return float(1.4826 * np.median(np.abs(np.diff(losses))) / math.sqrt(2))


def separated(losses: np.ndarray, window: int = WINDOW) -> bool:
    """Whether the last `window` losses' mean has left the first `window`'s (see the module docstring)."""
    if len(losses) < 2 * window:
        return False
    start, now = losses[:window].mean(), losses[-window:].mean()
    threshold = max(SIGMAS * noise(losses) * math.sqrt(2 / window), 0.01 * abs(start))
    return abs(now - start) > threshold


def _run(task, state, name: str, spec, values: dict, budget: int) -> Pilot:
    task.load_state_dict(copy.deepcopy(state))
    kwargs = dict(values)
    if "total_steps" in lodo.options(spec if spec is not None else name):
        kwargs.setdefault("total_steps", budget)
    opt = lodo.create(spec if spec is not None else name, task.parameters(), seed=0, **kwargs)
    step, losses = stepper(task, opt)
    while len(losses) < budget:
        try:
            step()
        except Exception as error:  # noqa: BLE001 - the user's task or optimizer raised
            curve = np.asarray(losses or [math.nan])
            return Pilot(name, len(losses), None, float(curve[:WINDOW].mean()), 0.0, diverged=True,
                         error=cause(error))
        curve = np.asarray(losses)
        if not np.isfinite(curve).all():
            return Pilot(name, len(losses), None, float(curve[:WINDOW].mean()), 0.0, diverged=True)
        if separated(curve):
            return Pilot(name, len(losses), len(losses), float(curve[:WINDOW].mean()), noise(curve))
    curve = np.asarray(losses)
    return Pilot(name, len(losses), None, float(curve[:WINDOW].mean()), noise(curve))


def run(spec: tasks.TaskSpec, schedule: Schedule, optimizers=None, budget: int = 1000) -> list[Pilot]:
    """Train task `spec` (seed 0, CPU, the schedule's task options) with each optimizer at its starting
    values until its loss separates from its start or `budget` evaluations ran."""
    with global_rng_kept():
        task = spec.create(seed=0, device="cpu", **schedule.task_options)
        state = copy.deepcopy(task.state_dict())
        pilots = []
        for name in optimizers or schedule.optimizers:
            pilots.append(_run(task, state, name, schedule.optimizer_specs.get(name),
                               starting_values(schedule, name, None), budget))
            logger.info("pilot: %s", pilots[-1].describe())
        return pilots


def _nice(steps: float) -> int:
    """`steps` rounded up to 1, 2, 2.5 or 5 × 10^k."""
    scale = 10 ** math.floor(math.log10(max(steps, 1)))
    return int(next(m * scale for m in (1, 2, 2.5, 5, 10) if m * scale >= steps))


def propose(pilots: list[Pilot], budget: int) -> dict:
    """{"first": the first trial's length, "generations": each generation's, "full_run": the full runs'}."""
    slowest = max((p.separated if p.separated is not None else budget) for p in pilots if not p.diverged) \
        if any(not p.diverged for p in pilots) else budget
    first = _nice(max(MIN_STEPS, FACTOR * slowest))
    return {"first": first, "generations": [k * first for k in SHAPE], "full_run": FULL * first}
