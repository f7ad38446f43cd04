"""lodo-tune: tune optimizers with the paper's GA on Ray, run full-length runs, export the tables.

    lodo-tune --task noisy_bowl [--optimizers Adam,LODO] [--hparams tuned|paper|FILE] ...
    lodo-tune --resume runs/noisy_bowl-20260101-120000
    lodo-tune export RUN_DIR --format markdown|csv|latex|json
    lodo-tune demo
    lodo-tune report RUN_DIR [--out DIR]
    lodo-tune report RUN_DIR1 RUN_DIR2 ... [--out DIR]     (the spread over runs of one task)
    lodo-tune init-schedule [PATH]       # a commented schedule for your own task (default schedule.yaml)
    lodo-tune meta-train --task noisy_bowl [--steps N] [--resume] [--workers N]

Every input is validated before the run directory is created or Ray starts: bad input prints
ONE line (`lodo-tune: error: --optimizers: unknown optimizer 'Adamm' (valid: ...)`) and exits 2.
Exit 2 too (one line naming the file or the other process) for a run directory in use by another
lodo-tune, a damaged checkpoint/record/manifest, or a trial whose memory fits on no Ray node.
Exit 3: the environment (dead workers or nodes, out of memory) failed one trial MAX_ATTEMPTS
times; the line names it and the cause, what finished is saved, --resume continues.

Output: results on stdout (tables; with --json exactly one JSON document, also on failure),
progress, log lines and errors on stderr (`_Output`); the run directory keeps a run log.
Exit codes: EXIT_CODES (printed by --help).
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import sys
import threading
import time
import traceback
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

import lodo
from tuner.report import compare
from lodo import meta_train
from tuner.report import report
from tuner.report import results
from tuner.driver.executor import PersistentFailure  # no Ray import: that waits for init_ray
from tuner.report.export import export, provenance
from tuner.driver.plan import PlanError, Resources, make_plan
from tuner.driver.rundir import LOG, RunDirError, RunDirLocked
from tuner.driver.schedule import ScheduleError, clean, merge, parse_yaml, read_text, template

PROG = "lodo-tune"
MAX_MESSAGE = 600  # characters of an error line
BAD_INPUT, PERSISTENT_FAILURE, OPTIMIZERS_FAILED, INTERRUPTED = 2, 3, 4, 130
EXIT_CODES = """exit codes:
  0    done
  1    an internal error (a bug: the traceback is on stderr)
  2    bad input: one line on stderr naming the flag and the value; nothing written, Ray not started
  3    stopped by a persistent failure of the environment (workers keep dying, out of memory, ...):
       the records written so far are kept; fix the cause and --resume the run
  4    finished, but some optimizers failed: most trials of one generation (or most full runs)
       raised; stderr names them with the first error and its traceback file; they are not tuned
       (status "failed"), the others' results stand; fix the cause and --resume the run
  130  interrupted (Ctrl-C): every finished record is on disk; --resume DIR continues the run

