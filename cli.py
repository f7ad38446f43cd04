"""lodo-tune: tune optimizers with the paper's GA on Ray, run full-length runs, export the tables.

    lodo-tune --task noisy_bowl [--optimizers Adam,LODO] [--hparams tuned|paper|FILE] ...
    lodo-tune --resume runs/noisy_bowl-20260101-120000
    lodo-tune export RUN_DIR --format markdown|csv|latex|json
    lodo-tune demo
    lodo-tune report RUN_DIR [--out DIR]
    lodo-tune meta-train --task noisy_bowl [--steps N] [--resume] [--workers N]

Every input is validated before the run directory is created or Ray starts: bad input prints
ONE line (`lodo-tune: error: --optimizers: unknown optimizer 'Adamm' (valid: ...)`) and exits 2.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

import lodo
from tuner import meta_train, report, results
from tuner.export import export
from tuner.plan import PlanError, Resources, make_plan
from tuner.rundir import RunDirError
from tuner.schedule import merge

PROG = "lodo-tune"


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + message; we print one line
        raise UsageError(message)


def _number(convert, minimum, strict: bool):
    """An argparse type: a finite number > minimum (strict) or >= minimum."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if convert is int else 'a number'}") from None
        if not (math.isfinite(value) and (value > minimum if strict else value >= minimum)):
            raise argparse.ArgumentTypeError(f"{value} is not allowed (must be {'>' if strict else '>='} {minimum})")
        return value
    return parse


_positive_int, _positive_float, _nonnegative_float = _number(int, 0, True), _number(float, 0, True), _number(float, 0, False)


def _milestone(text: str):
    return "none" if text.lower() in ("none", "null", "off") else _positive_float(text)


def _run_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="Tune optimizers on a task with the paper's GA on Ray, then run "
                                       "full-length runs with the tuned values.")
    p.add_argument("--task", help="noisy_bowl, rosenbrock, image_generation or resnet18_cifar10")
    p.add_argument("--optimizers", help="comma-separated optimizer names (default: the schedule's)")
    p.add_argument("--schedule", help="bundled schedule name or YAML path (default: the task's)")
    p.add_argument("--seed", type=int, default=None, help="tuner seed (default 0)")
    p.add_argument("--run-dir", help="run directory (default runs/<task>-<timestamp>)")
    p.add_argument("--resume", metavar="DIR", help="continue an interrupted run; reruns only what is missing")
    p.add_argument("--hparams", default=None, help="tuned (run the GA; default), paper (Table 6) or a "
                                                   "YAML/JSON file {optimizer: {hparam: value}}")
    p.add_argument("--no-full-runs", action="store_true", help="stop after tuning")
    p.add_argument("--steps", type=_positive_int, help="steps of each full-length run")
    p.add_argument("--seeds", type=_positive_int, help="number of full-length runs per optimizer")
    p.add_argument("--time-milestone", type=_milestone, metavar="SECONDS|none",
                   help="wall-clock milestone of each full-length run (default: the schedule's)")
    p.add_argument("--noise-variance", type=_positive_float, help="noisy_bowl: variance v of the random walk")
    p.add_argument("--data-dir", help="image tasks: dataset directory")
    p.add_argument("--address", help="join this Ray cluster (default: start a local one)")
    p.add_argument("--workers", type=_positive_int, help="worker slots (default: all cores)")
    p.add_argument("--cpus-per-trial", type=_positive_float, default=1.0)
    p.add_argument("--gpus-per-trial", type=_nonnegative_float, default=0.0)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--no-batch", action="store_true", help="one trial per individual/full run (default: a "
                   "generation's individuals and an optimizer's full runs as batched trials where possible)")
    p.add_argument("--quiet", action="store_true", help="no progress and no tables")
    p.add_argument("--json", action="store_true", help="print a machine-readable result on stdout")
    return p


def _export_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} export", description="Print a run directory's tables (Table 6 and Table 1 layouts).")
    p.add_argument("run_dir")
    p.add_argument("--format", default="markdown", choices=["markdown", "csv", "latex", "json"])
    return p


