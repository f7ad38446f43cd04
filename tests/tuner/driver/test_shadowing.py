"""User files never shadow the project (issue 37): a task file in a folder that also holds its own
`tasks.py`, `tuner.py`, `lodo.py`, `cli.py` and `schedules/` (invoke, Celery and many projects have
one) runs, in the driver and in the Ray workers, and a task file named like one of ours is exit 2."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import tasks

from conftest import LINEAR_FIT_TASK

LODO_TUNE = Path(sys.executable).parent / "lodo-tune"  # the console script, as users start it
SHADOW = "raise SystemExit('the user folder shadowed lodo-tune')\n"


@pytest.fixture
def folder(tmp_path):
    """A project folder: the user's task file beside modules named like ours, and a data file it reads."""
    (tmp_path / "mine.py").write_text(LINEAR_FIT_TASK.replace(
        "super().__init__(seed=seed, device=device)",
        "super().__init__(seed=seed, device=device)\n        assert open('data.txt').read() == 'here'"))
    (tmp_path / "data.txt").write_text("here")  # relative paths keep meaning the driver's folder
    for name in ("tasks.py", "tuner.py", "lodo.py", "cli.py"):
        (tmp_path / name).write_text(SHADOW)
    (tmp_path / "schedules").mkdir()
    (tmp_path / "schedules" / "__init__.py").write_text(SHADOW)
    (tmp_path / "schedule.yaml").write_text(yaml.safe_dump({
        "population": 2, "generations": [{"noise": 1, "steps": 5}], "optimizers": ["Adam"],
        "full_run": {"steps": 5, "seeds": 1, "time_milestone_s": None}, "lr_scale": 1}))
    yield tmp_path
    sys.modules.pop("mine", None)


@pytest.mark.skipif(not LODO_TUNE.exists(), reason="lodo-tune is not installed in this environment")
def test_a_task_beside_a_tasks_py_runs_in_the_driver_and_the_workers(ray_session, folder):
    done = subprocess.run([str(LODO_TUNE), "--task", "mine.py:LinearFit", "--schedule", "schedule.yaml",
                           "--address", ray_session, "--workers", "1", "--run-dir", "run", "--json"],
                          cwd=folder, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(done.stdout)
    assert (data["ran"], data["errors"], data["full_ran"]) == (2, 0, 1)
    assert data["results"]["Adam"]["held_out"]["distance"] >= 0  # the worker's full run evaluated it


@pytest.mark.parametrize("name", ["tasks", "tuner", "lodo", "cli", "schedules"])
def test_a_task_file_named_like_ours_is_refused_naming_the_clash(tmp_path, name):
    (tmp_path / f"{name}.py").write_text(LINEAR_FIT_TASK)
    with pytest.raises(ValueError, match=rf"its module name '{name}' is lodo-tune's own .*rename the file"):
        tasks.resolve(f"{tmp_path}/{name}.py:LinearFit")
    assert sys.modules.get(name) is None or getattr(sys.modules[name], "__file__", "") != str(tmp_path / f"{name}.py")
