"""Tuning quality at equal budget (issue 19): each searcher tunes each scalable optimizer on the
noisy bowl (or `--task rosenbrock`) with the faithful GA's budget, then 8 full runs (100k steps on
the bowl, the schedule's full-run length elsewhere) score what it found.

    searchers:  ga        the faithful Appendix-E GA (schedules/noisy_bowl.yaml, Table 5)
                ga-improved  schedules/noisy_bowl-improved.yaml, when that schedule exists
                random, tpe, cmaes  Optuna's samplers (tuner.search.optuna) at the faithful GA's budget:
                          800,000 individual-steps = 100 trials of 8,000 steps, rounds of 8 (random: 32)
    per cell (optimizer, searcher, searcher seed): tune, then full runs of the tuned values;
    per optimizer also "paper": Table 6's values in our code (the full runs only)

The table: mean and spread (population std and min–max) over searcher seeds of the cells' full-run
losses (each the mean over its 8 full runs), Table 1's number (lodo.paper), Table 6's values in our
code, and the compute each searcher spent (individual-steps per cell, wall seconds of tuning).

Every cell is a pair of run directories under --out (<searcher>/<optimizer>/seed-<s>/{tune,full})
plus cell.json; a finished cell is skipped, an interrupted one resumed, so the benchmark is run
again with the same flags to continue it. Ray is started once (--workers slots) and shared.

    .venv/bin/python benchmarks/tuning_quality.py --out runs/tuning_quality --workers 1 \\
        --optimizers Adam,Momentum,RMSprop,Yogi --searchers ga,random,tpe,cmaes --seeds 0,1,2
    .venv/bin/python benchmarks/tuning_quality.py --task rosenbrock --out runs/tuning_quality_rosenbrock \\
        --workers 1 --optimizers Adam,Momentum,RMSprop,Yogi --searchers ga,ga-improved,random,tpe,cmaes
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import lodo  # noqa: E402
import tuner  # noqa: E402
from lodo.paper import RESULTS  # noqa: E402
from tuner.driver.executor import init_ray  # noqa: E402
from tuner.driver.rundir import RunDir, atomic_write_json, read_json  # noqa: E402
from tuner.driver.schedule import bundled, load_schedule  # noqa: E402

SCALABLE = ("Adam", "Momentum", "RMSprop", "Yogi", "L-BFGS", "O-LBFGS", "LODO")
SEARCHERS = ("ga", "ga-improved", "random", "tpe", "cmaes")


def _names(args) -> tuple[str, str]:
    """The faithful and the improved GA's schedules: --schedule / --improved, else the task's own."""
    return args.schedule or args.task, args.improved or f"{args.task}-improved"


def _schedule(args, searcher: str):
    """The schedule a searcher tunes with: the faithful GA's (its budget for Optuna's samplers) or the improved GA's."""
    faithful, improved = _names(args)
    name = improved if searcher == "ga-improved" else faithful
    full = {"steps": args.full_steps, "seeds": args.full_seeds, "time_milestone_s": None}
    overrides = {"full_run": full, **json.loads(getattr(args, "set", None) or "{}")}
    if searcher not in ("ga", "ga-improved"):
        overrides["search"] = {"searcher": searcher}
    return load_schedule(name, overrides)


def _cell_json(path: Path) -> dict:
    return read_json(path) if path.is_file() else {}


def run_cell(args, optimizer: str, searcher: str, seed: int | None) -> dict:
    """Tune (unless searcher is "paper") and score one cell; resumes or skips what is on disk."""
    cell = args.out / searcher / optimizer / ("table6" if seed is None else f"seed-{seed}")
    info = _cell_json(cell / "cell.json")
    resources = tuner.Resources(workers=args.workers, address=args.address)
    schedule = _schedule(args, "ga" if searcher == "paper" else searcher)
    if searcher == "paper":
        hparams = {optimizer: dict(lodo.paper_hyperparameters(args.task)[optimizer])}
    elif "hyperparameters" in info:
        hparams = {optimizer: info["hyperparameters"]}
    else:
        tune_dir = cell / "tune"
        t0 = time.perf_counter()
        result = tuner.tune(args.task, optimizers=[optimizer], schedule=schedule, seed=seed, run_dir=tune_dir,
                            resume=(tune_dir / "manifest.json").is_file(), resources=resources)
        records = RunDir(tune_dir).individuals(optimizer)
        info = {"optimizer": optimizer, "searcher": searcher, "seed": seed, "schedule": schedule.source,
                "hyperparameters": result.hyperparameters[optimizer],
                "individual_steps": sum(r["steps"] for r in records), "trials": len(records),
                "tune_wall_s": info.get("tune_wall_s", 0.0) + (time.perf_counter() - t0)}
        atomic_write_json(cell / "cell.json", info)
        hparams = {optimizer: info["hyperparameters"]}
    if "full_loss" not in info:
        full_dir = cell / "full"
        t0 = time.perf_counter()
        report = tuner.evaluate(args.task, hparams, steps=args.full_steps, seeds=args.full_seeds, schedule=schedule,
                                seed=0, run_dir=full_dir, resume=(full_dir / "manifest.json").is_file(),
                                resources=resources)[optimizer]
        info.update(optimizer=optimizer, searcher=searcher, seed=seed, hyperparameters=hparams[optimizer],
                    full_loss=report["final_loss_mean"], full_std=report["final_loss_std"],
                    full_diverged=report["diverged"], full_wall_s=time.perf_counter() - t0)
        atomic_write_json(cell / "cell.json", info)
    return info