def _report_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} report", description="Write report.md and figures for a run directory.")
    p.add_argument("run_dir", help="run directory (finished or not)")
    p.add_argument("--out", default=None, metavar="DIR", help="where to write report.md and figures/ "
                                                             "(default: the run directory)")
    return p


def _load_hparams_file(path: str) -> dict:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"--hparams: {path!r} cannot be read ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError:
        raise UsageError(f"--hparams: {path!r} is not valid YAML/JSON") from None
    if not isinstance(data, dict) or not data:
        raise UsageError(f"--hparams: {path!r} must map optimizer -> {{hparam: value}}")
    return data


FLAGS = {"hyperparameters": "--hparams"}  # the rest: --<last part of the name>


def _flag(parameter: str, args) -> str:
    """The flag of a `PlanError` parameter: "resources.cpus_per_trial" -> "--cpus-per-trial"."""
    if parameter == "run_dir" and args.resume:
        return "--resume"
    return FLAGS.get(parameter, "--" + parameter.split(".")[-1].replace("_", "-"))


def _plan(args, demo: dict | None = None):
    """The run's `tuner.plan.Plan` from the flags; library errors become a UsageError naming the flag."""
    if args.resume and args.run_dir:
        raise UsageError("--run-dir: not allowed with --resume (the run directory is the one resumed)")
    full_run = {k: v for k, v in (("steps", args.steps), ("seeds", args.seeds)) if v is not None}
    if args.time_milestone is not None:
        full_run["time_milestone_s"] = None if args.time_milestone == "none" else args.time_milestone
    task_options = {k: v for k, v in (("noise_variance", args.noise_variance), ("data_dir", args.data_dir))
                    if v is not None}
    overrides = merge(demo or {}, {k: v for k, v in (("full_run", full_run), ("task_options", task_options))
                                            if v})
    hparams = args.hparams if args.hparams in (None, "tuned", "paper") else _load_hparams_file(args.hparams)
    try:
        return make_plan(args.task, optimizers=None if args.optimizers is None else
                         [o.strip() for o in args.optimizers.split(",") if o.strip()],
                         schedule=args.schedule, schedule_overrides=overrides or None, seed=args.seed,
                         run_dir=args.resume or args.run_dir, resume=bool(args.resume), hyperparameters=hparams,
                         full_runs=False if args.no_full_runs else None,
                         resources=Resources(workers=args.workers, address=args.address,
                                             cpus_per_trial=args.cpus_per_trial,
                                             gpus_per_trial=args.gpus_per_trial, device=args.device,
                                             batch=not args.no_batch))
    except PlanError as e:
        raise UsageError(f"{_flag(e.parameter, args)}: {e.message}") from None


class _Progress:
    """Live rich progress on stderr: per optimizer, generation g/G, individuals done, best, ETA."""

    def __init__(self):
        self.progress = Progress(TextColumn("{task.description:<22}"), BarColumn(),
                                 TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=False)
        self.ids: dict = {}

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def __call__(self, e: dict) -> None:
        key = (e["kind"], e["optimizer"])
        if e["kind"] == "tuning":
            total, done = e["steps_total"], e["steps_done"]
            if e["generation"] >= e["generations"]:
                status = "tuned" + (f" · best {e['best']:.4g}" if e["best"] is not None else "")
            else:
                best = f"{e['best']:.4g}" if e["best"] is not None else "—"
                status = f"g {e['generation'] + 1}/{e['generations']} · {e['done']}/{e['population']} · best {best}"
            label = f"tune {e['optimizer']}"
        else:
            total, done = e["total"], e["done"]
            status, label = f"{done}/{total} seeds", f"full {e['optimizer']}"
        if key not in self.ids:
            self.ids[key] = self.progress.add_task(label, total=total, status=status)
        self.progress.update(self.ids[key], completed=done, status=status)


