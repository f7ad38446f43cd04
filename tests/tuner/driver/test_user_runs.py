"""A user's own task through the whole tuner (issue 13): `lodo-tune --task file.py:Name` and
`module:Name`, `tuner.run(TaskClass)`, resume, export and report, with a schedule that mixes LODO,
a registry optimizer and a torch optimizer declared as a mapping; `init-schedule`; and every bad
input of a user task as one line, exit 2, before anything is written."""
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import yaml

from cli import main
from tuner.driver.schedule import load_schedule

from conftest import LINEAR_FIT_TASK, kill_9_when

ROOT = Path(__file__).resolve().parents[3]

# A module the project has never seen: a hand-written Task with held-out data, and bad entries.
USER_MODULE = LINEAR_FIT_TASK + textwrap.dedent('''
    class NotATask:
        def __init__(self, seed=0, device="cpu"):
            pass

    def returns_a_list(seed=0, device="cpu"):
        return [seed]

    def raises(seed=0, device="cpu"):
        raise RuntimeError("no data here")
''')

ADAMW = {"name": "AdamW", "optimizer": "torch.optim.AdamW",
         "hyperparameters": {"lr": {"default": 0.05, "scale": "log"}, "betas.0": {"default": 0.9, "scale": "decay"}},
         "fixed": {"eps": 1.0e-8}}
SCHEDULE = {"population": 3, "generations": [{"noise": 1, "steps": 60}, {"noise": 0.5, "steps": 80}],
            "optimizers": ["LODO", "Adam", ADAMW], "full_run": {"steps": 100, "seeds": 2, "time_milestone_s": None},
            "lr_scale": 1}
TUNING_RECORDS = 3 * 3 * 2  # optimizers × population × generations


@pytest.fixture
def user(tmp_path):
    """A fresh module (unique name) in a folder of its own, not the working directory of anything."""
    name = f"usermod_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "mycode"
    folder.mkdir()
    (folder / f"{name}.py").write_text(USER_MODULE)
    yield folder / f"{name}.py"
    sys.modules.pop(name, None)


def _schedule(tmp_path, **changes) -> str:
    path = tmp_path / f"schedule-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump({**SCHEDULE, **changes}, sort_keys=False))
    return str(path)


def _cli(*args, cwd=ROOT, pythonpath=(), timeout=300, check=True):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *map(str, pythonpath)])}
    done = subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def _tuned(rd: Path) -> dict:
    return json.loads((rd / "tuned.json").read_text())["hyperparameters"]


def _records(rd: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in (rd / "tuning").rglob("g*-i*.json")}


# -- end to end ------------------------------------------------------------------------------------
def test_a_file_task_goes_through_tuning_full_runs_export_report_and_resume(ray_session, user, tmp_path):
    """`--task /abs/path/file.py:Name` from another working directory: Ray workers import the file
    through the job's runtime_env (py_modules), not through a shared working directory."""
    rd = tmp_path / "run"
    out = _cli("--task", f"{user}:LinearFit", "--schedule", _schedule(tmp_path), "--workers", "2",
               "--address", ray_session, "--run-dir", str(rd), "--json")
    data = json.loads(out.stdout)
    manifest = json.loads((rd / "manifest.json").read_text())
    assert manifest["task"] == "linear_fit" and manifest["task_source"] == f"{user.resolve()}:LinearFit"
    assert manifest["optimizers"] == ["LODO", "Adam", "AdamW"] and manifest["schedule"]["optimizers"][2] == ADAMW
    assert (data["ran"], data["errors"], data["full_ran"]) == (TUNING_RECORDS, 0, 6)
    assert set(data["tuned"]) == {"LODO", "Adam", "AdamW"}
    assert set(data["tuned"]["AdamW"]["hyperparameters"]) == {"lr", "betas.0"}
    for opt in ("LODO", "Adam", "AdamW"):
        records = [json.loads(p.read_text()) for p in sorted((rd / "full" / opt).glob("seed-*.json"))]
        assert [r["evaluations"] for r in records] == [100, 100]
        assert all(set(r["held_out"]) == {"distance"} for r in records)  # the task's evaluate(), per run
        assert data["results"][opt]["held_out"]["distance"] >= 0
    markdown = _cli("export", str(rd)).stdout
    assert "linear_fit" in markdown and "held-out distance" in markdown and "AdamW" in markdown
    csv = _cli("export", str(rd), "--format", "csv").stdout
    assert "held_out_distance" in csv
    report = (rd / "report.md").read_text()  # written by the run
    assert "The paper has no results table for linear_fit." in report and "paper (Table 6)" not in report
    assert "held-out distance" in report

    # An interruption leaves some records: --resume rebuilds the task from the manifest's source
    # and re-runs only what is missing, to the same values.
    tuned, full = _tuned(rd), data["results"]
    for p in sorted((rd / "tuning").rglob("g01-i0[12].json")) + list((rd / "full").rglob("seed-1.json")):
        p.unlink()
    (rd / "tuned.json").unlink()
    resumed = json.loads(_cli("--resume", str(rd), "--address", ray_session, "--json").stdout)
    assert (resumed["ran"], resumed["reused"], resumed["full_ran"]) == (6, TUNING_RECORDS - 6, 3)
    assert _tuned(rd) == tuned  # exact float equality
    assert {o: r["final_loss_mean"] for o, r in resumed["results"].items()} == \
        {o: r["final_loss_mean"] for o, r in full.items()}


