"""Export a run directory (finished or not) as the paper's tables.

Table 6 layout — tuned hyperparameters: one row per optimizer, "lr / beta1 / beta2" and their
values "1.164 / 0.465 / 0.9884" (4 significant digits). An optimizer still tuning shows its
current GA mean, marked "(generation g/G)".
Table 1 layout — results: one row per optimizer, "mean ± std" over seeds at the step milestone
and (when the run has one) at the time milestone; "diverged" when no seed stayed finite.

Formats: markdown, csv, latex, json (json keeps full precision; non-finite means become null).
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from tuner.rundir import RunDir, RunDirError

FORMATS = ("markdown", "csv", "latex", "json")


def _sig(x: float) -> str:
    """4 significant digits, as Table 6 prints them (1.164, 0.0009600 → 0.00096, 23002)."""
    if x != 0 and abs(x) >= 1e4:
        return f"{x:.0f}"
    return f"{x:.4g}"


def _decimals(mean: float) -> int:
    """Decimals that give the mean 4 significant digits (15.28, 8.990, 0.8300)."""
    if mean == 0 or not math.isfinite(mean):
        return 2
    return max(0, 3 - math.floor(math.log10(abs(mean))))


def _pm(mean, std, diverged: int, seeds: int, pm: str = "±") -> str:
    if mean is None:
        return "—"
    if not math.isfinite(mean):
        return "diverged"
    d = _decimals(mean)
    text = f"{mean:.{d}f} {pm} {std:.{d}f}" if std is not None else f"{mean:.{d}f}"
    if diverged:
        text += f" ({diverged}/{seeds} diverged)"
    return text


def collect(path) -> dict:
    """Everything the tables need, read from the run directory (no Ray, no torch)."""
    from tuner.api import summarise_full

    rd = RunDir(path)
    if not (rd.path / "manifest.json").is_file():
        raise RunDirError(f"export: {str(rd.path)!r} is not a run directory (no manifest.json)")
    manifest = rd.manifest
    tuned = rd.read_tuned() or {"hyperparameters": {}, "source": manifest.get("hparams", "tuned")}
    generations = len(manifest["schedule"]["generations"])
    out = {"task": manifest["task"], "source": tuned.get("source", "tuned"), "tuned": {}, "results": {}}
    for o in manifest["optimizers"]:
        if o in tuned["hyperparameters"]:
            out["tuned"][o] = {"hyperparameters": tuned["hyperparameters"][o], "status": "done"}
        else:
            state = rd.read_state(o)
            if state is not None:
                out["tuned"][o] = {"hyperparameters": state["mean"],
                                   "status": f"generation {state['generation']}/{generations}"}
            elif (rd.path / "tuning").is_dir():
                out["tuned"][o] = {"hyperparameters": None, "status": f"generation 0/{generations}"}
        records = rd.full_runs(o)
        if records:
            summary = summarise_full(records)
            summary["planned_seeds"] = manifest["schedule"]["full_run"]["seeds"]
            out["results"][o] = summary
    return out


def _table6_rows(data: dict) -> list[tuple[str, str, str]]:
    rows = []
    for o, entry in data["tuned"].items():
        hp = entry["hyperparameters"]
        names = " / ".join(hp) if hp else "—"
        values = " / ".join(_sig(v) for v in hp.values()) if hp else "—"
        if not hp and entry["status"] == "done":
            values = "none (nothing to tune)"
        if entry["status"] != "done":
            values += f" ({entry['status']})"
        rows.append((o, names, values))
    return rows


def _table1_header(data: dict) -> list[str]:
    steps = next((r["steps"] for r in data["results"].values()), None)
    milestone = next((r["time_milestone_s"] for r in data["results"].values() if r["time_milestone_s"]), None)
    header = ["Optimizer", f"{steps} steps", "steps/s"]
    if milestone:
        header.insert(2, f"{milestone:g} s")
    return header


def _table1_rows(data: dict, pm: str = "±") -> list[list[str]]:
    milestone = any(r["time_milestone_s"] for r in data["results"].values())
    rows = []
    for o, r in data["results"].items():
        seeds = r["seeds"]
        step = _pm(r["final_loss_mean"], r["final_loss_std"], r["diverged"], seeds, pm)
        if seeds < r["planned_seeds"]:
            step += f" ({seeds}/{r['planned_seeds']} seeds)"
        row = [o, step, f"{r['steps_per_second']:.1f}" if r["steps_per_second"] else "—"]
        if milestone:
            row.insert(2, _pm(r["time_loss_mean"], r["time_loss_std"], r["diverged"], seeds, pm))
        rows.append(row)
    return rows


def _markdown(data: dict) -> str:
    def table(header, rows):
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return lines + ["| " + " | ".join(r) + " |" for r in rows]

    lines = [f"### Tuned hyperparameters ({data['source']}) — {data['task']}", ""]
    lines += table(["Optimizer", "Hyperparameters", data["task"]], _table6_rows(data))
    if data["results"]:
        lines += ["", f"### Results — {data['task']} (mean ± std over seeds of the last-10 % training loss)", ""]
        lines += table(_table1_header(data), _table1_rows(data))
    return "\n".join(lines) + "\n"


def _latex(data: dict) -> str:
    def esc(s: str) -> str:
        return s.replace("_", r"\_").replace("%", r"\%").replace("—", "---")

    def table(header, rows):
        lines = [r"\begin{tabular}{" + "l" * len(header) + "}", r"\toprule",
                 " & ".join(esc(h) for h in header) + r" \\", r"\midrule"]
        lines += [" & ".join(esc(c) for c in r) + r" \\" for r in rows]
        return lines + [r"\bottomrule", r"\end{tabular}"]

    lines = table(["Optimizer", "Hyperparameters", data["task"]], _table6_rows(data))
    if data["results"]:
        lines += [""] + table(_table1_header(data), _table1_rows(data, pm="$\\pm$"))
    return "\n".join(lines) + "\n"


def _num(x):
    return "" if x is None else repr(float(x))


def _csv(data: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["optimizer", "hyperparameter", "value", "status"])
    for o, entry in data["tuned"].items():
        for name, value in (entry["hyperparameters"] or {}).items():
            w.writerow([o, name, _num(value), entry["status"]])
    if data["results"]:
        w.writerow([])
        w.writerow(["optimizer", "steps", "final_loss_mean", "final_loss_std", "time_milestone_s",
                    "time_loss_mean", "time_loss_std", "steps_per_second", "diverged", "seeds"])
        for o, r in data["results"].items():
            w.writerow([o, r["steps"], _num(r["final_loss_mean"]), _num(r["final_loss_std"]),
                        _num(r["time_milestone_s"]), _num(r["time_loss_mean"]), _num(r["time_loss_std"]),
                        _num(r["steps_per_second"]), r["diverged"], r["seeds"]])
    return buf.getvalue()


def _json(data: dict) -> str:
    def finite(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: finite(v) for k, v in x.items()}
        return x

    return json.dumps(finite(data), indent=2, allow_nan=False) + "\n"


def export(path, format: str = "markdown") -> str:
    """The two tables of run directory `path` in `format` (markdown, csv, latex, json)."""
    if format not in FORMATS:
        raise ValueError(f"Invalid format: {format!r} (must be one of {', '.join(FORMATS)})")
    data = collect(Path(path))
    return {"markdown": _markdown, "csv": _csv, "latex": _latex, "json": _json}[format](data)