def _print_tables(result, console) -> None:
    data = results.collect(result.run_dir)
    tables = [(f"Tuned hyperparameters ({data['source']}) — {data['task']}", results.table6_header(data),
               results.table6_rows(data))]
    if data["results"]:
        tables.append((f"Results — {data['task']} (mean ± std over seeds, last-10 % training loss)",
                       results.table1_header(data), results.table1_rows(data)))
    for title, header, rows in tables:
        t = Table(*header, title=title)
        for row in rows:
            t.add_row(*row)
        console.print(t)
    line = f"run dir {result.run_dir} · individuals ran {result.ran}, reused {result.reused}"
    if result.errors:
        line += f", {result.errors} raised (see errors/)"
    if result.ran:
        line += f" · efficiency {result.efficiency:.2f} on {result.workers} workers"
    console.print(line + f" · {result.wall_seconds:.1f} s")


def _run(args, demo: dict | None = None) -> int:
    plan = _plan(args, demo)
    from tuner.api import run_plan  # imports Ray: only on the path that runs trials

    progress = None if (args.quiet or args.json) else _Progress()
    try:
        if progress:
            with progress:
                result = run_plan(plan, progress)
        else:
            result = run_plan(plan)
    except RunDirError as e:  # records that do not match this run's GA
        raise UsageError(f"--resume: {e}") from None
    report = _write_report(result.run_dir)
    if args.json:
        out = json.loads(export(result.run_dir, "json"))
        out.update(run_dir=str(result.run_dir), reused=result.reused, ran=result.ran, errors=result.errors,
                   full_reused=result.full_reused, full_ran=result.full_ran,
                   efficiency=None if math.isnan(result.efficiency) else result.efficiency,
                   wall_seconds=result.wall_seconds, workers=result.workers,
                   report=None if report is None else str(report))
        print(json.dumps(out, indent=2, allow_nan=False))
    elif not args.quiet:
        _print_tables(result, Console())
        if report is not None:
            print(f"report {report}")
    return 0


def _write_report(run_dir):
    """The run's report.md and figures; a failure here never fails a finished run."""
    try:
        return report.write_report(run_dir)
    except Exception as e:  # noqa: BLE001 - the run's records are already safe on disk
        print(f"{PROG}: warning: report not written: {e}", file=sys.stderr)
        return None


DEMO_OPTIMIZERS = ("Adam", "Momentum", "LODO")


def demo_schedule() -> dict:
    """A one-minute taste of the whole job: a short GA that starts from the paper's Table 6 values
    (tuning from the defaults needs the full Table 5 schedule), then 20k-step full runs."""
    paper = lodo.paper_hyperparameters("noisy_bowl")
    return {
        "population": 8,
        "generations": [{"noise": 1.0, "steps": 1000}, {"noise": 0.5, "steps": 2000}],
        "start": {o: dict(paper[o]) for o in DEMO_OPTIMIZERS},
        "full_run": {"steps": 20000, "seeds": 2, "time_milestone_s": None},
    }


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["export"]:
            args = _export_parser().parse_args(argv[1:])
            try:
                sys.stdout.write(export(args.run_dir, args.format))
            except ValueError as e:  # not a run directory
                raise UsageError(f"export: {e}") from None
            return 0
        if argv[:1] == ["report"]:
            args = _report_parser().parse_args(argv[1:])
            try:
                print(report.write_report(args.run_dir, args.out))
            except ValueError as e:  # a missing or invalid run directory
                raise UsageError(f"report: {e}") from None
            return 0
        if argv[:1] == ["meta-train"]:
            args = meta_train.configure_parser(
                _Parser(prog=f"{PROG} meta-train", description="Meta-train the L2LBGDBGD LSTM optimizer.")
            ).parse_args(argv[1:])
            try:
                return meta_train.run_from_args(args)
            except ValueError as e:  # invalid meta-training settings name their field
                raise UsageError(str(e)) from None
        if argv[:1] == ["demo"]:
            parser = _run_parser(f"{PROG} demo")
            args = parser.parse_args(["--task", "noisy_bowl", "--optimizers", ",".join(DEMO_OPTIMIZERS)] + argv[1:])
            if args.run_dir is None and args.resume is None:
                args.run_dir = str(Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
            return _run(args, demo_schedule() if args.resume is None else None)
        if argv[:1] == ["run"]:
            argv = argv[1:]
        return _run(_run_parser().parse_args(argv))
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)


if __name__ == "__main__":
    sys.exit(main())