def _script(body: str) -> str:
    return textwrap.dedent(body)


@pytest.mark.slow  # end to end through Ray or a CLI subprocess: `make test-slow`
def test_tuner_run_takes_the_task_class_and_resumes_with_it(ray_session, user, tmp_path):
    """`tuner.run(TaskClass, ...)` in a script of the user's, resumed by a second script passing the
    class again; the manifest records the class as "module:Name" (rebuilt by a resume without it)."""
    rd, schedule = tmp_path / "api", _schedule(tmp_path, full_run={"steps": 60, "seeds": 1, "time_milestone_s": None})
    script = tmp_path / "mine.py"
    script.write_text(_script(f'''
        import json, sys
        sys.path.insert(0, {str(user.parent)!r})
        import tuner
        from {user.stem} import LinearFit
        result = tuner.run(LinearFit, schedule={schedule!r}, run_dir={str(rd)!r}, resume=len(sys.argv) > 1,
                           resources=tuner.Resources(workers=2, address={ray_session!r}))
        print(json.dumps({{"task": result.task, "ran": result.ran, "reused": result.reused,
                          "tuned": result.hyperparameters}}))
    '''))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = lambda *a: subprocess.run([sys.executable, str(script), *a], cwd=tmp_path, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    first = run()
    assert first.returncode == 0, first.stderr[-3000:]
    first = json.loads(first.stdout.splitlines()[-1])
    assert first["task"] == "linear_fit" and first["ran"] == TUNING_RECORDS
    assert json.loads((rd / "manifest.json").read_text())["task_source"] == f"{user.stem}:LinearFit"  # importable

    for p in (rd / "tuning").rglob("g01-*.json"):
        p.unlink()
    (rd / "tuned.json").unlink()
    second = run("resume")
    assert second.returncode == 0, second.stderr[-3000:]
    second = json.loads(second.stdout.splitlines()[-1])
    assert (second["ran"], second["reused"]) == (9, 9) and second["tuned"] == first["tuned"]


@pytest.mark.slow  # ~1 min: three drivers (killed, resumed, straight) on the shared Ray
def test_a_module_task_killed_mid_tuning_resumes_to_the_same_tuned_values(ray_session, user, tmp_path):
    """`--task package.module:Name` (the package shipped to the workers as py_modules), kill -9 of
    the driver mid-tuning, `--resume DIR`: the tuned values equal an uninterrupted run's."""
    package = tmp_path / "pkgroot" / f"userpkg_{uuid.uuid4().hex[:6]}"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "mytasks.py").write_text(USER_MODULE)
    spec = f"{package.name}.mytasks:LinearFit"
    schedule = _schedule(tmp_path, generations=[{"noise": 1, "steps": 1500}] * 3, population=4,
                         full_run={"steps": 100, "seeds": 1, "time_milestone_s": None})
    common = ["--task", spec, "--schedule", schedule, "--workers", "2", "--seed", "3", "--address", ray_session]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(package.parent)])}
    rd = tmp_path / "killed"
    kill_9_when([*common, "--quiet", "--run-dir", str(rd)],
                lambda: (rd / "tuning").exists() and len(_records(rd)) >= 8, env=env, timeout=180)
    before = _records(rd)
    assert 8 <= len(before) < 36 and not (rd / "tuned.json").exists()

    resumed = json.loads(_cli("--resume", str(rd), "--address", ray_session, "--json", pythonpath=[package.parent]).stdout)
    assert resumed["reused"] == len(before) and resumed["ran"] == 36 - len(before)
    assert {p: m for p, m in _records(rd).items() if p in before} == before  # no finished record rewritten
    _cli(*common, "--quiet", "--run-dir", str(tmp_path / "straight"), pythonpath=[package.parent])
    assert _tuned(rd) == _tuned(tmp_path / "straight")  # bit-identical


