"""The reproduction report (`lodo-tune report RUN_DIR`) — our numbers next to the paper's.

Writes ``report.md`` and PNG figures from what a run directory already holds (finished or not),
atomically (`tuner.driver.rundir.atomic_write`):

- where each optimizer's values come from (`tuner.report.provenance`): the searcher and the schedule
  (bundled name or file, faithful Table 5 or not), or Table 6 / given values / nothing to tune;
- results next to the paper's Table 1 (noisy_bowl), Table 2 + 3 (image_generation, train NLL)
  and Table 4 (resnet18_cifar10, train loss), with the ratio ours / paper ("—" where the paper
  has no row or either side diverged);
- the tuned hyperparameters next to Table 6 (`lodo.paper_hyperparameters(task)`); an optimizer
  that failed (its trials kept raising) shows no values, only why;
- errors and divergences, counted apart per optimizer (tuning trials, full runs), with the first
  error's last line and its traceback file;
- selection noise (`tuner.driver.noise`): the generations whose individuals the noise check could not
  tell apart, with what would help;
- ``figures/loss.png``: training loss by step and by wall time, mean ± std over seeds of the
  full runs' decimated curves (seeds interpolated onto a common grid), one line per optimizer;
- ``figures/tuning-<optimizer>.png``: per hyperparameter, the GA's generation mean (replayed
  from the records with `tuner.search.ga.GeneticAlgorithm`) as a line and every individual as a dot;
- ``figures/sigma.png`` (runs whose full runs recorded σ, the LODO family on the noisy bowl):
  σ by step, mean ± std over seeds, log y (the paper's Fig. 2 left);
- ``figures/trajectories.png`` (runs whose full runs recorded a trajectory, Rosenbrock): each
  optimizer's seed-0 path over the loss heat map with contours (the paper's Fig. 3).
  (256-colour PNGs at 100 dpi, a few tens of KB each.)

matplotlib is the optional extra ``plots``: imported lazily and only through
`matplotlib.figure.Figure` (the Agg canvas, no pyplot state); without it the report keeps its
tables and says in one line that figures were skipped.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

import lodo
import tasks
from lodo.paper import RESULTS
from tasks.rosenbrock import MINIMUM, START, rosenbrock
from tuner.search.ga import GeneticAlgorithm
from tuner.driver import noise
from tuner.report.results import (collect, failure_note, held_out_names, markdown_table, objective_cell, objective_header, sig,
                           speed_cell, step_cell, time_cell)
from tuner.driver.rundir import LOG, RunDir, atomic_write, atomic_write_text, safe_name
from tuner.report.provenance import SEARCHERS, schedule_info, searcher, values_source
from tuner.driver.schedule import Schedule, space_for
from tuner.search.space import ga_keywords

DPI = 100
FIGURES = "figures"
SKIPPED = "Figures skipped: matplotlib is not installed (pip install 'lodo-tune[plots]')."


# -- numbers ---------------------------------------------------------------------------------
def ratio(ours: float | None, paper: float | None) -> str:
    """ours / paper to 2 decimals; "—" when either is missing, diverged or the paper's is 0."""
    if ours is None or paper is None or not (math.isfinite(ours) and math.isfinite(paper)) or paper == 0:
        return "—"
    return f"{ours / paper:.2f}"


def _value(x: float) -> str:
    """Table 6's 4 significant digits; a rate just below 1 keeps 3 digits of 1 − x (0.9999723)."""
    if 0.99 < x < 1:
        return f"{x:.{2 - math.floor(math.log10(1 - x))}f}"
    return sig(x)


def _paper_cell(entry) -> str:
    if entry is None:
        return "—"
    mean, std = entry
    if not math.isfinite(mean):
        return "diverged"
    decimals = 2 if mean >= 1 else 3  # as the paper prints them (15.28 ± 0.07, 0.830)
    return f"{mean:.{decimals}f}" + (f" ± {std:.{decimals}f}" if std is not None else "")