With --json, stdout is exactly one JSON document on every exit: the results, or
{"error": "<the one-line message>", "exit_code": N, "run_dir": ...}. Every run directory keeps
a run log, log.jsonl (JSON lines: start, resumes, generations, retries, errors, end)."""
# Exception classes that stop a run for a persistent environmental failure (exit 3, one line).
_PERSISTENT_FAILURES: tuple[type[BaseException], ...] = (PersistentFailure,)
_PACKAGES = ("lodo", "tuner", "tasks")  # the loggers the CLI shows at INFO (-v: DEBUG; --quiet: WARNING)


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


def _run_parser(prog: str = PROG, make=_Parser) -> argparse.ArgumentParser:
    p = make(prog=prog, description="Tune optimizers on a task with the paper's GA on Ray, then run "
                                       "full-length runs with the tuned values.", epilog=EXIT_CODES,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", help="noisy_bowl, rosenbrock, image_generation, resnet18_cifar10, or your own: "
                                  "package.module:Name or path/to/file.py:Name (docs/tasks.md)")
    p.add_argument("--optimizers", help="comma-separated optimizer names (default: the schedule's)")
    p.add_argument("--schedule", help="bundled schedule name or YAML path (default: the task's; required "
                                      "for your own task: see init-schedule)")
    p.add_argument("--searcher", metavar="ga|random|tpe|cmaes",
                   help="what tunes (default: the schedule's search.searcher, else ga: the paper's GA); random, "
                        'tpe, cmaes: Optuna\'s samplers at the GA\'s budget (pip install "lodo-tune[search]")')
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
    p.add_argument("--memory-per-trial", type=_positive_float, metavar="GIB",
                   help="memory each trial declares to Ray (default: estimated from the task and optimizers)")
    p.add_argument("--quiet", action="store_true", help="no progress, no tables, no log lines on stderr but "
                                                        "warnings to act on (errors as always)")
    p.add_argument("--json", action="store_true", help="stdout: exactly one JSON document (the results, or "
                                                       "the error and exit code); everything else on stderr")
    _verbose(p)
    return p


def _verbose(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("-v", "--verbose", action="store_true", help="debug log lines on stderr")
    return p


def _export_parser(make=_Parser) -> argparse.ArgumentParser:
    p = make(prog=f"{PROG} export", description="Print a run directory's tables (Table 6 and Table 1 layouts).")
    _verbose(p)
    p.add_argument("run_dir")
    p.add_argument("--format", default="markdown", choices=["markdown", "csv", "latex", "json"])
    return p


def _report_parser(make=_Parser) -> argparse.ArgumentParser:
    p = make(prog=f"{PROG} report", description="Write report.md and figures for a run directory; for "
                                                      "several runs of one task (one per --seed), comparison.md: "
                                                      "the spread of the tuned values and losses over the runs.")
    _verbose(p)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directory (finished or not); several: compare them")
    p.add_argument("--out", default=None, metavar="DIR", help="where to write report.md and figures/ (default: the "
                                                             "run directory); for several, comparison.md (default: "
                                                             "comparison-<task>/; never inside an input run directory)")
    return p


def _init_schedule_parser(make=_Parser) -> argparse.ArgumentParser:
    p = make(prog=f"{PROG} init-schedule", description="Write a commented tuning schedule to start your "
                                                          "own task's from (Table 5's shape; docs/tasks.md).")
    p.add_argument("path", nargs="?", default="schedule.yaml", help="where to write it (default schedule.yaml); "
                                                                    "never overwritten")
    p.add_argument("--task", default=None, help="propose the generations' trial lengths from a pilot of this task "
                                                "(\"path/to/file.py:Name\", ...): how many steps its loss needs to "
                                                "leave its start at the optimizers' starting values")
    p.add_argument("--pilot-steps", type=int, default=1000, metavar="N",
                   help="the pilot's budget per optimizer (default 1000 steps)")
    return p


def _piloted_template(task: str, budget: int) -> tuple[str, str]:
    """The template with trial lengths from a pilot of `task` (tuner.driver.pilot), and a one-line summary."""
    import tasks
    import yaml
    from tuner.driver import pilot, preflight
    from tuner.driver.schedule import TEMPLATE, Schedule

    if isinstance(budget, bool) or not 2 * pilot.WINDOW <= budget <= 10**6:
        raise UsageError(f"--pilot-steps: {budget!r} is not allowed (must be an integer in [{2 * pilot.WINDOW}, 1000000])")
    try:
        spec = tasks.resolve(task)
    except ValueError as e:
        raise UsageError(f"--task: {e}") from None
    schedule = Schedule.from_dict(yaml.safe_load(TEMPLATE), "the template")
    try:
        preflight.check(spec, schedule, schedule.optimizers)
    except preflight.PreflightError as e:
        raise UsageError(f"--{'task' if e.parameter == 'task' else 'optimizers'}: {e.message}") from None
    pilots = pilot.run(spec, schedule, budget=budget)  # logs each optimizer's finding
    proposal = pilot.propose(pilots, budget)
    note = "\n".join([f"Trial lengths from a pilot of {spec.name} (lodo-tune init-schedule --task): seed 0, "
                      f"each optimizer at its starting values,"] + [f"  {p.describe()};" for p in pilots]
                     + [f"first trials {pilot.FACTOR}x the slowest, rounded (tuner/driver/pilot.py)."])
    text = template(proposal["generations"], proposal["full_run"], note)
    steps = ", ".join(map(str, proposal["generations"]))
    return text, f"trial lengths {steps}, full runs {proposal['full_run']} from a pilot of {spec.name}"


def _init_schedule(path: str, task: str | None = None, pilot_steps: int = 1000) -> int:
    target = Path(path)
    if target.exists():
        raise UsageError(f"init-schedule: {path!r} exists (not overwritten; give another path)")
    text, how = _piloted_template(task, pilot_steps) if task is not None else (template(), "")
    try:
        with open(target, "x", encoding="utf-8") as f:  # "x": never overwrite, even if created meanwhile
            f.write(text)
    except OSError as e:
        raise UsageError(f"init-schedule: {path!r} cannot be written ({e.strerror or e})") from None
    print(f"wrote {path}{f' ({how})' if how else ''}: edit it, then lodo-tune --task "
          f"{task or 'path/to/file.py:Name'} --schedule {path}")
    return 0


def _load_hparams_file(path: str) -> dict:
    """The --hparams file through the schedule's bounded loader (a regular UTF-8 file of at most 1 MiB,
    no duplicate keys, aliases expanded to a bounded size; YAML is a superset of JSON)."""
    shown = repr(clean(path, 120))
    try:
        data = parse_yaml(read_text(path, shown), shown)
    except ScheduleError as e:
        raise UsageError(f"--hparams: {e}") from None
    if not isinstance(data, dict) or not data:
        raise UsageError(f"--hparams: {shown} must map optimizer -> {{hparam: value}}")
    return data


FLAGS = {"hyperparameters": "--hparams"}  # the rest: --<last part of the name>


def _flag(parameter: str, args) -> str:
    """The flag of a `PlanError` parameter: "resources.cpus_per_trial" -> "--cpus-per-trial"."""
    if parameter == "run_dir" and args.resume:
        return "--resume"
    if parameter.startswith("task_options.") and (parameter.split(".", 1)[1] not in ("noise_variance", "data_dir")
                                                  or getattr(args, parameter.split(".", 1)[1], None) is None):
        return f"--schedule: {parameter}"  # an option only the schedule can set (a user task's), or it set it
    return FLAGS.get(parameter, "--" + parameter.split(".")[-1].replace("_", "-"))


def _plan(args, demo: dict | None = None):
    """The run's `tuner.driver.plan.Plan` from the flags; library errors become a UsageError naming the flag."""
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
                         full_runs=False if args.no_full_runs else None, searcher=args.searcher,
                         resources=Resources(workers=args.workers, address=args.address,
                                             cpus_per_trial=args.cpus_per_trial,
                                             gpus_per_trial=args.gpus_per_trial, device=args.device,
                                             memory_per_trial=args.memory_per_trial,
                                             batch=not args.no_batch))
    except PlanError as e:
        raise UsageError(f"{_flag(e.parameter, args)}: {e.message}") from None


