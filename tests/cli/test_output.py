"""Output a script can trust (issue 18): --json is one JSON document whatever Ray or a task prints,
--quiet leaves stderr empty, library code logs through module loggers, exit codes, and the run log."""
import ast
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import lodo
import yaml

from cli import main
from tuner.driver.rundir import RunLog
from tuner.driver.schedule import load_schedule, merge

from conftest import kill_9_when

ROOT = Path(__file__).resolve().parents[2]
TINY = {"task": "noisy_bowl", "population": 4, "generations": [{"noise": 3, "steps": 200}] * 2,
        "optimizers": ["Adam"], "full_run": {"steps": 200, "seeds": 1, "time_milestone_s": None}, "lr_scale": 1}


def _schedule(tmp_path, **changes) -> str:
    p = tmp_path / "schedule.yaml"
    p.write_text(yaml.safe_dump({**TINY, **changes}))
    return str(p)


def _env(own_ray: bool = True, **extra) -> dict:
    """The CLI's environment: starting a Ray of its own as a user's shell would (no RAY_AUTH_MODE), or
    joining the tests' Ray (`own_ray=False`: its token settings)."""
    env = {k: v for k, v in os.environ.items() if not own_ray or k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    return {**env, "PYTHONPATH": os.pathsep.join([str(ROOT), *extra.pop("path", [])]), **extra}


def _events(run_dir: Path) -> list[str]:
    return [e["event"] for e in RunLog(run_dir / "log.jsonl").read()]


# -- --json: one document whatever Ray prints -----------------------------------------------------
def _trial_workers(marker: str) -> list[int]:
    """PIDs of this run's trial actors (their environment carries `marker`; other runs' do not)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "cmdline").read_bytes().startswith(b"ray::TrialWorker") \
                    and marker.encode() in (d / "environ").read_bytes():
                pids.append(int(d.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow  # end to end through Ray or a CLI subprocess: `make test-slow`
def test_json_is_one_document_when_a_ray_worker_is_killed_mid_run(tmp_path):
    marker = f"LODO_TEST_RUN={uuid.uuid4().hex}"
    rd = tmp_path / "run"
    schedule = _schedule(tmp_path, generations=[{"noise": 3, "steps": 3000}] * 3)
    proc = subprocess.Popen([sys.executable, "-m", "cli", "--task", "noisy_bowl", "--schedule", schedule,
                             "--workers", "2", "--run-dir", str(rd), "--json"], cwd=ROOT,
                            env=_env(LODO_TEST_RUN=marker.split("=")[1]), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline, killed = time.time() + 180, None
        while killed is None and time.time() < deadline and proc.poll() is None:
            if "machine" in _events(rd) and list((rd / "tuning").rglob("g*-i*.json")):  # trials under way
                pids = _trial_workers(marker)
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed = pids[0]
            time.sleep(0.05)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert killed is not None, "no trial worker was found to kill"
    assert proc.returncode == 0, err
    data = json.loads(out)  # the whole of stdout: one document
    assert data["run_dir"] == str(rd) and data["ran"] == 12 and data["log"] == str(rd / "log.jsonl")
    retries = [e for e in RunLog(rd / "log.jsonl").read() if e["event"] == "retry"]
    summary = json.loads((rd / "summary.json").read_text())
    assert summary["resubmitted"] >= 1 and len(retries) >= 1
    job = retries[0]["job"][1] if retries[0]["job"][0] == "batch" else retries[0]["job"]  # a batch: its first lane
    assert job[:2] == ["tuning", "Adam"] and retries[0]["attempt"] == 2 and retries[0]["cause"]
    assert "worker lost while running Adam generation" in err  # the one line a user sees for it


_PRINTING_TASK = '''
import os
import tasks.noisy_bowl as nb

def patch():
    """The task prints in sample() and loss(), through Python and through file descriptor 1."""
    loss, sample = nb.NoisyBowl.loss, nb.NoisyBowl.sample

    def printing_loss(self, batch):
        print("from loss()", flush=True)
        return loss(self, batch)

    def printing_sample(self):
        os.write(1, b"from sample() on fd 1\\n")
        return sample(self)

    nb.NoisyBowl.loss, nb.NoisyBowl.sample = printing_loss, printing_sample
'''

_DRIVER = '''
import os, subprocess, sys
import ray
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=True,   # a user's Ray: workers' prints reach here
         runtime_env={"worker_process_setup_hook": "printing_task.patch"})
import printing_task
printing_task.patch()   # and in the driver
import cli
from tuner.driver.session import Session

on_result = Session.on_result

def chatty_on_result(self, job, result):   # driver-side code printing while the run goes on
    print("driver print", flush=True)
    os.write(1, b"driver fd 1\\n")
    subprocess.run(["echo", "child process echo"])
    return on_result(self, job, result)

Session.on_result = chatty_on_result
sys.argv = ["lodo-tune", *sys.argv[1:]]
sys.exit(cli.main())
'''


@pytest.mark.slow  # end to end through Ray or a CLI subprocess: `make test-slow`
def test_json_is_one_document_when_the_task_and_the_driver_print(tmp_path):
    (tmp_path / "printing_task.py").write_text(_PRINTING_TASK)
    rd = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", _DRIVER, "--task", "noisy_bowl", "--schedule", _schedule(tmp_path),
                           "--workers", "2", "--run-dir", str(rd), "--json", "--no-batch"], cwd=ROOT,  # NoisyBowl's own loss()
                          env=_env(path=[str(tmp_path)]), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["ran"] == 8 and data["full_ran"] == 1
    for text in ("driver print", "driver fd 1", "child process echo", "from loss()", "from sample() on fd 1"):
        assert text in proc.stderr, text  # printed, and sent to stderr


def test_json_on_bad_input_is_a_document_with_the_error_and_the_exit_code(tmp_path, capsys):
    assert main(["--task", "noisy_bowll", "--json", "--run-dir", str(tmp_path / "r")]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"error": "--task: unknown task 'noisy_bowll' (valid: noisy_bowl, "
                                                 "rosenbrock, image_generation, resnet18_cifar10; or "
                                                 '"package.module:Name" or "path/to/file.py:Name")', "exit_code": 2}
    assert captured.err.startswith("lodo-tune: error: --task: unknown task") and captured.err.count("\n") == 1


# -- --quiet ---------------------------------------------------------------------------------------
@pytest.mark.slow  # end to end through Ray or a CLI subprocess: `make test-slow`
def test_quiet_successful_run_writes_nothing_on_stderr_or_stdout(tmp_path):
    # A Ray of its own, as a user's shell would start it: the tests' shared Ray broadcasts the
    # deaths of workers that other tests killed on purpose to every driver that joins it.
    rd = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "cli", "--task", "noisy_bowl", "--schedule", _schedule(tmp_path),
                           "--workers", "2", "--run-dir", str(rd), "--quiet"], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("", "")
    assert (rd / "summary.json").is_file() and _events(rd)[-1] == "end"


# -- exit codes ------------------------------------------------------------------------------------
def test_help_documents_the_exit_codes(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for line in ("0    done", "2    bad input", "3    stopped by a persistent failure", "130  interrupted"):
        assert line in out


def test_ctrl_c_exits_130_with_one_line_the_records_kept_and_the_log_says_so(ray_session, tmp_path, capsys,
                                                                           monkeypatch):
    from tuner.driver.session import Session

    rd, on_result, seen = tmp_path / "run", Session.on_result, []

    def interrupted_on_result(self, job, result):
        jobs = on_result(self, job, result)
        seen.append(job.key)
        if len(seen) == 3:
            raise KeyboardInterrupt
        return jobs

    monkeypatch.setattr(Session, "on_result", interrupted_on_result)
    argv = ["--task", "noisy_bowl", "--schedule", _schedule(tmp_path), "--workers", "2", "--address", ray_session,
            "--no-batch"]  # one record per result, so the third result is the third record
    assert main([*argv, "--run-dir", str(rd), "--json"]) == 130
    captured = capsys.readouterr()
    assert captured.err == f"lodo-tune: error: interrupted (every finished record is on disk; lodo-tune --resume " \
                           f"{rd} continues it)\n"
    assert json.loads(captured.out)["exit_code"] == 130
    assert len(list((rd / "tuning").rglob("g*-i*.json"))) == 3 and _events(rd)[-1] == "interrupted"

    monkeypatch.setattr(Session, "on_result", on_result)
    assert main(["--resume", str(rd), "--address", ray_session, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["reused"], data["ran"]) == (3, 5)


# -- logging ---------------------------------------------------------------------------------------
def _prints(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inside = {id(c): f.name for f in funcs for c in ast.walk(f)}
    return [inside.get(id(n), "<module>") for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]


def test_library_code_prints_nothing_and_configures_no_logging_handlers():
    import lodo, tasks, tuner  # noqa: E401,F401

    printing = {str(p.relative_to(ROOT)): _prints(p) for pkg in ("lodo", "tasks", "tuner")
                for p in (ROOT / pkg).rglob("*.py")}
    printing = {path: funcs for path, funcs in printing.items() if funcs}
    # meta-train's own command output (`lodo-tune meta-train` prints the checkpoint it wrote)
    assert printing == {"lodo/meta_train.py": ["run_from_args"]}
    for pkg in ("lodo", "tasks", "tuner"):
        assert all(isinstance(h, logging.NullHandler) for h in logging.getLogger(pkg).handlers)
    for path in ("tuner/driver/executor.py", "tuner/driver/session.py", "tuner/driver/api.py", "tasks/datasets.py", "lodo/registry.py"):
        assert "logger = logging.getLogger(__name__)" in (ROOT / path).read_text(), path


def test_a_trial_that_raises_is_a_warning_of_the_session_logger_and_a_run_log_line(ray_session, tmp_path, caplog,
                                                                                  monkeypatch):
    import tuner

    plan = sys.modules[tuner.make_plan.__module__]  # the pre-flight as make_plan calls it, wherever it lives
    monkeypatch.setattr(plan.preflight, "check", lambda *args, **kwargs: None)  # it refuses this before any trial
    caplog.set_level(logging.INFO, logger="tuner")
    rd = tmp_path / "run"
    # values in their domain that torch's SGD still refuses when built (Nesterov needs a momentum):
    # out-of-domain values (lr -1) are refused before the run
    nesterov = {"name": "SGD-Nesterov", "optimizer": "torch.optim.SGD", "fixed": {"nesterov": True},
                "hyperparameters": {"lr": {"default": 0.1, "scale": "log"}, "momentum": {"default": 0.5, "scale": "decay"}}}
    schedule = tuner.Schedule.from_dict(merge(load_schedule("noisy_bowl").to_dict(), {"optimizers": [nesterov]}))
    try:
        tuner.evaluate("noisy_bowl", {"SGD-Nesterov": {"lr": 0.1, "momentum": 0.0}}, steps=50, seeds=1, run_dir=rd,
                       schedule=schedule, resources=tuner.Resources(workers=1, address=ray_session))
    finally:  # run_plan registers the schedule's optimizers in this process: leave the registry as it was
        if lodo.registry.registered("SGD-Nesterov"):
            lodo.registry.unregister("SGD-Nesterov")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.name for r in warnings] == ["tuner.driver.session"] and "SGD-Nesterov full-seed-0 raised" in warnings[0].getMessage()
    errors = [e for e in RunLog(rd / "log.jsonl").read() if e["event"] == "trial_error"]
    assert errors[0]["traceback"] == "errors/SGD-Nesterov/full-seed-0.txt" and "momentum" in errors[0]["error"]
    assert _events(rd) == ["start", "machine", "trial_error", "full_run", "failed", "end"]  # its only full run raised


# -- the run log -----------------------------------------------------------------------------------
def test_run_log_lines_are_appended_whole_and_a_torn_line_is_skipped(tmp_path):
    log = RunLog(tmp_path / "log.jsonl")
    log.write("start", best=float("inf"), args={"a": [1.5, float("nan")]})
    first = log.path.read_bytes()
    with open(log.path, "ab") as f:
        f.write(b'{"time": "x", "event": "to')  # a line torn by a crash
    log.write("resume")
    assert log.path.read_bytes().startswith(first)
    events = log.read()
    assert [e["event"] for e in events] == ["start", "resume"]
    assert events[0]["best"] is None and events[0]["args"] == {"a": [1.5, None]}
    assert all(json.loads(line)["time"].endswith("+00:00") for line in first.decode().splitlines())


@pytest.mark.slow  # end to end through Ray or a CLI subprocess: `make test-slow`
def test_a_run_killed_with_kill_9_and_resumed_has_one_log_telling_both_parts_in_order(ray_session, tmp_path):
    rd = tmp_path / "run"
    schedule = _schedule(tmp_path, generations=[{"noise": 3, "steps": 2000}] * 3)
    common = ["--address", ray_session, "--quiet"]
    kill_9_when(["--task", "noisy_bowl", "--schedule", schedule, "--workers", "2", "--run-dir", str(rd), *common],
                lambda: "generation" in _events(rd), env=_env(False), timeout=120)
    before = (rd / "log.jsonl").read_bytes()
    done = len(list((rd / "tuning").rglob("g*-i*.json")))
    assert 4 <= done < 12

    resumed = subprocess.run([sys.executable, "-m", "cli", "--resume", str(rd), *common], cwd=ROOT, env=_env(False),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert (rd / "log.jsonl").read_bytes().startswith(before)  # appended, nothing rewritten
    log = RunLog(rd / "log.jsonl").read()
    events = [e["event"] for e in log]
    first, second = events[:events.index("resume")], events[events.index("resume"):]
    assert first[:2] == ["start", "machine"] and "generation" in first and "end" not in first
    assert second[:3] == ["resume", "machine", "resumed"] and second[-1] == "end"
    assert log[events.index("resumed")]["tuning"] == done
    generations = [e["generation"] for e in log if e["event"] == "generation"]
    assert generations == [0, 1, 2]  # each generation once, in order, across both parts
    times = [e["time"] for e in log]
    assert times == sorted(times)
