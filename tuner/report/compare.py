"""The comparison report over several runs of one task (`lodo-tune report DIR1 DIR2 ...`): how
much the tuned values and their full-run losses move with the tuner's seed.

Per optimizer and per group of runs whose values came from the same place (the searcher, or
Table 6 / given values / nothing to tune) on the same schedule: the number of runs, and the mean,
std (population, ddof 0) and min–max over the runs of the full-run loss (each run's mean over
its full-run seeds, `tuner.report.results.summarise_full`) and of each tuned hyperparameter, next to
the paper's result table (Table 1 for the noisy bowl) and Table 6.

`compare_runs` returns the numbers, `write_comparison` writes ``comparison.md`` (and, with
matplotlib, ``figures/comparison.png``: loss by optimizer, std as error bars, min–max as thin
lines) into an output folder, atomically, and never into an input run directory: a run may
still be writing there (and holding its lock).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from lodo.paper import RESULTS
from tuner.report import report
from tuner.report.provenance import SEARCHERS, schedule_info, searcher, values_source
from tuner.report.results import collect, markdown_table, sig, spread
from tuner.driver.rundir import RunDir, atomic_write, atomic_write_text, safe_name

FIGURE = "figures/comparison.png"


class CompareError(ValueError):
    """Run directories that cannot be compared (one line naming them)."""


def _schedule_key(schedule: dict) -> str:
    """What makes two runs' schedules the same for a comparison: all but the searcher (which the
    groups name on their own). The optimizers count: the same name may be another optimizer
    (a declared one with other fixed arguments or hyperparameters) or be tuned beside others."""
    search = schedule.get("search") if isinstance(schedule.get("search"), dict) else {}
    same = {k: v for k, v in schedule.items() if k != "search"}
    return json.dumps({**same, "search": {k: v for k, v in search.items() if k != "searcher"}}, sort_keys=True)


def compare_runs(run_dirs) -> dict:
    """The numbers behind the comparison report.

    Long: one pass that groups the runs and fills every group's numbers; its docstring is the returned shape.

    Returns {"task", "runs": [{"path", "seed", "searcher", "schedule" (id), "full_run"}],
    "schedules": {id: description}, "optimizers": {optimizer: [group, ...]}}, each group
    {"values_from", "schedule", "runs": [paths], "losses": [one per run with full runs],
    "loss": spread(losses), "fewer_seeds": runs whose full runs are not all done,
    "hyperparameters": {name: {"values": [...], **spread(values)}}, "tuning": runs still tuning,
    "failed": runs where the optimizer failed (its trials kept raising), "objective": the schedule's
    objective {"metric", "mode"} and "objectives": spread of each run's full-run mean of its metric}.
    Raises RunDirError for a path that is not a readable run directory and CompareError for
    repeated paths or runs of different tasks.
    """
    paths = [Path(p) for p in run_dirs]
    seen: dict[Path, Path] = {}
    for p in paths:
        if p.resolve() in seen:
            raise CompareError(f"{str(p)!r} is given twice (as {str(seen[p.resolve()])!r}): give each run once")
        seen[p.resolve()] = p
    rds = [RunDir.open(p, schedule=True) for p in paths]
    manifests = [rd.manifest for rd in rds]
    task = manifests[0]["task"]
    for p, m in zip(paths[1:], manifests[1:]):
        if m["task"] != task:
            raise CompareError(f"{str(p)!r} is a run of {m['task']}, {str(paths[0])!r} of {task}: "
                               "compare runs of one task")
    out = {"task": task, "runs": [], "schedules": {}, "optimizers": {}}
    schedule_ids: dict[str, str] = {}
    groups: dict[tuple, dict] = {}
    for p, rd, m in zip(paths, rds, manifests):
        key = _schedule_key(m["schedule"])
        if key not in schedule_ids:
            schedule_ids[key] = f"S{len(schedule_ids) + 1}"
            out["schedules"][schedule_ids[key]] = schedule_info(m).describe()
        sid, tuned_by = schedule_ids[key], SEARCHERS.get(searcher(m), searcher(m))
        full = m["schedule"]["full_run"]
        out["runs"].append({"path": str(p), "seed": m.get("seed"), "searcher": tuned_by, "schedule": sid,
                            "full_run": f"{full['steps']} steps × {full['seeds']} seeds"})
        data = collect(rd.path)
        for o in m["optimizers"]:
            entry = data["tuned"].get(o)
            done = entry is not None and entry["status"] == "done"
            values = entry["hyperparameters"] if done else None
            source = values_source(m, o, values) if done else ""
            values_from = source or tuned_by
            group = groups.get((o, values_from, sid))
            if group is None:
                group = groups[(o, values_from, sid)] = {
                    "values_from": values_from, "schedule": sid, "runs": [], "losses": [], "fewer_seeds": 0,
                    "hyperparameters": {}, "tuning": 0, "failed": 0, "objective": data["objective"], "objectives": []}
                out["optimizers"].setdefault(o, []).append(group)
            group["runs"].append(str(p))
            if not done:
                group["failed" if entry is not None and entry["status"] == "failed" else "tuning"] += 1
            for name, value in (values or {}).items():
                group["hyperparameters"].setdefault(name, {"values": []})["values"].append(float(value))
            result = data["results"].get(o)
            if result is not None and result["final_loss_mean"] is not None:
                group["losses"].append(result["final_loss_mean"])
                group["fewer_seeds"] += result["seeds"] < result["planned_seeds"]
            if result is not None and result.get("objective_mean") is not None:
                group["objectives"].append(result["objective_mean"])
    for group in groups.values():
        group["loss"] = spread(group["losses"])
        group["objectives"] = spread(group["objectives"])
        for stats in group["hyperparameters"].values():
            stats.update(spread(stats["values"]))
    return out


# -- markdown ----------------------------------------------------------------------------------
def _num(x: float | None, like: float | None = None) -> str:
    """4 significant digits of `like` (default x) for both mean and spread, as the result tables."""
    if x is None:
        return "—"
    ref = abs(like if like is not None else x)
    d = 2 if ref == 0 or not math.isfinite(ref) else max(0, 3 - math.floor(math.log10(ref)))
    return f"{x:.{d}f}"


def _tuned_by(group: dict) -> str:
    return f"{group['values_from']} · {group['schedule']}"


def loss_rows(data: dict) -> tuple[list[str], list[list[str]]]:
    paper = RESULTS.get(data["task"])
    header = ["Optimizer", "values from · schedule", "runs", "mean", "std", "min – max"]
    metrics = any(g["objective"]["metric"] != "train_loss" for gs in data["optimizers"].values() for g in gs)
    if metrics:
        header += ["objective: mean ± std over runs"]
    if paper:
        header += [f"paper ({paper.name})", "mean/paper"]
    rows = []
    for o, groups in data["optimizers"].items():
        for g in groups:
            s = g["loss"]
            runs = f"{s['n'] + s['diverged']}" + (f" of {len(g['runs'])}" if s["n"] + s["diverged"] < len(g["runs"]) else "")
            if s["mean"] is None:
                mean = "diverged" if s["diverged"] else "—"
                cells = [mean, "—", "—"]
            else:
                cells = [_num(s["mean"]) + (f" ({s['diverged']} diverged)" if s["diverged"] else ""),
                         _num(s["std"], s["mean"]), f"{_num(s['min'], s['mean'])} – {_num(s['max'], s['mean'])}"]
            row = [o, _tuned_by(g), runs] + cells
            if metrics:
                m, objective = g["objectives"], g["objective"]
                row += ["—" if m["mean"] is None or objective["metric"] == "train_loss" else
                        f"{objective['metric']} ({objective['mode']}) {m['mean']:.4g} ± {m['std']:.2g}"]
            if paper:
                entry = paper.rows.get(o)
                row += [report._paper_cell(entry), report.ratio(s["mean"], entry[0] if entry else None)]
            rows.append(row)
    return header, rows


def hyperparameter_rows(data: dict) -> tuple[list[str], list[list[str]]]:
    table6 = report._paper_hparams(data["task"])
    header = ["Optimizer", "values from · schedule", "hyperparameter", "runs", "mean", "std", "min – max"]
    if table6:
        header += ["paper (Table 6)"]
    rows = []
    for o, groups in data["optimizers"].items():
        for g in groups:
            for name, s in g["hyperparameters"].items():
                std = 0.0 if s["std"] <= 1e-12 * abs(s["mean"]) else s["std"]  # equal values, up to rounding
                row = [o, _tuned_by(g), name, str(s["n"]), report._value(s["mean"]), sig(std),
                       f"{report._value(s['min'])} – {report._value(s['max'])}"]
                if table6:
                    row += [report._value(table6[o][name]) if name in table6.get(o, {}) else "—"]
                rows.append(row)
    return header, rows


def comparison_lines(data: dict) -> list[str]:
    """comparison.md without its figure."""
    task, runs = data["task"], data["runs"]
    lines = [f"# lodo-tune comparison — {task}", "",
             f"{len(runs)} run directories of {task}, compared per optimizer and per group of runs whose "
             "values came from the same place (the searcher that tuned them, or where they came from "
             "when not tuned) on the same schedule.", ""]
    lines += markdown_table(["run directory", "seed", "searcher", "schedule", "full runs"],
                            [[f"`{r['path']}`", str(r["seed"]), r["searcher"], r["schedule"], r["full_run"]]
                             for r in runs])
    lines += [""] + [f"- {sid}: {text}" for sid, text in data["schedules"].items()] + [""]
    lines += ["## Full-run loss over runs", ""]
    header, rows = loss_rows(data)
    lines += (markdown_table(header, rows) if rows else ["No optimizers."]) + [""]
    paper = RESULTS.get(task)
    metric = paper.metric if paper else "average training loss over the last 10 %"
    lines += [f"- Each run's loss is its mean over its full-run seeds of the {metric}; mean, std "
              "(population, ddof 0) and min – max are over the runs. A run without full runs is left out "
              "(\"runs: k of n\"); a run whose every seed diverged is counted as diverged, not averaged."]
    fewer = sum(g["fewer_seeds"] for gs in data["optimizers"].values() for g in gs)
    if fewer:
        lines += [f"- {fewer} of these runs have not finished all their full-run seeds yet."]
    lines += ["", "## Tuned hyperparameters over runs", ""]
    header, rows = hyperparameter_rows(data)
    lines += markdown_table(header, rows) if rows else ["No tuned values yet."]
    tuning = sum(g["tuning"] for gs in data["optimizers"].values() for g in gs)
    lines += ["", "- The values the full runs used (learning rates after the schedule's lr_scale)."]
    if tuning:
        lines += [f"- {tuning} optimizer runs are still being tuned: left out of these numbers."]
    failed = sum(g["failed"] for gs in data["optimizers"].values() for g in gs)
    if failed:
        lines += [f"- {failed} optimizer runs failed (their trials kept raising; each run's report.md says why): "
                  "left out of these numbers."]
    return lines


# -- the figure --------------------------------------------------------------------------------
def plot_comparison(data: dict):
    """Loss by optimizer, one marker per group: the mean, std as error bars, min–max as a thin
    line; the paper's value as a red dash. Log y when the means span more than a decade."""
    Figure = report._figure_class()
    paper = RESULTS.get(data["task"])
    names = [o for o, gs in data["optimizers"].items() if any(g["loss"]["mean"] is not None for g in gs)]
    labels = list(dict.fromkeys(_tuned_by(g) for o in names for g in data["optimizers"][o]))
    fig = Figure(figsize=(max(5.0, 1.1 * len(names) + 2), 4), layout="constrained")
    ax = fig.subplots()
    width = 0.6 / max(len(labels), 1)
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    shown = set()
    means = []
    for x, o in enumerate(names):
        for g in data["optimizers"][o]:
            s, label = g["loss"], _tuned_by(g)
            if s["mean"] is None:
                continue
            xi = x + (labels.index(label) - (len(labels) - 1) / 2) * width
            ax.vlines(xi, s["min"], s["max"], color=colors[label], lw=0.8, alpha=0.6)
            ax.errorbar(xi, s["mean"], yerr=s["std"], fmt="o", ms=4, capsize=3, color=colors[label],
                        label=None if label in shown else label)
            shown.add(label)
            means.append(s["mean"])
        entry = paper.rows.get(o) if paper else None
        if entry is not None and math.isfinite(entry[0]):
            ax.plot([x - 0.35, x + 0.35], [entry[0]] * 2, color="tab:red", lw=1.5, ls="--",
                    label=None if "paper" in shown else f"paper ({paper.name})")
            shown.add("paper")
            means.append(entry[0])
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    if report._use_log([np.asarray(means)]):
        ax.set_yscale("log")
    ax.set_ylabel("full-run loss (mean over seeds)")
    ax.grid(alpha=0.3, axis="y")
    if shown:
        ax.legend(fontsize=7)
    fig.suptitle(f"{data['task']}: loss over {len(data['runs'])} runs (mean, std bars, min–max lines)", fontsize=10)
    return fig


# -- the report --------------------------------------------------------------------------------
def write_comparison(run_dirs, out_dir=None) -> Path:
    """Write comparison.md (and figures/comparison.png when matplotlib is installed) for the run
    directories `run_dirs` (≥ 2, one task) into `out_dir` (default ``comparison-<task>`` in the
    current directory, never inside an input run directory); return the path of comparison.md."""
    paths = list(run_dirs)
    if len(paths) < 2:
        raise CompareError(f"a comparison needs at least 2 run directories, got {len(paths)}")
    data = compare_runs(paths)
    out = Path(out_dir) if out_dir is not None else Path(f"comparison-{safe_name(data['task'])}")
    for p in paths:
        if out.resolve().is_relative_to(Path(p).resolve()):
            raise CompareError(f"--out: {str(out)!r} is inside the run directory {str(p)!r}, which the "
                               "comparison never writes to: give another folder")
    lines = comparison_lines(data) + ["", "## Figure", ""]
    if report._figure_class() is None:
        lines += [report.SKIPPED]
    elif any(g["loss"]["mean"] is not None for gs in data["optimizers"].values() for g in gs):
        png = report.png_bytes(plot_comparison(data))
        atomic_write(out / FIGURE, lambda f: f.write(png))
        lines += [f"![Loss by optimizer over runs]({FIGURE})"]
    else:
        lines += ["No full runs yet: no figure."]
    path = out / "comparison.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path