def band(curves: list[dict], x: str, points: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std (ddof 0) over seeds of `curves` ({x: [...], "loss": [...]}) on a common grid.

    Seeds sharing the same x (the step curves of equally long runs) are averaged point by point;
    otherwise each is linearly interpolated onto `points` values spanning the range all cover.
    """
    xs = [np.asarray(c[x], dtype=float) for c in curves]
    ys = [np.asarray(c["loss"], dtype=float) for c in curves]
    if all(len(v) == len(xs[0]) and np.array_equal(v, xs[0]) for v in xs):
        grid, stack = xs[0], np.stack(ys)
    else:
        lo, hi = max(v[0] for v in xs), min(v[-1] for v in xs)
        grid = np.linspace(lo, hi, points) if hi > lo else xs[0]
        stack = np.stack([np.interp(grid, v, y) for v, y in zip(xs, ys)])
    return grid, stack.mean(axis=0), stack.std(axis=0)


def finite_curves(records: list[dict]) -> tuple[list[dict], int]:
    """The curves of the seeds that stayed finite, and how many seeds diverged (left out)."""
    curves, diverged = [], 0
    for r in records:
        c = r.get("curve")
        if not c or not c.get("loss"):
            continue
        if r.get("diverged") or not all(math.isfinite(v) for v in c["loss"]):
            diverged += 1
        else:
            curves.append(c)
    return curves, diverged


def ga_means(rd: RunDir, optimizer: str, space, schedule: dict, seed: int, options: dict | None = None):
    """The GA's mean by generation, replayed from the tuning records (docs/paper.md §4).

    Returns (generations, means, individuals): means[j] is the mean that generated generation
    generations[j] (the last entry, at len(schedule generations), is the tuned value once all
    are told); individuals are the records. means is None when the records do not match a
    replay of this run's GA (another seed or schedule; then only the individuals are shown).
    `options`: the GA's keyword options (`tuner.search.space.ga_keywords`; none for Appendix E's GA).
    """
    records = rd.individuals(optimizer)
    ga = GeneticAlgorithm(space, [(g["noise"], g["steps"], g.get("population")) for g in schedule["generations"]],
                          schedule["population"], seed=seed, name=optimizer, **(options or {}))
    by_key = {(r["generation"], r["index"]): r for r in records}
    while not ga.done:
        individuals = ga.ask()
        found = [by_key.get((i.generation, i.index)) for i in individuals]
        for ind, rec in zip(individuals, found):
            if rec is not None and (rec["seed"] != ind.seed or any(
                    not math.isclose(rec["hparams"].get(k, math.nan), v, rel_tol=1e-9)
                    for k, v in ind.hparams.items())):
                return None, None, records
        if any(rec is None for rec in found) or 2 * sum("error" in rec for rec in found) > len(found):
            break  # not told yet, or the generation its optimizer failed at (tuner.driver.session)
        ga.tell({rec["index"]: float(rec["fitness"]) for rec in found})
    means = [h["mean"] for h in ga.history] + [ga.mean]
    return list(range(len(means))), means, records


# -- figures ---------------------------------------------------------------------------------
def _figure_class():
    """matplotlib's Figure (Agg canvas on save), or None when the `plots` extra is missing."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def png_bytes(fig) -> bytes:
    """`fig` at DPI as a 256-colour PNG (plots need no more; the file shrinks ~2.5×)."""
    from PIL import Image  # comes with matplotlib (the optional `plots` extra)

    buf, out = io.BytesIO(), io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    buf.seek(0)
    Image.open(buf).convert("RGB").quantize(256).save(out, format="png", optimize=True)
    return out.getvalue()


def save_png(fig, path: Path) -> None:
    """Save `fig` as `png_bytes` to `path`, atomically (a reader never sees half a figure)."""
    data = png_bytes(fig)
    atomic_write(path, lambda f: f.write(data))


def _use_log(values: list[np.ndarray]) -> bool:
    """Log-scale y when every value is positive and they span more than a decade."""
    v = np.concatenate([np.ravel(a) for a in values]) if values else np.array([])
    v = v[np.isfinite(v)]
    return v.size > 0 and bool(np.all(v > 0)) and v.max() / v.min() > 10