# -- init-schedule -----------------------------------------------------------------------------------
def test_init_schedule_writes_a_template_that_loads_and_never_overwrites(tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    assert main(["init-schedule", str(path)]) == 0
    assert str(path) in capsys.readouterr().out
    schedule = load_schedule(path)
    assert schedule.task is None and "AdamW" in schedule.optimizer_specs
    path.write_text("mine")
    assert main(["init-schedule", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"lodo-tune: error: init-schedule: {str(path)!r} exists (not overwritten; give another path)\n"
    assert path.read_text() == "mine"


# -- bad input: one line, exit 2, before any trial starts, nothing written ---------------------------
def _spec_with(**changes) -> dict:
    spec = json.loads(json.dumps(ADAMW))
    for key, value in changes.items():
        node, *path = key.split("/")
        target = spec
        for part in [node, *path][:-1]:
            target = target[part]
        target[([node, *path])[-1]] = value
    return spec


BAD = {  # case: (task, schedule changes or None for no --schedule, extra flags, expected in the line)
    "module not found": ("no_such_module_xyz:Task", {}, [], "--task: Invalid task: 'no_such_module_xyz:Task': "
                                                         "module 'no_such_module_xyz' not found"),
    "file not found": ("missing/file.py:Task", {}, [], "--task: Invalid task: 'missing/file.py:Task': "
                                                   "file 'missing/file.py' not found"),
    "name missing": ("{file}:Nope", {}, [], "'Nope' not found in"),
    "not a task": ("{file}:NotATask", {}, [], "NotATask is a class but not a tasks.Task subclass"),
    "factory returns no task": ("{file}:returns_a_list", {}, [], "--task: Invalid task: "),
    "factory raises": ("{file}:raises", {}, [], "failed (RuntimeError: no data here)"),
    "no schedule": ("{file}:LinearFit", None, [], "--schedule: required for task 'linear_fit' (a user task has no "
                                                  "bundled schedule; `lodo-tune init-schedule` writes a template"),
    "schedule of another task": ("{file}:LinearFit", {"task": "other"}, [], "task: 'other' is not allowed"),
    "unknown task option": ("{file}:LinearFit", {"task_options": {"dimm": 2}}, [],
                            "--schedule: task_options.dimm: not an option of task 'linear_fit' (valid: dim)"),
    "paper hparams": ("{file}:LinearFit", {}, ["--hparams", "paper"], "--hparams: 'paper' is only for the paper's tasks"),
    "optimizer does not resolve": ("{file}:LinearFit", {"optimizers": [_spec_with(optimizer="torch.optim.Nope")]}, [],
                                   "optimizers[0].optimizer: 'torch.optim.Nope' is not allowed (does not resolve"),
    "not an optimizer": ("{file}:LinearFit", {"optimizers": [_spec_with(optimizer="torch.nn.Linear")]}, [],
                         "must be a torch.optim.Optimizer subclass or a factory"),
    "hyperparameter not accepted": ("{file}:LinearFit", {"optimizers": [_spec_with(
        hyperparameters={"lrr": {"default": 0.1, "scale": "log"}})]}, [], "optimizers[0].hyperparameters.lrr: "),
    "fixed argument not accepted": ("{file}:LinearFit", {"optimizers": [_spec_with(fixed={"epss": 1e-8})]}, [],
                                    "optimizers[0].fixed.epss: 'epss' is not allowed (not an argument of AdamW"),
    "log default <= 0": ("{file}:LinearFit", {"optimizers": [_spec_with(**{"hyperparameters/lr/default": -1})]}, [],
                         "optimizers[0].hyperparameters.lr.default: -1 is not allowed (must be > 0 for scale log)"),
    "decay default 1": ("{file}:LinearFit", {"optimizers": [_spec_with(**{"hyperparameters/betas.0/default": 1.0})]},
                        [], "hyperparameters.betas.0.default: 1.0 is not allowed (must be in [0, 1) for scale decay)"),
    "unknown scale": ("{file}:LinearFit", {"optimizers": [_spec_with(**{"hyperparameters/lr/scale": "linear"})]}, [],
                      "hyperparameters.lr.scale: 'linear' is not allowed (must be one of: log, decay)"),
    "duplicate name": ("{file}:LinearFit", {"optimizers": ["Adam", ADAMW, ADAMW]}, [],
                       "optimizers[2].name: 'AdamW' is not allowed (must not repeat an optimizer)"),
    "registry name taken": ("{file}:LinearFit", {"optimizers": [_spec_with(name="Adam")]}, [],
                            "optimizers[0].name: 'Adam' is not allowed (must not be a registry optimizer's name"),
    "unknown --optimizers": ("{file}:LinearFit", {}, ["--optimizers", "AdamW,AdamX"],
                             "--optimizers: unknown optimizer 'AdamX' (valid: "),
}


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_user_input_is_one_line_exit_2_and_nothing_is_written(case, user, tmp_path, capsys):
    task, changes, flags, expected = BAD[case]
    argv = ["--task", task.format(file=user)] + flags
    if changes is not None:
        argv += ["--schedule", _schedule(tmp_path, **changes)]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert main(argv + ["--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lodo-tune: error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert not (tmp_path / "run").exists() and sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_the_schedule_optimizers_are_accepted_by_optimizers_and_hparams(user, tmp_path, capsys):
    """`--optimizers` and `--hparams FILE` know the schedule's own optimizers (checked, not run here)."""
    hp = tmp_path / "hp.yaml"
    hp.write_text("AdamW: {lr: 0.01, betas.1: 0.9}\n")
    argv = ["--task", f"{user}:LinearFit", "--schedule", _schedule(tmp_path), "--run-dir", str(tmp_path / "run")]
    assert main(argv + ["--hparams", str(hp)]) == 2
    assert "--hparams: unknown hyperparameter 'betas.1' for AdamW (valid: lr, betas.0)" in capsys.readouterr().err
    from tuner.driver.plan import make_plan

    plan = make_plan(f"{user}:LinearFit", schedule=_schedule(tmp_path), optimizers=["AdamW", "LODO"],
                     hyperparameters={"AdamW": {"lr": 0.01}, "LODO": {"lr": 1.0}}, run_dir=tmp_path / "run")
    assert plan.task == "linear_fit" and plan.optimizers == ("AdamW", "LODO") and plan.spec.builtin is False
    assert not (tmp_path / "run").exists()


def test_the_digits_example_runs_with_the_readme_command_on_its_tiny_schedule(ray_session, tmp_path):
    """README "Tune your own model": the same command with the example's tiny schedule."""
    pytest.importorskip("sklearn")
    rd = tmp_path / "digits"
    data = json.loads(_cli("--task", "examples/digits/digits.py:digits", "--schedule", "examples/digits/tiny.yaml",
                           "--address", ray_session, "--workers", "2", "--run-dir", str(rd), "--json").stdout)
    assert data["task"] == "digits" and data["errors"] == 0 and set(data["results"]) == {"LODO", "Adam", "AdamW"}
    assert all(set(r["held_out"]) == {"test_loss", "test_accuracy"} for r in data["results"].values())
    assert (rd / "report.md").is_file()