class _Progress:
    """Live rich progress on stderr: per optimizer, generation g/G, individuals done, best, ETA."""

    def __init__(self, console: Console):
        # redirect_stdout/stderr (rich's defaults): Python-level prints go above the bars
        self.progress = Progress(TextColumn("{task.description:<22}"), BarColumn(),
                                 TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                                 console=console, transient=False, redirect_stdout=True, redirect_stderr=True)
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
    tables = [(f"Tuned hyperparameters ({provenance(data)}) — {data['task']}", results.table6_header(data),
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
        line += f", {result.errors} raised (errors, not divergences: see errors/)"
    if result.ran:
        line += f" · efficiency {result.efficiency:.2f} on {result.workers} workers"
    console.print(line + f" · {result.wall_seconds:.1f} s")


def _run(args, out: "_Output", demo: dict | None = None) -> int:
    plan = _plan(args, demo)
    out.run_dir = plan.run_dir
    from tuner.driver.api import run_plan  # imports Ray: only on the path that runs trials

    progress = None if (args.quiet or args.json) else _Progress(out.console)
    try:
        if progress:
            with _FdLines(out.console), progress:
                result = run_plan(plan, progress)
        else:
            result = run_plan(plan)
    except RunDirError as e:  # in use by another process; records that do not match this run or are damaged
        raise UsageError(f"{_flag('run_dir', args)}: {e}") from None
    except PlanError as e:  # checks that need Ray: a trial that fits on no node
        raise UsageError(f"{_flag(e.parameter, args)}: {e.message}") from None
    report = _write_report(result.run_dir)
    log = result.run_dir / LOG
    if args.json:
        data = json.loads(export(result.run_dir, "json"))
        data.update(run_dir=str(result.run_dir), reused=result.reused, ran=result.ran, errors=result.errors,
                    failed=result.failed, exit_code=OPTIMIZERS_FAILED if result.failed else 0,
                    full_reused=result.full_reused, full_ran=result.full_ran,
                    efficiency=None if math.isnan(result.efficiency) else result.efficiency,
                    wall_seconds=result.wall_seconds, workers=result.workers,
                    report=None if report is None else str(report), log=str(log))
        out.emit_json(data)
    elif not args.quiet:
        _print_tables(result, Console())
        if report is not None:
            print(f"report {report}")
        print(f"run log {log}")
    return _failed(result)


def _failed(result) -> int:
    """Exit code 4 (one stderr line per failed optimizer) when some optimizers failed, else 0."""
    for optimizer, why in result.failed.items():
        stage = f"generation {why['generation']}" if why.get("generation") is not None else why["stage"]
        print(f"{PROG}: {optimizer} failed: {why['errors']} of {why['trials']} trials of {stage} raised: "
              f"{why['error']} (traceback: {result.run_dir / why['traceback']}); fix the cause and "
              f"{PROG} --resume {result.run_dir}", file=sys.stderr)
    return OPTIMIZERS_FAILED if result.failed else 0


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


class _FdLines:
    """While the progress bars are live: file descriptor 1 into a pipe whose lines a thread prints
    through `console`, so output that bypasses sys.stdout (C code, child processes) goes above
    the bars instead of through them (sys.stdout itself is redirected by rich's Progress)."""

    def __init__(self, console: Console):
        self.console, self.saved, self.thread = console, None, None

    def __enter__(self):
        sys.stdout.flush()
        read, write = os.pipe()
        self.saved = os.dup(1)
        os.dup2(write, 1)
        os.close(write)
        self.thread = threading.Thread(target=self._pump, args=(read,), name="lodo-tune-fd1", daemon=True)
        self.thread.start()
        return self

    def _pump(self, read: int) -> None:
        with os.fdopen(read, "rb") as pipe:
            for line in pipe:
                self.console.print(line.decode(errors="replace").rstrip("\n"), markup=False, highlight=False,
                                   soft_wrap=True)

    def __exit__(self, *exc):
        sys.stdout.flush()
        os.dup2(self.saved, 1)  # the pipe's last writer in this process: the thread sees its end
        os.close(self.saved)
        self.thread.join(timeout=2)  # a child process still holding the pipe must not hang the exit


class _Output:
    """Where a command's output goes. Logging: one handler on the root logger, on stderr (rich's,
    sharing the progress bars' console, on a terminal; plain lines otherwise); lodo/tuner/tasks
    at INFO (-v DEBUG, --quiet WARNING), other libraries (Ray) at WARNING (-v INFO, --quiet ERROR),
    Python warnings at WARNING. --json: sys.stdout and file descriptor 1 point at stderr for the
    whole command, Ray's threads and child processes included, and the JSON document is written
    to the real stdout; as a program (`main()` without argv) stdout stays redirected to the end,
    so what Ray prints at interpreter exit cannot follow the document."""

    def __init__(self, json_mode: bool, program: bool):
        self.json, self.program = json_mode, program
        self.console = Console(stderr=True)
        self.run_dir = None
        self.saved_fd = self.saved_stdout = None
        self.handler, self.levels, self.emitted = None, {}, False

    def start(self, quiet: bool = False, verbose: bool = False) -> None:
        if self.console.is_terminal:
            self.handler = RichHandler(console=self.console, show_time=False, show_path=verbose, markup=False)
        else:
            self.handler = logging.StreamHandler(sys.stderr)
            self.handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
        ours = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
        levels = {"": logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING,
                  "py.warnings": logging.WARNING, **{name: ours for name in _PACKAGES}}
        for name, level in levels.items():
            self.levels[name] = logging.getLogger(name).level
            logging.getLogger(name).setLevel(level)
        logging.getLogger().addHandler(self.handler)
        logging.captureWarnings(True)
        if self.json:
            sys.stdout.flush()
            self.saved_fd, self.saved_stdout = os.dup(1), sys.stdout
            os.dup2(2, 1)
            sys.stdout = sys.stderr

    def stop(self) -> None:
        if self.handler is not None:
            logging.getLogger().removeHandler(self.handler)
            logging.captureWarnings(False)
            for name, level in self.levels.items():
                logging.getLogger(name).setLevel(level)
            self.handler = None
        if self.saved_fd is not None and not self.program:
            sys.stdout.flush()
            os.dup2(self.saved_fd, 1)
            os.close(self.saved_fd)
            sys.stdout, self.saved_fd = self.saved_stdout, None

    def emit_json(self, data: dict) -> None:
        """The command's one JSON document, on the real stdout."""
        text = json.dumps(data, indent=2, allow_nan=False) + "\n"
        self.emitted = True
        if self.saved_fd is not None and self.program:
            sys.stdout.flush()  # what is buffered goes to stderr first
            payload = text.encode()
            while payload:
                payload = payload[os.write(self.saved_fd, payload):]
        elif self.saved_fd is not None:
            self.stop()
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            sys.stdout.write(text)
            sys.stdout.flush()

    def fail(self, message: str, code: int) -> int:
        """One line on stderr (and with --json the document on stdout); the exit code. Whatever the
        message quotes (a 1 MB key, a name with a newline), it stays one line of bounded length."""
        self.stop()
        message = clean(message, MAX_MESSAGE)
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
        if self.json and not self.emitted:
            data = {"error": message, "exit_code": code}
            if self.run_dir is not None:
                data["run_dir"] = str(self.run_dir)
            self.emit_json(data)
        return code


def _wants_json(argv: list[str]) -> bool:
    """--json (or an abbreviation argparse accepts) before a bare "--": known before parsing succeeds."""
    for a in argv:
        if a == "--":
            return False
        if a.startswith("--j") and "--json".startswith(a):
            return True
    return False


USAGE = f"""{PROG} [run] [options]        tune, then full-length runs (the options below)
       {PROG} COMMAND [options]      a subcommand (below); {PROG} COMMAND --help for its options"""


def _parser() -> argparse.ArgumentParser:
    """`lodo-tune`: the run's options (the command without a subcommand) and the subcommands, each
    parser with its entry point as the `entry` default, `entry(args, out)` returning the exit code."""
    top = _run_parser(PROG, functools.partial(_Parser, usage=USAGE))
    top.set_defaults(entry=_run_command)
    sub = top.add_subparsers(dest="command", title="commands (without one: run)", metavar="COMMAND",
                             parser_class=_Parser)

    def command(name: str, summary: str):
        return functools.partial(sub.add_parser, name, help=summary)

    _run_parser(f"{PROG} run", command("run", "tune, then full-length runs (the default; the options above)"))\
        .set_defaults(entry=_run_command)
    _run_parser(f"{PROG} demo", command("demo", "a short tune + compare of Adam, Momentum and LODO"))\
        .set_defaults(entry=_demo, task="noisy_bowl", optimizers=",".join(DEMO_OPTIMIZERS))
    _export_parser(command("export", "print a run directory's tables")).set_defaults(entry=_export)
    _report_parser(command("report", "report.md for a run; comparison.md for several")).set_defaults(entry=_report)
    _init_schedule_parser(command("init-schedule", "write a commented schedule for your own task"))\
        .set_defaults(entry=_init_schedule_command)
    meta_train.configure_parser(_verbose(command("meta-train", "meta-train the L2LBGDBGD LSTM optimizer")(
        prog=f"{PROG} meta-train", description="Meta-train the L2LBGDBGD LSTM optimizer."))
    ).set_defaults(entry=_meta_train)
    return top


def _run_command(args, out: _Output) -> int:
    out.start(quiet=args.quiet, verbose=args.verbose)
    return _run(args, out)


def _demo(args, out: _Output) -> int:
    if args.run_dir is None and args.resume is None:
        args.run_dir = str(Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}")
    out.start(quiet=args.quiet, verbose=args.verbose)
    return _run(args, out, demo_schedule() if args.resume is None else None)


def _export(args, out: _Output) -> int:
    out.start(verbose=args.verbose)
    try:
        sys.stdout.write(export(args.run_dir, args.format))
    except ValueError as e:  # not a run directory
        raise UsageError(f"export: {e}") from None
    return 0


def _report(args, out: _Output) -> int:
    out.start(verbose=args.verbose)
    try:
        if len(args.run_dirs) == 1:
            print(report.write_report(args.run_dirs[0], args.out))
        else:
            print(compare.write_comparison(args.run_dirs, args.out))
    except RunDirLocked as e:  # a session runs on it: its report.md is the session's to write
        raise UsageError(f"report: {e} (or write the report elsewhere: --out DIR)") from None
    except ValueError as e:  # a missing or invalid run directory, runs of different tasks
        raise UsageError(f"report: {e}") from None
    return 0


def _init_schedule_command(args, out: _Output) -> int:
    out.start()
    return _init_schedule(args.path, args.task, args.pilot_steps)


def _meta_train(args, out: _Output) -> int:
    out.start(verbose=args.verbose)
    try:
        return meta_train.run_from_args(args)
    except ValueError as e:  # invalid meta-training settings name their field
        raise UsageError(str(e)) from None


def _command(argv: list[str], out: _Output) -> int:
    args = _parser().parse_args(argv)
    if args.command is not None and argv[0] != args.command:  # the run's options, then a subcommand
        raise UsageError(f"{argv[0]}: not allowed before the command {args.command!r} (options go after it)")
    return args.entry(args, out)


def main(argv=None) -> int:
    """The command line; returns the exit code (EXIT_CODES). Without `argv` it is the program itself
    (sys.argv): with --json, stdout then stays redirected to stderr after the JSON document."""
    program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    out = _Output(_wants_json(argv), program)
    try:
        code = _command(argv, out)
        out.stop()
        return code
    except UsageError as e:
        return out.fail(str(e), BAD_INPUT)
    except _PERSISTENT_FAILURES as e:
        where = f"; {PROG} --resume {out.run_dir} continues it" if out.run_dir is not None else ""
        return out.fail(f"{e} (what finished is saved{where})", PERSISTENT_FAILURE)
    except KeyboardInterrupt:
        started = out.run_dir is not None and (Path(out.run_dir) / "manifest.json").is_file()
        where = f"; {PROG} --resume {out.run_dir} continues it" if started else ""
        return out.fail(f"interrupted (every finished record is on disk{where})" if started else
                        "interrupted before the run started (nothing was written)", INTERRUPTED)
    except SystemExit as e:  # --help
        out.stop()
        return int(e.code or 0)
    except Exception as e:
        if not out.json:
            out.stop()
            raise
        out.stop()
        traceback.print_exc()
        return out.fail(f"internal error: {type(e).__name__}: {e}", 1)


if __name__ == "__main__":
    sys.exit(main())
