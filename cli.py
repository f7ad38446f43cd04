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

PROG = "lodo-tune"


class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + message; we print one line
        raise UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed (must be a positive integer)")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{value} is not allowed (must be a positive number)")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{value} is not allowed (must be a number >= 0)")
    return value


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
    p.add_argument("--quiet", action="store_true", help="no progress and no tables")
    p.add_argument("--json", action="store_true", help="print a machine-readable result on stdout")
    return p


def _export_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=f"{PROG} export", description="Print a run directory's tables (Table 6 and Table 1 layouts).")
    p.add_argument("run_dir")
    p.add_argument("--format", default="markdown", choices=["markdown", "csv", "latex", "json"])
    return p


def _load_hparams_file(path: str) -> dict:
    import yaml

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


def _check_hparams(table: dict, source: str) -> dict:
    import lodo

    out = {}
    for opt, hp in table.items():
        if opt not in lodo.available():
            raise UsageError(f"--hparams: unknown optimizer {opt!r} in {source} (valid: {', '.join(lodo.available())})")
        if not isinstance(hp, dict):
            raise UsageError(f"--hparams: {opt} in {source} must map hyperparameter -> value")
        valid = [h.name for h in lodo.hyperparameters(opt)]
        for name, value in hp.items():
            if name not in valid:
                raise UsageError(f"--hparams: unknown hyperparameter {name!r} for {opt} in {source} "
                                 f"(valid: {', '.join(valid)})")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UsageError(f"--hparams: {opt}.{name} = {value!r} in {source} is not allowed (must be a number)")
        out[opt] = {k: float(v) for k, v in hp.items()}
    return out




