"""A run's results, read from its run directory (finished or not), and the cells of the paper's
tables, shared by `tuner.driver.api`, `tuner.report.export`, `tuner.report.report` and the CLI. No Ray, no torch.

Table 6 layout: one row per optimizer, "lr / beta1 / beta2" and "1.164 / 0.465 / 0.9884" (4
significant digits); an optimizer still tuning shows its current GA mean, "(generation g/G)".
Table 1 layout: one row per optimizer, "mean ± std" over seeds at the step milestone and (when
the run has one) at the time milestone; "diverged" when no seed stayed finite; runs that raised are
errors, counted apart ("(k/n raised)"), never divergences. With a schedule `objective` other than
the training loss, its mean over seeds is a column of its own beside the loss.
An optimizer whose trials kept raising is "failed": no values, the first error and its traceback file.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from tuner.driver.rundir import RunDir


@dataclasses.dataclass
class TuneResult:
    """What tuning (and, through `run`, the full runs) produced."""

    task: str
    run_dir: Path
    hyperparameters: dict[str, dict[str, float]]   # used for full runs (lr × lr_scale)
    raw: dict[str, dict[str, float]]               # the final GA means (before lr_scale)
    history: dict[str, list[dict]]                 # GeneticAlgorithm.history per optimizer
    reused: int = 0                                # individuals read back from the run dir
    ran: int = 0                                   # individuals run in this session
    errors: int = 0                                # trials that raised (individuals rank last)
    efficiency: float = float("nan")               # Σ compute s / (wall s × workers)
    wall_seconds: float = 0.0
    workers: int = 0
    report: dict | None = None                     # full-run report (see `summarise_full`)
    full_reused: int = 0
    full_ran: int = 0
    retries: int = 0                               # environmental failures run again (never in `errors`)
    failed: dict = dataclasses.field(default_factory=dict)  # optimizer -> why it failed (Session._fail)


def summarise_full(records: list[dict]) -> dict:
    """Mean ± std (population std, ddof 0) over seeds of the finite losses; diverged runs and runs
    that raised (errors: the first one's last line and traceback file) counted apart."""
    raised = [r for r in records if r.get("error")]

    def stats(key):
        vals = [r[key] for r in records if r.get(key) is not None and not r.get("error")]
        finite = [v for v in vals if math.isfinite(v)]
        if not vals:
            return None, None
        if not finite:
            return math.inf, None
        return float(np.mean(finite)), float(np.std(finite))

    step_mean, step_std = stats("final_loss")
    time_mean, time_std = stats("time_loss")
    sps = [r["steps_per_second"] for r in records if r.get("steps_per_second")]
    held_out: dict[str, list[float]] = {}  # the task's evaluate() after each full run (e.g. test_accuracy)
    for r in records:
        for key, value in (r.get("held_out") or {}).items():
            held_out.setdefault(key, []).append(value)
    return {
        "seeds": len(records),
        "steps": records[0]["steps"] if records else None,
        "time_milestone_s": records[0].get("time_milestone_s") if records else None,
        "final_loss_mean": step_mean, "final_loss_std": step_std,
        "time_loss_mean": time_mean, "time_loss_std": time_std,
        "steps_per_second": float(np.mean(sps)) if sps else None,
        "diverged": sum(1 for r in records if not r.get("error") and
                        (r.get("diverged") or not math.isfinite(r.get("final_loss", math.inf)))),
        "errors": len(raised),
        "first_error": raised[0]["error"] if raised else None,
        "traceback": raised[0].get("traceback") if raised else None,
        "held_out": {k: float(np.mean(v)) for k, v in held_out.items()},
    }


def spread(values: list[float]) -> dict:
    """Mean, std (population, ddof 0, as `summarise_full`), min and max over the finite `values`
    (e.g. one number per run), with n (finite ones) and how many were not finite (diverged)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    out = {"n": len(finite), "diverged": sum(1 for v in values if v is not None and not math.isfinite(v))}
    if not finite:
        return {**out, "mean": None, "std": None, "min": None, "max": None}
    a = np.asarray(finite)
    return {**out, "mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}


def tuning_failures(records: list[dict]) -> dict:
    """A searcher's trials that raised and that diverged, counted apart, and the first error."""
    raised = [r for r in records if r.get("error")]
    return {"trials": len(records), "errors": len(raised),
            "diverged": sum(1 for r in records if not r.get("error") and not math.isfinite(r["fitness"])),
            "first_error": raised[0]["error"] if raised else None,
            "traceback": raised[0].get("traceback") if raised else None}


def objective_of(manifest: dict) -> dict:
    """The run's objective {"metric", "mode"} (train_loss, min: the paper's, and every older run's)."""
    value = manifest["schedule"].get("objective") or "train_loss"
    return {"metric": "train_loss", "mode": "min"} if value == "train_loss" else dict(value)


def collect(path) -> dict:
    """The data behind the tables: {"task", "source", "searcher", "schedule", "objective", "tuned":
    {optimizer: {"hyperparameters", "status", "tuning": tuning_failures(...)}}, "results": {optimizer:
    summarise_full(...) + "planned_seeds" (+ "objective_mean/std")}}. "searcher" is what tuned the
    values ("ga", "random", "tpe", "cmaes"; None for given values), "schedule" the schedule file the
    run started from (None when not recorded). A failed optimizer's status is "failed", its
    hyperparameters None, and "error", "traceback", "generation" say why."""
    rd = RunDir.open(path, schedule=True)
    manifest = rd.manifest
    tuned = rd.read_tuned() or {"hyperparameters": {}, "source": manifest.get("hparams", "tuned")}
    generations = len(manifest["schedule"]["generations"])
    source = tuned.get("source", "tuned")
    searcher = (manifest["schedule"].get("search") or {}).get("searcher", "ga") if source == "tuned" else None
    objective = objective_of(manifest)
    out = {"task": manifest["task"], "source": source, "searcher": searcher,
           "schedule": manifest.get("schedule_source"), "objective": objective, "tuned": {}, "results": {}}
    for o in manifest["optimizers"]:
        failed = (tuned.get("failed") or {}).get(o)
        if failed is not None:
            out["tuned"][o] = {"hyperparameters": None, "status": "failed", "error": failed["error"],
                               "traceback": failed["traceback"], "generation": failed.get("generation")}
        elif o in tuned["hyperparameters"]:
            out["tuned"][o] = {"hyperparameters": tuned["hyperparameters"][o], "status": "done"}
        else:
            state = rd.read_state(o)
            if state is not None:
                out["tuned"][o] = {"hyperparameters": state["mean"],  # a searcher's rounds are its generations
                                   "status": f"generation {state['generation']}/{state.get('generations', generations)}"}
            elif (rd.path / "tuning").is_dir():
                out["tuned"][o] = {"hyperparameters": None, "status": f"generation 0/{generations}"}
        trials = rd.individuals(o) if o in out["tuned"] and source == "tuned" else []
        if trials:
            out["tuned"][o]["tuning"] = tuning_failures(trials)
        records = rd.full_runs(o)
        if records:
            out["results"][o] = {**summarise_full(records),
                                 "planned_seeds": manifest["schedule"]["full_run"]["seeds"]}
            if objective["metric"] != "train_loss":
                values = [r.get("held_out", {}).get(objective["metric"]) for r in records if not r.get("error")]
                finite = [v for v in values if v is not None and math.isfinite(v)]
                out["results"][o].update(objective_mean=float(np.mean(finite)) if finite else None,
                                         objective_std=float(np.std(finite)) if finite else None)
    return out


# -- cells -----------------------------------------------------------------------------------
def sig(x: float) -> str:
    """4 significant digits, as Table 6 prints them (1.164, 0.0009600 → 0.00096, 23002)."""
    if x != 0 and abs(x) >= 1e4:
        return f"{x:.0f}"
    return f"{x:.4g}"


def pm(mean, std, diverged: int, seeds: int, sign: str = "±", errors: int = 0) -> str:
    """"15.50 ± 0.50" with 4 significant digits in the mean, "(k/n diverged)", "(k/n raised)"; "—"
    when missing ("raised" when every seed raised)."""
    raised = f" ({errors}/{seeds} raised)" if errors else ""
    if mean is None:
        return "raised" if errors and errors == seeds else "—" + raised
    if not math.isfinite(mean):
        return "diverged" + raised
    d = 2 if mean == 0 else max(0, 3 - math.floor(math.log10(abs(mean))))
    text = f"{mean:.{d}f} {sign} {std:.{d}f}" if std is not None else f"{mean:.{d}f}"
    return text + (f" ({diverged}/{seeds} diverged)" if diverged else "") + raised


def step_cell(r: dict, sign: str = "±") -> str:
    """The step-milestone cell of a `collect` result, "(k/n seeds)" while seeds are missing."""
    text = pm(r["final_loss_mean"], r["final_loss_std"], r["diverged"], r["seeds"], sign, r.get("errors", 0))
    return text + (f" ({r['seeds']}/{r['planned_seeds']} seeds)" if r["seeds"] < r["planned_seeds"] else "")


def time_cell(r: dict | None, sign: str = "±") -> str:
    return pm(r["time_loss_mean"], r["time_loss_std"], r["diverged"], r["seeds"], sign, r.get("errors", 0)) if r else "—"


def objective_cell(r: dict | None) -> str:
    """The objective's mean ± std over the seeds that neither raised nor diverged ("—" when none)."""
    if not r or r.get("objective_mean") is None:
        return "—"
    std = r["objective_std"]
    return f"{r['objective_mean']:.4g}" + (f" ± {std:.2g}" if std is not None else "")


def objective_header(data: dict) -> list[str]:
    """The objective's column, [] for the training loss (the loss column is the objective)."""
    o = data.get("objective") or {"metric": "train_loss"}
    return [] if o["metric"] == "train_loss" else [f"objective {o['metric']} ({o['mode']})"]


def failure_note(entry: dict) -> str:
    """"failed at generation 0: ValueError: boom (errors/Adam/g00-i00.txt)"."""
    where = f" at generation {entry['generation']}" if entry.get("generation") is not None else ""
    return f"failed{where}: {entry['error']} ({entry['traceback']})"


def speed_cell(r: dict | None) -> str:
    return f"{r['steps_per_second']:.1f}" if r and r["steps_per_second"] else "—"


# -- tables ----------------------------------------------------------------------------------
def table6_header(data: dict) -> list[str]:
    return ["Optimizer", "Hyperparameters", data["task"]]


def table6_rows(data: dict) -> list[list[str]]:
    rows = []
    for o, entry in data["tuned"].items():
        if entry["status"] == "failed":  # no values are presented as tuned
            rows.append([o, "—", failure_note(entry)])
            continue
        hp = entry["hyperparameters"]
        names = " / ".join(hp) if hp else "—"
        values = " / ".join(sig(v) for v in hp.values()) if hp else "—"
        if not hp and entry["status"] == "done":
            values = "none (nothing to tune)"
        if entry["status"] != "done":
            values += f" ({entry['status']})"
        rows.append([o, names, values])
    return rows


def held_out_names(data: dict) -> list[str]:
    """The held-out metrics any optimizer's full runs recorded (`Task.evaluate()`), in first-seen order."""
    return list(dict.fromkeys(k for r in data["results"].values() for k in r.get("held_out") or {}))


def table1_header(data: dict) -> list[str]:
    steps = next((r["steps"] for r in data["results"].values()), None)
    milestone = next((r["time_milestone_s"] for r in data["results"].values() if r["time_milestone_s"]), None)
    return (["Optimizer", f"{steps} steps"] + objective_header(data) + ([f"{milestone:g} s"] if milestone else [])
            + ["steps/s"] + [f"held-out {k}" for k in held_out_names(data)])


def table1_rows(data: dict, sign: str = "±") -> list[list[str]]:
    milestone = any(r["time_milestone_s"] for r in data["results"].values())
    held_out = held_out_names(data)
    objective = [objective_cell] if objective_header(data) else []
    return [[o, step_cell(r, sign)] + [f(r) for f in objective] + ([time_cell(r, sign)] if milestone else []) + [speed_cell(r)]
            + [f"{r['held_out'][k]:.4g}" if k in r.get("held_out", {}) else "—" for k in held_out]
            for o, r in data["results"].items()]


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a markdown table."""
    return (["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
            + ["| " + " | ".join(r) + " |" for r in rows])
