"""Pruning hopeless trials (opt-in, the schedule's `prune:`): a GA trial whose running loss at fixed
fractions of its length is clearly worse than the previous generation's there stops early.

    prune: {at: [0.1, 0.25, 0.5], quantile: 1}

At each fraction f of `at`, a trial of S steps records its running loss (the mean of the last
10 % of its first e = round(f·S) losses, as a fitness is of all of them). A trial of generation
g ≥ 1 stops at e when that running loss exceeds the `quantile` of the running losses at the same
fraction of generation g − 1's better half (the trials the GA selected; order statistic
⌈quantile·n⌉ of n; default 1: the worst of them): clearly worse than every trial the GA kept
last time was at that point. Its losses end at e, its fitness is +inf (it ranks below every
trial that finished, as a diverged one does: the GA's selection takes finite fitness only) and
its record says `pruned`. Generation 0, and a `final: finalists` row, are never pruned.

Every threshold is computed from recorded values of a complete generation before the next one's
trials start, so the same seed prunes the same trials whatever the worker count, timing,
batching or order of arrival, and a resumed run computes them again from the run directory.
"""
from __future__ import annotations

import math

import numpy as np

KEYS = ("at", "quantile")


def running_loss(losses: np.ndarray) -> float:
    """The mean of the last ceil(10 %) of `losses` (the fitness's window, up to a prune point)."""
    count = max(1, math.ceil(0.1 * len(losses)))
    return float(np.mean(losses[-count:]))


def points(fractions, steps: int) -> list[int]:
    """The evaluations e = max(1, round(f·steps)) at which a trial of `steps` records its running loss."""
    return [max(1, min(steps - 1, round(f * steps))) for f in fractions]


def thresholds(previous: list[tuple[float, list[float]]], count: int, quantile: float) -> list[float | None]:
    """Per prune point, the `quantile` of the running losses there of the previous generation's
    better half (`previous`: each trial's (fitness, running losses); the better half: the
    len // 2 trials of lowest finite fitness, ties by order, as the GA selects); None: no threshold."""
    finished = sorted((f, i) for i, (f, _) in enumerate(previous) if math.isfinite(f))
    better = [previous[i][1] for _, i in finished[: len(previous) // 2]]
    out = []
    for k in range(count):
        values = sorted(r[k] for r in better if len(r) > k and math.isfinite(r[k]))
        out.append(values[max(0, math.ceil(quantile * len(values)) - 1)] if values else None)
    return out


def validate(data) -> dict | None:
    """The `prune:` mapping checked: ValueError "field: value is not allowed (why)" relative to it."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ValueError(f": {data!r} is not allowed (must be a mapping {{at, quantile}})")
    for key in data:
        if key not in KEYS:
            raise ValueError(f".{key}: unknown key (allowed: {', '.join(KEYS)})")
    at = data.get("at", [0.1, 0.25, 0.5])
    if not isinstance(at, list) or not at or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                                 or not 0 < v < 1 for v in at) or sorted(set(at)) != at:
        raise ValueError(f".at: {at!r} is not allowed (must be a non-empty increasing list of fractions in (0, 1))")
    quantile = data.get("quantile", 1.0)
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 < quantile <= 1:
        raise ValueError(f".quantile: {quantile!r} is not allowed (must be a number in (0, 1])")
    return {"at": [float(v) for v in at], "quantile": float(quantile)}


class Pruner:
    """The prune points ((evaluation, threshold or None), ...) of one trial (`run_trial`: `due`,
    `stops`) or of each lane of a batch (`run_batched_trial`: `cut` at every check). A lane's
    running losses are recorded from its recorded losses, so a resumed trial finds them again."""

    def __init__(self, prune, lanes: int = 1):
        self.points = list(prune or ())
        self.running: list[list[float]] = [[] for _ in range(lanes)]
        self.pruned: list[dict | None] = [None] * lanes

    def _advance(self, lane: int, losses: np.ndarray, reached: int) -> bool | None:
        """Record `lane`'s running loss at each point within its `reached` evaluations: True once
        pruned (it stops at that point), None at a NaN/inf before a point (divergence, the run's own
        rule), False to go on."""
        for e, threshold in self.points[len(self.running[lane]):]:
            if e > reached:
                return False
            window = losses[:e]
            if not np.isfinite(window).all():
                return None
            self.running[lane].append(running_loss(window))
            if threshold is not None and self.running[lane][-1] > threshold:
                self.pruned[lane] = {"evaluation": e, "running_loss": self.running[lane][-1], "threshold": threshold}
                return True
        return False

    def due(self, count: int) -> bool:
        k = len(self.running[0])
        return k < len(self.points) and count >= self.points[k][0]

    def stops(self, recorder) -> bool:
        """One trial, at the points reached: True to stop (pruned, or diverged before)."""
        diverged = recorder.flush()
        state = self._advance(0, recorder.losses[0], recorder.count)
        if state is None:
            return True
        if state:
            recorder.stop_at(self.pruned[0]["evaluation"])
            return True
        return diverged

    def cut(self, recorder) -> list[int]:
        """A batch, at a check: the rows of `recorder.running` pruned at the points they reached
        (each lane's losses then end at its point)."""
        rows = []
        for row, lane in enumerate(recorder.running):
            if self._advance(lane, recorder.losses[lane], recorder.count):
                recorder.counts[lane] = self.pruned[lane]["evaluation"]  # the batch's recording goes on
                rows.append(row)
        return rows

    def result(self, lane: int = 0) -> dict:
        return {"running": tuple(self.running[lane]), "pruned": self.pruned[lane]} if self.points else {}


def summary(res) -> dict:
    """A trial result's pruning fields for its record ({} without prune points)."""
    if getattr(res, "running", None) is None:
        return {}
    return {"running": list(res.running), **({"pruned": res.pruned} if res.pruned else {})}
