"""Export a run directory (finished or not) as the paper's Table 6 and Table 1 layouts
(`tuner.report.results`): markdown, csv, latex or json (full precision; non-finite means become null).
Runs that raised are counted apart from divergences ("errors"); a failed optimizer has status
"failed", no values, and its first error and traceback file; a schedule `objective` other than the
training loss has its own column (csv: objective_mean, objective_std)."""
from __future__ import annotations

import csv
import io
import json
import math

from tuner.report.results import (collect, failure_note, held_out_names, markdown_table, objective_header, table1_header,
                           table1_rows, table6_header, table6_rows)

FORMATS = ("markdown", "csv", "latex", "json")


def provenance(data: dict) -> str:
    """Where the values came from: "tuned by tpe · schedules/noisy_bowl.yaml", "paper", "given"."""
    if data.get("searcher") is None:
        return data["source"]
    return f"{data['source']} by {data['searcher']}" + (f" · {data['schedule']}" if data.get("schedule") else "")


def _markdown(data: dict) -> str:
    lines = [f"### Tuned hyperparameters ({provenance(data)}) — {data['task']}", ""]
    lines += markdown_table(table6_header(data), table6_rows(data))
    if data["results"]:
        lines += ["", f"### Results — {data['task']} (mean ± std over seeds of the last-10 % training loss)", ""]
        lines += markdown_table(table1_header(data), table1_rows(data))
    return "\n".join(lines) + "\n"


def _latex(data: dict) -> str:
    def esc(s: str) -> str:
        return s.replace("_", r"\_").replace("%", r"\%").replace("—", "---")

    def table(header, rows):
        lines = [r"\begin{tabular}{" + "l" * len(header) + "}", r"\toprule",
                 " & ".join(esc(h) for h in header) + r" \\", r"\midrule"]
        lines += [" & ".join(esc(c) for c in r) + r" \\" for r in rows]
        return lines + [r"\bottomrule", r"\end{tabular}"]

    lines = table(table6_header(data), table6_rows(data))
    if data["results"]:
        lines += [""] + table(table1_header(data), table1_rows(data, sign="$\\pm$"))
    return "\n".join(lines) + "\n"


def _num(x):
    return "" if x is None else repr(float(x))


def _csv(data: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["optimizer", "hyperparameter", "value", "status", "searcher"])
    for o, entry in data["tuned"].items():
        if entry["status"] == "failed":
            w.writerow([o, "", "", failure_note(entry), data.get("searcher") or data["source"]])
        for name, value in (entry["hyperparameters"] or {}).items():
            w.writerow([o, name, _num(value), entry["status"], data.get("searcher") or data["source"]])
    if data["results"]:
        w.writerow([])
        w.writerow(["optimizer", "steps", "final_loss_mean", "final_loss_std", "time_milestone_s",
                    "time_loss_mean", "time_loss_std", "steps_per_second", "diverged", "errors", "seeds"]
                   + (["objective_mean", "objective_std"] if objective_header(data) else [])
                   + [f"held_out_{k}" for k in held_out_names(data)])
        for o, r in data["results"].items():
            w.writerow([o, r["steps"], _num(r["final_loss_mean"]), _num(r["final_loss_std"]),
                        _num(r["time_milestone_s"]), _num(r["time_loss_mean"]), _num(r["time_loss_std"]),
                        _num(r["steps_per_second"]), r["diverged"], r.get("errors", 0), r["seeds"]]
                       + ([_num(r.get("objective_mean")), _num(r.get("objective_std"))] if objective_header(data) else [])
                       + [_num(r.get("held_out", {}).get(k)) for k in held_out_names(data)])
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
    data = collect(path)
    return {"markdown": _markdown, "csv": _csv, "latex": _latex, "json": _json}[format](data)