def _validate(args) -> dict:
    """Everything `tuner.api.run` needs, checked; raises UsageError. Writes nothing."""
    import lodo
    import tasks
    from tuner.rundir import RunDir, RunDirError
    from tuner.schedule import Schedule, ScheduleError, load_schedule

    manifest = None
    if args.resume:
        if args.run_dir:
            raise UsageError("--run-dir: not allowed with --resume (the run directory is the one resumed)")
        try:
            manifest = RunDir.check_resume(args.resume, args.task, None)
        except RunDirError as e:
            raise UsageError(str(e)) from None
    task = args.task or (manifest or {}).get("task")
    if task is None:
        raise UsageError("--task: required (one of: " + ", ".join(tasks.available()) + ")")
    if task not in tasks.available():
        raise UsageError(f"--task: unknown task {task!r} (valid: {', '.join(tasks.available())})")

    overrides: dict = {}
    full = {k: v for k, v in (("steps", args.steps), ("seeds", args.seeds)) if v is not None}
    if args.time_milestone is not None:
        full["time_milestone_s"] = None if args.time_milestone == "none" else args.time_milestone
    if full:
        overrides["full_run"] = full
    task_options = {}
    if args.noise_variance is not None:
        task_options["noise_variance"] = args.noise_variance
    if args.data_dir is not None:
        task_options["data_dir"] = args.data_dir
    valid_options = tasks.options(task)
    for name in task_options:
        if name not in valid_options:
            raise UsageError(f"--{name.replace('_', '-')}: not an option of task {task!r}")
    if task_options:
        overrides["task_options"] = task_options
    try:
        if manifest is not None and args.schedule is None:
            base = Schedule.from_dict(manifest["schedule"], source=f"{args.resume}/manifest.json")
            schedule = Schedule.from_dict(_merge(base.to_dict(), overrides), source=base.source) if overrides else base
        else:
            schedule = load_schedule(args.schedule or task, overrides or None)
    except ScheduleError as e:
        raise UsageError(f"--schedule: {e}") from None
    if schedule.task != task:
        raise UsageError(f"--schedule: it is for task {schedule.task!r}, not {task!r}")

    if args.optimizers is not None:
        optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
        if not optimizers:
            raise UsageError("--optimizers: empty list")
        for o in optimizers:
            if o not in lodo.available():
                raise UsageError(f"--optimizers: unknown optimizer {o!r} (valid: {', '.join(lodo.available())})")
        if len(set(optimizers)) != len(optimizers):
            raise UsageError(f"--optimizers: an optimizer is repeated in {args.optimizers!r}")
    elif manifest is not None:
        optimizers = list(manifest["optimizers"])
    else:
        optimizers = list(schedule.optimizers)

    mode = args.hparams or (manifest or {}).get("hparams") or "tuned"
    if manifest is not None and manifest.get("hparams") not in (None, "tuned", "paper") and args.hparams is None:
        hyperparameters = manifest["given_hyperparameters"]
    elif mode in ("tuned", "paper"):
        hyperparameters = mode
        if mode == "paper":
            try:
                lodo.paper_hyperparameters(task)
            except ValueError as e:
                raise UsageError(f"--hparams: {e}") from None
    else:
        table = _check_hparams(_load_hparams_file(mode), mode)
        missing = [o for o in optimizers if o not in table]
        if args.optimizers is None:
            optimizers = list(table)
        elif missing:
            raise UsageError(f"--hparams: {mode} has no values for {', '.join(missing)}")
        hyperparameters = {o: table[o] for o in optimizers}

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device: cuda is not available here (torch sees no CUDA device; use --device cpu)")
    seed = args.seed if args.seed is not None else (manifest or {}).get("seed", 0)

    from tuner.api import default_run_dir

    run_dir = Path(args.resume or args.run_dir or default_run_dir(task))
    try:
        if args.resume:
            RunDir.check_resume(run_dir, task, schedule.to_dict())
            if manifest.get("seed") != seed:
                raise RunDirError(f"--resume: {str(run_dir)!r} was run with --seed {manifest.get('seed')}, not {seed}")
            if manifest.get("optimizers") != optimizers:
                raise RunDirError(f"--resume: {str(run_dir)!r} runs {','.join(manifest['optimizers'])}, "
                                  f"not {','.join(optimizers)}")
        else:
            RunDir.check_new(run_dir)
    except RunDirError as e:
        raise UsageError(str(e)) from None
    return dict(task=task, optimizers=optimizers, schedule=schedule, seed=seed, run_dir=run_dir,
                resume=bool(args.resume), hyperparameters=hyperparameters,
                full_runs=not (args.no_full_runs or (manifest or {}).get("full_runs") is False),
                workers=args.workers, address=args.address, cpus_per_trial=args.cpus_per_trial,
                gpus_per_trial=args.gpus_per_trial, device=args.device)


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for k, v in overrides.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _Progress:
    """Live rich progress on stderr: per optimizer, generation g/G, individuals done, best, ETA."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

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
    from rich.table import Table

    from tuner.export import _table1_header, _table1_rows, _table6_rows, collect

    data = collect(result.run_dir)
    t = Table(title=f"Tuned hyperparameters ({data['source']}) — {data['task']}")
    for h in ("Optimizer", "Hyperparameters", data["task"]):
        t.add_column(h)
    for row in _table6_rows(data):
        t.add_row(*row)
    console.print(t)
    if data["results"]:
        t = Table(title=f"Results — {data['task']} (mean ± std over seeds, last-10 % training loss)")
        for h in _table1_header(data):
            t.add_column(h)
        for row in _table1_rows(data):
            t.add_row(*row)
        console.print(t)
    line = f"run dir {result.run_dir} · individuals ran {result.ran}, reused {result.reused}"
    if result.errors:
        line += f", {result.errors} raised (see errors/)"
    if result.ran:
        line += f" · efficiency {result.efficiency:.2f} on {result.workers} workers"
    console.print(line + f" · {result.wall_seconds:.1f} s")


def _run(args, demo_overrides: dict | None = None) -> int:
    plan = _validate(args)
    if demo_overrides:
        from tuner.schedule import Schedule

        plan["schedule"] = Schedule.from_dict(_merge(plan["schedule"].to_dict(), demo_overrides), source="demo")
    from tuner import api

    progress = None if (args.quiet or args.json) else _Progress()
    if progress:
        with progress:
            result = api.run(progress=progress, **plan)
    else:
        result = api.run(**plan)
    report = _write_report(result.run_dir)
    if args.json:
        from tuner.export import collect

        out = json.loads(api.export_table(result, "json"))
        out.update(run_dir=str(result.run_dir), reused=result.reused, ran=result.ran, errors=result.errors,
                   full_reused=result.full_reused, full_ran=result.full_ran,
                   efficiency=None if math.isnan(result.efficiency) else result.efficiency,
                   wall_seconds=result.wall_seconds, workers=result.workers,
                   report=None if report is None else str(report))
        print(json.dumps(out, indent=2, allow_nan=False))
    elif not args.quiet:
        from rich.console import Console

        _print_tables(result, Console())
        if report is not None:
            print(f"report {report}")
    return 0


def _write_report(run_dir):
    """The run's report.md and figures; a failure here never fails a finished run."""
    from tuner.report import write_report

    try:
        return write_report(run_dir)
    except Exception as e:  # noqa: BLE001 - the run's records are already safe on disk
        print(f"{PROG}: warning: report not written: {e}", file=sys.stderr)
        return None


DEMO_OPTIMIZERS = ("Adam", "Momentum", "LODO")


def _demo_schedule() -> dict:
    """A one-minute taste of the whole job: a short GA that starts from the paper's Table 6 values
    (tuning from the defaults needs the full Table 5 schedule), then 20k-step full runs."""
    import lodo

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
            from tuner.export import export
            from tuner.rundir import RunDirError

            try:
                sys.stdout.write(export(args.run_dir, args.format))
            except RunDirError as e:
                raise UsageError(str(e)) from None
            return 0
        if argv[:1] == ["report"]:
            from tuner import report

            args = report.configure_parser(
                _Parser(prog=f"{PROG} report", description="Write report.md and figures for a run directory.")
            ).parse_args(argv[1:])
            try:
                return report.run_from_args(args)
            except ValueError as e:  # a missing or invalid run directory
                raise UsageError(str(e)) from None
        if argv[:1] == ["meta-train"]:
            from tuner import meta_train

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
            return _run(args, _demo_schedule() if args.resume is None else None)
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