def plot_curves(full: dict[str, list[dict]]):
    """Training loss by step (left) and by wall time (right), mean ± std band over seeds.

    `full` maps optimizer -> its full-run records. One line per optimizer with a finite seed on
    each axis; a band (fill_between) only where ≥ 2 seeds are averaged. Returns the Figure.
    """
    Figure = _figure_class()
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    plotted = []
    for optimizer, records in full.items():
        curves, diverged = finite_curves(records)
        if not curves:
            continue
        label = optimizer + (f" ({diverged} diverged seeds left out)" if diverged else "")
        color = None
        for ax, x in zip(axes, ("step", "time")):
            grid, mean, std = band(curves, x)
            (line,) = ax.plot(grid, mean, label=label, color=color, lw=1.2)
            color = line.get_color()
            if len(curves) > 1:  # keep a positive curve's band positive, for a log-scale y
                floor = mean.min() * 1e-3 if mean.min() > 0 else -np.inf
                ax.fill_between(grid, np.maximum(mean - std, floor), mean + std, color=color, alpha=0.2, lw=0)
            plotted.append(mean)
    log = _use_log(plotted)
    for ax, xlabel in zip(axes, ("step (loss/gradient evaluations)", "wall time (s)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training loss")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    if plotted:
        axes[0].legend(fontsize=8)
    fig.suptitle("Training loss, mean ± std over seeds")
    return fig


def sigma_curves(records: list[dict]) -> list[dict]:
    """The σ series ({"step", "loss": σ}, `band`'s shape) of the seeds that stayed finite."""
    out = []
    for r in records:
        sigma = r.get("sigma")
        if r.get("diverged") or not sigma or not sigma.get("value"):
            continue
        if all(math.isfinite(v) for v in sigma["value"]):
            out.append({"step": sigma["step"], "loss": sigma["value"]})
    return out


def plot_sigma(full: dict[str, list[dict]]):
    """σ = ‖I − G H‖_F / √n by step, mean ± std band over seeds (≥ 2), one line per optimizer
    that recorded σ; log y as the paper's Fig. 2 (left). Returns the Figure."""
    Figure = _figure_class()
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for optimizer, records in full.items():
        curves = sigma_curves(records)
        if not curves:
            continue
        grid, mean, std = band(curves, "step")
        (line,) = ax.plot(grid, mean, label=optimizer + (f" ({len(curves)} seeds)" if len(curves) > 1 else ""),
                          lw=1.2)
        if len(curves) > 1:  # floored so the band stays positive on the log axis
            ax.fill_between(grid, np.maximum(mean - std, mean * 1e-3), mean + std, color=line.get_color(),
                            alpha=0.2, lw=0)
    ax.set_yscale("log")
    ax.set_xlabel("step (loss/gradient evaluations)")
    ax.set_ylabel("σ = ‖I − G H‖_F / √n")
    ax.grid(alpha=0.3, which="both")
    if ax.get_lines():
        ax.legend(fontsize=8)
    fig.suptitle("Hessian-approximation error σ, mean ± std over seeds")
    return fig


TRAJECTORY_BOX = ((-1.5, 1.5), (-0.5, 2.5))  # (x range, y range): holds the start and the minimum


def seed0_trajectory(records: list[dict]):
    """The trajectory (k, 2) of the lowest seed index that recorded one, or None."""
    for r in sorted(records, key=lambda r: r.get("seed_index", 0)):
        if r.get("trajectory"):
            xy = np.asarray(r["trajectory"], dtype=float).reshape(-1, 2)
            return np.where(np.isfinite(xy), xy, np.nan)  # a diverged run's path stops where it left
    return None


def plot_trajectories(full: dict[str, list[dict]]):
    """Each optimizer's seed-0 path over log10 f on TRAJECTORY_BOX, with contours; the start
    (−0.5, 2) and the minimum (1, 1) marked (the paper's Fig. 3). Returns the Figure."""
    Figure = _figure_class()
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.subplots()
    (x0, x1), (y0, y1) = TRAJECTORY_BOX
    x, y = np.meshgrid(np.linspace(x0, x1, 301), np.linspace(y0, y1, 301))
    log_f = np.log10(rosenbrock(x, y) + 1e-4)  # f = 0 at the minimum
    image = ax.imshow(log_f, origin="lower", extent=(x0, x1, y0, y1), aspect="auto", cmap="Greys")
    ax.contour(x, y, log_f, levels=np.arange(-3, 1.5, 0.5), colors="white", linewidths=0.5, alpha=0.6)
    fig.colorbar(image, ax=ax, label="log₁₀ (f(x, y) + 10⁻⁴)")
    for optimizer, records in full.items():
        xy = seed0_trajectory(records)
        if xy is not None:
            ax.plot(xy[:, 0], xy[:, 1], lw=1.2, label=optimizer)
    ax.plot(*START, "o", color="tab:green", ms=7, label="start (−0.5, 2)")
    ax.plot(*MINIMUM, "*", color="tab:red", ms=11, label="minimum (1, 1)")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("Rosenbrock: trajectories (seed 0) over f(x, y) = 0.01(x − 1)² + (x² − y)²", fontsize=10)
    return fig


_DECAY_TICKS = [0.0, 0.5] + [1 - 10.0 ** -k for k in range(1, 16)]


def _decay_label(t: float) -> str:
    return f"{t:g}" if t < 0.9999 else f"1−1e-{round(-math.log10(1 - t))}"


def plot_tuning(optimizer: str, space, generations, means, records, paper: dict | None = None):
    """One panel per hyperparameter: individuals as dots (colour = fitness rank within their
    generation, dark = better), the GA's generation mean as a line, Table 6 as a dashed line.

    Log-scaled hyperparameters get a log y axis; decay rates an axis in the GA's coordinate
    u = 1 − ln(1 − x), where its noise is isotropic. Returns the Figure.
    """
    from matplotlib.ticker import MaxNLocator  # lazily, as every matplotlib import here

    Figure = _figure_class()
    fig = Figure(figsize=(3.3 * len(space), 3.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(space), squeeze=False)[0])
    gen = np.array([r["generation"] for r in records])
    rank = np.zeros(len(records))
    for g in set(gen.tolist()):
        idx = np.flatnonzero(gen == g)
        fit = np.array([float(records[i]["fitness"]) for i in idx])
        fit = np.where(np.isfinite(fit), fit, np.inf)
        order = np.argsort(np.argsort(fit, kind="stable"), kind="stable")
        rank[idx] = order / max(len(idx) - 1, 1)
    for ax, dim in zip(axes, space):
        values = np.array([r["hparams"][dim.name] for r in records], dtype=float)
        ax.scatter(gen, values, c=rank, cmap="viridis", vmin=0, vmax=1, s=8, linewidths=0,
                   label="individuals")
        if means is not None:
            ax.plot(generations, [m[dim.name] for m in means], color="black", marker="o", ms=3,
                    lw=1.5, label="GA mean")
        if paper and dim.name in paper:
            ax.axhline(paper[dim.name], color="tab:red", ls="--", lw=1, label="paper (Table 6)")
        if dim.scale == "log":
            ax.set_yscale("log")
        else:
            ax.set_yscale("function", functions=(_decay_u, _decay_x))
            shown = np.concatenate([values, [m[dim.name] for m in means or []],
                                    [paper[dim.name]] if paper and dim.name in paper else []])
            lo = max([t for t in _DECAY_TICKS if t <= shown.min()], default=0.0)
            hi = min([t for t in _DECAY_TICKS if t >= shown.max()], default=_DECAY_TICKS[-1])
            ticks = [t for t in _DECAY_TICKS if lo <= t <= hi]
            ticks = ticks[:: max(1, math.ceil(len(ticks) / 8))]
            ax.set_yticks(ticks, [_decay_label(t) for t in ticks])
            u = _decay_u(shown)
            pad = 0.05 * max(u.max() - u.min(), 0.1)
            ax.set_ylim(_decay_x(u.min() - pad) if u.min() > pad else 0.0, _decay_x(u.max() + pad))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(dim.name, fontsize=10)
        ax.set_xlabel("generation")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{optimizer}: GA tuning by generation", fontsize=11)
    return fig


def _decay_u(x):
    return -np.log1p(-np.clip(x, 0.0, 1.0 - 1e-15))


def _decay_x(u):
    return -np.expm1(-np.asarray(u))


# -- the report ------------------------------------------------------------------------------
def results_section(data: dict, manifest: dict) -> list[str]:
    """Our last-10 % losses next to the paper's table for this task, with ours / paper.

    Long: one table whose columns depend on the task and the run (milestones, held-out metrics, the paper's)."""
    task, results = data["task"], data["results"]
    paper = RESULTS.get(task)
    full = manifest["schedule"]["full_run"]
    steps, milestone = full["steps"], full.get("time_milestone_s")
    title = f"## Results — {task}" + (f" vs the paper's {paper.name}" if paper else "")
    lines = [title, ""]
    if not results:
        lines += ["No full-length runs yet (tuning only, or the full runs have not finished one seed).", ""]
    if paper is None:
        lines += ([] if not results else [f"The paper has no results table for {task}.", ""])
    timed = milestone is not None and paper is not None and paper.time_s is not None
    header = ["Optimizer", f"ours, {steps} steps"] + objective_header(data)
    if paper:
        header += [f"paper, {paper.steps} steps", "ours/paper"]
    if milestone is not None:
        header += [f"ours, {milestone:g} s"]
    if timed:
        header += [f"paper, {paper.time_s:g} s", "ours/paper"]
    header += ["steps/s (ours)"]
    held_out = held_out_names(data)
    header += [f"held-out {k} (ours)" for k in held_out]
    names = list(manifest["optimizers"])
    if paper:
        names += [o for o in paper.rows if o not in names]
    rows = []
    for o in names:
        r = results.get(o)
        ours = "not run" if o not in manifest["optimizers"] else "—"
        ours_mean = ours_time = None
        if r is not None:
            ours = step_cell(r)
            ours_mean, ours_time = r["final_loss_mean"], r["time_loss_mean"]
        row = [o, ours] + ([objective_cell(r)] if objective_header(data) else [])
        if paper:
            entry = paper.rows.get(o)
            row += [_paper_cell(entry), ratio(ours_mean, entry[0] if entry else None)]
        if milestone is not None:
            row += [time_cell(r)]
        if timed:
            entry = paper.time_rows.get(o)
            row += [_paper_cell(entry), ratio(ours_time, entry[0] if entry else None)]
        row += [speed_cell(r)]
        row += [f"{r['held_out'][k]:.4g}" if r and k in r.get("held_out", {}) else "—" for k in held_out]
        rows.append(row)
    if rows and (results or paper):
        lines += markdown_table(header, rows)
    metric = paper.metric if paper else "average training loss over the last 10 %"
    notes = [f"Mean ± std over seeds of the {metric}" + ("; ratio = our mean / the paper's mean." if paper else ".")]
    if paper and steps != paper.steps:
        notes.append(f"Our full runs take {steps} steps, the paper's {paper.steps}: "
                     "the ratios compare different budgets.")
    if timed and milestone != paper.time_s:
        notes.append(f"Our time milestone is {milestone:g} s, the paper's {paper.time_s:g} s (other hardware).")
    if paper:
        notes += [f"{o}: {n}." for o, n in paper.notes.items() if o in names]
    if objective_header(data):
        notes.append(f"Objective: the searchers selected on `{data['objective']['metric']}` of the task's "
                     f"`evaluate()` ({data['objective']['mode']}imised) after each trial; its column is the mean ± std "
                     "over the full runs' seeds.")
    if held_out:
        notes.append("Held-out: the task's `evaluate()` after each full run (mean over seeds).")
    if manifest["schedule"].get("task_options"):
        notes.append(f"Task options: {manifest['schedule']['task_options']}"
                     + (" (the paper's numbers use the defaults)." if paper else "."))
    return lines + [""] + [f"- {n}" for n in notes]


def tuned_section(data: dict, paper_hparams: dict[str, dict[str, float]]) -> list[str]:
    """Our tuned hyperparameters (after lr scaling) next to Table 6, one row per hyperparameter;
    without Table 6's column for a task the paper does not have (a user task)."""
    if data["task"] not in tasks.available():
        rows = [[o, name, _value(v) + ("" if e["status"] == "done" else f" ({e['status']})")]
                for o, e in data["tuned"].items() for name, v in (e["hyperparameters"] or {}).items()]
        rows += [[o, "—", failure_note(e)] for o, e in data["tuned"].items() if e["status"] == "failed"]
        lines = [f"## Tuned hyperparameters ({data['source']})", "", f"The paper has no Table 6 values for {data['task']}.", ""]
        return lines + (markdown_table(["Optimizer", "hyperparameter", "ours"], rows) if rows else ["No tuning records yet."])
    lines = [f"## Tuned hyperparameters ({data['source']}) vs the paper's Table 6", ""]
    rows = []
    for o, entry in data["tuned"].items():
        if entry["status"] == "failed":  # nothing presented as tuned
            rows.append([o, "—", failure_note(entry), "—"])
            continue
        ours, paper = entry["hyperparameters"], paper_hparams.get(o, {})
        status = "" if entry["status"] == "done" else f" ({entry['status']})"
        names = list(ours or {}) or list(paper)
        if not names:
            rows.append([o, "—", "none (nothing to tune)" if entry["status"] == "done" else "—", "—"])
        for name in names:
            value = _value(ours[name]) + status if ours and name in ours else "—" + status
            rows.append([o, name, value, _value(paper[name]) if name in paper else "—"])
    if not rows:
        return lines + ["No tuning records yet."]
    return lines + markdown_table(["Optimizer", "hyperparameter", "ours", "paper (Table 6)"], rows) + [
        "", "- Learning rates are after the schedule's lr_scale (image_generation: halved, as Table 6 prints them)."]


def _paper_hparams(task: str) -> dict:
    try:
        return lodo.paper_hyperparameters(task)
    except ValueError:  # a task Table 6 does not cover
        return {}


def write_figures(rd: RunDir, manifest: dict, out_dir: Path, paper_hparams: dict) -> list[str]:
    """Save the figures under out_dir/figures; return the report's markdown lines for them."""
    fig_dir = out_dir / FIGURES
    lines = []
    full = {o: rd.full_runs(o) for o in manifest["optimizers"]}
    if any(finite_curves(r)[0] for r in full.values()):
        save_png(plot_curves(full), fig_dir / "loss.png")
        lines += ["### Training loss", "", f"![Training loss by step and by wall time]({FIGURES}/loss.png)", ""]
    if any(sigma_curves(r) for r in full.values()):
        save_png(plot_sigma(full), fig_dir / "sigma.png")
        lines += ["### Hessian-approximation error σ", "",
                  f"![σ by step, mean ± std over seeds]({FIGURES}/sigma.png)", "",
                  "σ = sqrt(‖I − G H‖_F² / n), estimated on the task's 100 fixed probe vectors every K "
                  "steps of the full runs (the paper's Fig. 2, left).", ""]
    if manifest["task"] == "rosenbrock" and any(seed0_trajectory(r) is not None for r in full.values()):
        save_png(plot_trajectories(full), fig_dir / "trajectories.png")
        lines += ["### Trajectories", "", f"![Trajectories of seed 0 over the loss]({FIGURES}/trajectories.png)", "",
                  "Each optimizer's seed-0 parameters at every evaluation over log₁₀ f (the paper's Fig. 3).", ""]
    lr_scale = manifest["schedule"].get("lr_scale", 1.0)
    tuned = [o for o in manifest["optimizers"] if (rd.path / "tuning" / safe_name(o)).is_dir()]
    for o in tuned:
        try:
            task_names = None if manifest["task"] in tasks.available() else [manifest["task"]]
            sched = Schedule.from_dict(manifest["schedule"], task_names=task_names)
            space = space_for(sched, o)
        except ValueError as e:  # a schedule this version no longer accepts
            lines += [f"GA figure for {o} skipped: {e}", ""]
            continue
        if not space:  # nothing to tune (L2LBGDBGD)
            continue
        by_ga = searcher(manifest) == "ga"  # another searcher has no generation mean to replay
        generations, means, records = (ga_means(rd, o, space, manifest["schedule"], manifest["seed"],
                                                ga_keywords(sched, o)) if by_ga
                                       else (None, None, rd.individuals(o)))
        if not records:
            continue
        paper = {k: (v / lr_scale if k == "lr" else v) for k, v in paper_hparams.get(o, {}).items()}
        name = f"tuning-{safe_name(o)}.png"
        save_png(plot_tuning(o, space, generations, means, records, paper), fig_dir / name)
        if not by_ga:
            lines += [f"### Tuning: {o} ({SEARCHERS.get(searcher(manifest), searcher(manifest))})", "",
                      f"![{o}: trials by round]({FIGURES}/{name})", "",
                      "Dots are trials by round (no generation mean: not a GA).", ""]
            continue
        lines += [f"### GA tuning: {o}", "", f"![{o}: GA tuning by generation]({FIGURES}/{name})", ""]
        if means is None:
            lines += ["The records do not match a replay of this run's GA: individuals only, no mean.", ""]
    if any(line.startswith("### GA tuning") for line in lines):
        lines += ["GA figures: dots are individuals, coloured by fitness rank within their generation "
                  "(dark = better); the line is the mean each generation was drawn around (its last point "
                  "is the tuned value once every generation is done); dashed: the paper's Table 6."
                  + (f" Values are before the lr scaling (×{lr_scale:g}), Table 6's lr scaled back likewise."
                     if lr_scale != 1 else ""), ""]
    return lines or ["No curves or tuning records yet."]


def provenance_section(data: dict, manifest: dict) -> list[str]:
    """Per optimizer, where its values came from: the searcher and schedule that tuned them
    (`tuner.report.provenance`), or their source when not tuned (Table 6, given values, meta-trained)."""
    tuned_by = SEARCHERS.get(searcher(manifest), searcher(manifest))
    info = schedule_info(manifest)
    faithful = {True: "yes", False: "no", None: "—"}[info.faithful]
    lines = ["## Where the values come from", "",
             (f"Searcher: {tuned_by}. " if manifest.get("hparams", "tuned") == "tuned" else
              f"No searcher: --hparams {manifest['hparams']}. ") + f"Schedule: {info.describe()}.", ""]
    rows = []
    for o in manifest["optimizers"]:
        entry = data["tuned"].get(o)
        done = entry is not None and entry["status"] == "done"
        source = values_source(manifest, o, entry["hyperparameters"]) if done else ""
        if source:
            rows.append([o, source, "—", info.label, "—"])
        else:
            state = ("tuned" if done else "failed (see Errors)" if entry and entry["status"] == "failed"
                     else f"being tuned ({entry['status']})" if entry else "not tuned yet")
            rows.append([o, state, tuned_by, info.label, faithful])
    lines += markdown_table(["Optimizer", "values", "searcher", "schedule", "faithful Table 5"], rows)
    return lines + ["", "- One run is one searcher seed: `lodo-tune report DIR1 DIR2 ...` compares runs of "
                        "other seeds (`--seed`) and shows the spread of the tuned values and their losses."]


def errors_section(data: dict) -> list[str]:
    """Per optimizer, trials that raised (errors) and that diverged (NaN/inf), counted apart, in
    tuning and in the full runs, with the first error's last line and traceback file; then which
    optimizers failed (their trials kept raising) and how to continue them."""
    lines = ["## Errors and divergences", ""]
    rows, first = [], []
    for o in dict.fromkeys(list(data["tuned"]) + list(data["results"])):
        tuning, full = data["tuned"].get(o, {}).get("tuning"), data["results"].get(o)
        if not (tuning and (tuning["errors"] or tuning["diverged"])) and not (full and (full["errors"] or full["diverged"])):
            continue
        cell = lambda n, total: f"{n} of {total}" if total else "—"  # noqa: E731
        rows.append([o, cell(tuning["errors"], tuning["trials"]) if tuning else "—",
                     cell(tuning["diverged"], tuning["trials"]) if tuning else "—",
                     cell(full["errors"], full["seeds"]) if full else "—", cell(full["diverged"], full["seeds"]) if full else "—"])
        for where, r in (("tuning", tuning), ("full runs", full)):
            if r and r.get("first_error"):
                first.append(f"- {o} ({where}), first error: `{r['first_error']}` (traceback: `{r['traceback']}`)")
    failed = [f"- **{o} failed** and is not tuned: {failure_note(e)}. Fix the cause and `lodo-tune --resume "
              f"RUN_DIR`: it continues from that generation; finished work is kept."
              for o, e in data["tuned"].items() if e["status"] == "failed"]
    failed += [f"- **{o} failed** in its full runs: {r['errors']} of {r['seeds']} raised. Fix the cause and "
               "`lodo-tune --resume RUN_DIR`: the runs that raised run again." for o, r in data["results"].items()
               if 2 * r.get("errors", 0) > r["seeds"]]
    if not rows and not failed:
        return lines + ["None: no trial raised or diverged."]
    if rows:
        lines += markdown_table(["Optimizer", "tuning: raised", "tuning: diverged", "full runs: raised",
                                 "full runs: diverged"], rows) + [""]
    return lines + failed + first + ["", "- A trial that raised is an error (its traceback under `errors/`), "
                                         "never a divergence (a NaN/inf loss); both rank last in selection."]


def noise_section(rd: RunDir, manifest: dict) -> list[str]:
    """The generations whose individuals the noise check could not tell apart (`tuner.driver.noise`)."""
    rows = []
    for o in manifest["optimizers"]:
        for r in noise.records(rd, o):
            if r.get("indistinguishable"):
                rows.append([o, str(r["generation"]), f"{r['spread']:.4g}", f"{r['noise']:.4g}"])
    lines = ["## Selection noise", ""]
    if manifest["schedule"].get("noise_check") is False:
        return lines + ["Not measured (the schedule's `noise_check: false`)."]
    if not rows:
        return lines + ["No generation was within the noise: in each one checked, re-running its best on "
                        f"another seed moved it less than 1/{noise.RATIO:g} of the gap from the best to the median."]
    return lines + [
        "In these generations selection could not tell the individuals apart: re-running the best on another "
        f"seed moved its fitness at least 1/{noise.RATIO:g} of the gap from the best to the generation's median.", ""] + \
        markdown_table(["Optimizer", "generation", "spread (median − best)", "re-run moved"], rows) + [
        "", f"- What helps: {noise.HELP}."]


def pruning_section(rd: RunDir, manifest: dict) -> list[str]:
    """How many GA trials the schedule's opt-in `prune:` stopped early, and the steps that saved (a
    pruned trial ranks below every finished one: fitness +inf, `pruned` in its record)."""
    settings = manifest["schedule"].get("prune")
    if not settings:
        return []
    rows = []
    for o in manifest["optimizers"]:
        records = rd.individuals(o)
        pruned = [r for r in records if r.get("pruned")]
        saved = sum(int(r["steps"]) - int(r["pruned"]["evaluation"]) for r in pruned)
        planned = sum(int(r["steps"]) for r in records)
        rows.append([o, f"{len(pruned)} of {len(records)}", f"{saved:,} of {planned:,}"])
    shown = f"at {settings.get('at')}, quantile {settings.get('quantile', 1):g}"
    return ["## Pruning", "", f"The schedule's pruning ({shown}) stopped these GA trials early (they rank "
            "below every finished trial; tuner/trial/prune.py):", ""] + \
        markdown_table(["Optimizer", "trials pruned", "individual-steps saved"], rows) + [""]


def retries_section(rd: RunDir, manifest: dict) -> list[str]:
    """Environmental failures (dead workers or nodes, out of memory) and the reruns they cost, from
    the records (every session) and summary.json (the last one); they never count as errors."""
    by_cause: dict[str, float] = {}
    jobs = 0
    for o in manifest["optimizers"]:
        for rec in rd.individuals(o) + rd.full_runs(o) + noise.records(rd, o):  # noise checks are trials too
            if rec.get("retries"):
                jobs += 1
                for r in rec["retries"]:  # a batch's retry is in each of its lanes' records: count it once
                    by_cause[r.get("error", "?")] = by_cause.get(r.get("error", "?"), 0) + 1 / r.get("batch_lanes", 1)
    by_cause = {k: round(v) for k, v in by_cause.items()}
    summary = rd.read_summary() or {}
    lines = ["## Retries (environmental failures)", ""]
    if not by_cause and not summary.get("retries") and not summary.get("stopped"):
        return lines + ["None: no worker, node or memory failure reached a trial."]
    if by_cause:
        causes = ", ".join(f"{k} {v}" for k, v in sorted(by_cause.items()))
        lines.append(f"{sum(by_cause.values())} retries of {jobs} recorded trials ({causes}); "
                     "each was run again on a live worker and its result is the undisturbed one.")
    if summary.get("retries"):
        causes = ", ".join(f"{k} {v}" for k, v in sorted(summary.get("retry_causes", {}).items()))
        lines.append(f"Last session: {summary['retries']} retries ({causes}).")
    if summary.get("stopped"):
        lines.append(f"The last session stopped: {summary['stopped']}. Resume the run to continue it.")
    return lines


def write_report(run_dir, out_dir=None) -> Path:
    """Write report.md (and figures/*.png when matplotlib is installed) for `run_dir` into
    `out_dir` (default: the run directory itself); return the path of report.md. Writing into the run
    directory takes its lock (`RunDir.lock`) for the time it writes, so a session running on it
    refuses it (`RunDirLocked`: give `out_dir`); a report elsewhere only reads it."""
    rd = RunDir.open(run_dir, schedule=True)
    out = Path(out_dir) if out_dir is not None else rd.path
    if rd.path.resolve() in (out.resolve(), *out.resolve().parents):
        with rd.lock():
            return _write_report(rd, out)
    return _write_report(rd, out)


def _write_report(rd: RunDir, out_dir: Path) -> Path:
    manifest = rd.manifest
    out_dir.mkdir(parents=True, exist_ok=True)
    data = collect(rd.path)
    paper_hparams = _paper_hparams(data["task"])
    schedule = manifest["schedule"]
    lines = [f"# lodo-tune report — {data['task']}", "",
             f"Run directory `{rd.path}`, created {manifest.get('created', '?')}, seed {manifest.get('seed')}; "
             f"population {schedule.get('population')}, generations {len(schedule['generations'])}; "
             f"full runs of {schedule['full_run']['steps']} steps, seeds {schedule['full_run']['seeds']}"
             + (f", time milestone {schedule['full_run']['time_milestone_s']:g} s"
                if schedule["full_run"].get("time_milestone_s") else "") + ".", ""]
    lines += provenance_section(data, manifest) + [""]
    lines += results_section(data, manifest) + [""]
    lines += tuned_section(data, paper_hparams) + [""]
    lines += errors_section(data) + [""]
    lines += noise_section(rd, manifest) + [""]
    lines += pruning_section(rd, manifest)
    lines += retries_section(rd, manifest) + [""]
    lines += ["## Figures", ""]
    if _figure_class() is None:
        lines += [SKIPPED]
    else:
        lines += write_figures(rd, manifest, out_dir, paper_hparams)
    if rd.log.path.is_file():  # the last line: what happened during the run
        lines += ["", f"Run log (JSON lines: start, resumes, generations, retries, errors, end): "
                      f"[{LOG}]({Path(os.path.relpath(rd.log.path, out_dir)).as_posix()})"]
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path