def _num(x: float) -> str:
    """Two decimals, or three significant digits below 0.1 (Rosenbrock's losses are ~1e-4)."""
    return f"{x:.2f}" if x == 0 or abs(x) >= 0.1 else f"{x:.2e}"


def _fmt(x) -> str:
    return "—" if x is None else ("diverged" if not math.isfinite(x) else _num(x))


def table(args, optimizers, searchers, seeds) -> str:
    """The markdown table of every cell measured so far under --out (missing cells say so)."""
    paper = RESULTS[args.task].rows if args.task in RESULTS else {}
    header = ["optimizer", "searcher", "full-run loss: mean ± std over seeds (min–max)", "seeds",
              "Table 1", "Table 6 in our code", "individual-steps", "tuning wall s (mean)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for o in optimizers:
        t6 = _cell_json(args.out / "paper" / o / "table6" / "cell.json").get("full_loss")
        for s in searchers:
            cells = [_cell_json(args.out / s / o / f"seed-{k}" / "cell.json") for k in seeds]
            done = [c for c in cells if "full_loss" in c]
            losses = [c["full_loss"] for c in done]
            finite = [v for v in losses if v is not None and math.isfinite(v)]
            if not done:
                value = "not measured yet"
            else:
                value = (f"{_num(np.mean(finite))} ± {_num(np.std(finite))} ({_num(min(finite))}–{_num(max(finite))})"
                         if finite else "diverged") + (f", {len(losses) - len(finite)} diverged"
                                                       if finite and len(finite) < len(losses) else "")
            steps = sorted({c["individual_steps"] for c in done if "individual_steps" in c})
            wall = [c["tune_wall_s"] for c in done if "tune_wall_s" in c]
            lines.append("| " + " | ".join([
                o, s, value, f"{len(done)}/{len(seeds)}", _fmt(paper.get(o, (None,))[0]), _fmt(t6),
                "/".join(f"{v:,}" for v in steps) or "—", f"{np.mean(wall):.0f}" if wall else "—"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out", type=Path, default=Path("runs/tuning_quality"), help="where the cells are kept")
    p.add_argument("--optimizers", default=",".join(SCALABLE))
    p.add_argument("--searchers", default=",".join(SEARCHERS),
                   help="ga, ga-improved (skipped when its schedule does not exist), random, tpe, cmaes")
    p.add_argument("--seeds", default="0,1,2", help="searcher seeds (tuner seeds), comma-separated")
    p.add_argument("--task", default="noisy_bowl", help="noisy_bowl or rosenbrock (any task with a schedule)")
    p.add_argument("--full-steps", type=int, default=None, help="default: the schedule's full-run length")
    p.add_argument("--full-seeds", type=int, default=8)
    p.add_argument("--no-paper", action="store_true", help="skip the Table 6 cells")
    p.add_argument("--schedule", default=None, help="the faithful GA's schedule (its budget is everyone's; default: the task's)")
    p.add_argument("--improved", default=None, help="the improved GA's schedule (default: <task>-improved)")
    p.add_argument("--set", default="{}", help="JSON overrides of every searcher's schedule, e.g. "
                   "'{\"horizon\": {\"L-BFGS\": [\"tau\"]}}' (use another --out: cells are kept by name)")
    p.add_argument("--workers", type=int, default=None, help="Ray worker slots (default: all cores)")
    p.add_argument("--address", default=None, help="join this Ray cluster")
    args = p.parse_args(argv)
    if args.full_steps is None:
        args.full_steps = load_schedule(_names(args)[0]).full_run.steps
    optimizers = [o for o in args.optimizers.split(",") if o]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    searchers = [s for s in args.searchers.split(",") if s]
    unknown = [s for s in searchers if s not in SEARCHERS]
    if unknown:
        p.error(f"--searchers: unknown {unknown[0]!r} (valid: {', '.join(SEARCHERS)})")
    improved = _names(args)[1]
    if "ga-improved" in searchers and not (improved in bundled() or Path(improved).is_file()):
        print(f"ga-improved skipped: no schedule {improved!r}", file=sys.stderr)
        searchers.remove("ga-improved")
    init_ray(args.address, args.workers)  # one Ray for every cell (tuner.run leaves a running Ray alone)
    t0 = time.perf_counter()
    if not args.no_paper:
        for o in optimizers:
            run_cell(args, o, "paper", None)
    for o in optimizers:  # optimizer by optimizer, so the first-order ones are done first
        for s in searchers:
            for k in seeds:
                info = run_cell(args, o, s, k)
                print(f"{o} {s} seed {k}: {_fmt(info['full_loss'])} "
                      f"({info.get('individual_steps', 0):,} individual-steps, {info.get('tune_wall_s', 0):.0f} s)",
                      file=sys.stderr, flush=True)
    text = table(args, optimizers, searchers, seeds)
    (args.out / "table.md").write_text(text)
    print(text, end="")
    print(f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
