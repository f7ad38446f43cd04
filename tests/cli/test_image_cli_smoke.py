"""CPU smoke of the image tasks through the CLI: tiny dataset files in the real formats (IDX gz,
cifar-10-python.tar.gz) in a temp --data-dir, a tiny schedule whose `task_options` set a small
batch, tuning and full runs end to end on Ray, offline (LODO_OFFLINE=1: a missing file is an
error, never a download)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from cli import main
from tasks import datasets
from conftest import md5_of, write_tiny_cifar10, write_tiny_mnist

SCHEDULE = """task: {task}
population: 2
generations:
  - {{noise: 1, steps: 3}}
optimizers: [{optimizers}]
full_run: {{steps: 4, seeds: 1, time_milestone_s: null}}
lr_scale: 0.5
task_options: {{batch_size: {batch_size}{extra}}}
"""


def _md5_hook(mnist_md5: dict, cifar_md5: dict):
    """Every Ray worker accepts the tiny files' checksums (the published ones are for the real data)."""

    def hook():
        from tasks import datasets as worker_datasets

        worker_datasets.MNIST_MD5 = mnist_md5
        worker_datasets.CIFAR10_MD5 = cifar_md5

    return hook


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    names = write_tiny_mnist(folder, np.random.default_rng(0), n_train=72, n_test=4)
    write_tiny_cifar10(folder / "cifar-10-python.tar.gz", np.random.default_rng(1), per_batch=4)
    mnist_md5 = {name: md5_of(folder / name) for name in names}
    cifar_md5 = {"cifar-10-python.tar.gz": md5_of(folder / "cifar-10-python.tar.gz")}
    return folder, mnist_md5, cifar_md5


@pytest.fixture(scope="module")
def offline_ray(tiny_data):
    import ray

    folder, mnist_md5, cifar_md5 = tiny_data
    ray.shutdown()  # the shared session (conftest.ray_session) restarts on its next use
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"LODO_OFFLINE": "1", "LODO_DATA_DIR": str(folder / "nowhere")},
                          "worker_process_setup_hook": _md5_hook(mnist_md5, cifar_md5)})
    yield
    ray.shutdown()


def _run_cli(tmp_path, task, data_dir, batch_size, optimizers, extra=""):
    schedule = tmp_path / "tiny.yaml"
    schedule.write_text(SCHEDULE.format(task=task, batch_size=batch_size, optimizers=", ".join(optimizers),
                                        extra=extra))
    run_dir = tmp_path / "run"
    code = main(["--task", task, "--data-dir", str(data_dir), "--schedule", str(schedule),
                 "--optimizers", ",".join(optimizers), "--steps", "4", "--seeds", "1", "--time-milestone", "none",
                 "--workers", "1", "--run-dir", str(run_dir), "--quiet"])
    return code, run_dir


def _check_run(run_dir: Path, batch_size: int, optimizers):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["schedule"]["task_options"]["batch_size"] == batch_size
    assert not (run_dir / "errors").exists(), sorted((run_dir / "errors").rglob("*.txt"))
    for optimizer in optimizers:
        individuals = sorted((run_dir / "tuning" / optimizer).glob("g*-i*.json"))
        assert len(individuals) == 2  # population 2 × 1 generation
        for path in individuals:
            record = json.loads(path.read_text())
            assert "error" not in record, record.get("error")
            assert record["curve"]["step"][-1] == record["steps"]
        full = json.loads((run_dir / "full" / optimizer / "seed-0.json").read_text())
        assert "error" not in full, full.get("error")
        assert full["evaluations"] == 4 and full["steps"] == 4
        # Cross-entropy over 256 brightness levels / 10 classes: near ln 256 / ln 10 at the start.
        first = full["curve"]["loss"][0]
        assert math.isfinite(full["final_loss"]) and 0.5 * math.log(10) < first < 2 * math.log(256)
        assert not list((run_dir / "full" / optimizer).glob("*.ckpt"))  # deleted once the record is written


# LODO on ResNet-18 (11M parameters) takes minutes per step on a CPU: the ResNet smoke runs
# Adam and LARS (whose decay needs the run length, passed by the trial loop).
@pytest.mark.parametrize("task,batch_size,optimizers,extra", [
    ("image_generation", 4, ["Adam", "LODO"], ""),
    ("resnet18_cifar10", 2, ["Adam", "LARS"], ", num_test: 2, eval_batch_size: 2"),
])
def test_image_task_runs_a_tiny_schedule_end_to_end_through_the_cli(tmp_path, monkeypatch, tiny_data, offline_ray,
                                                                     task, batch_size, optimizers, extra):
    folder, mnist_md5, cifar_md5 = tiny_data
    monkeypatch.setenv("LODO_OFFLINE", "1")
    code, run_dir = _run_cli(tmp_path, task, folder, batch_size, optimizers, extra)
    assert code == 0
    _check_run(run_dir, batch_size, optimizers)


@pytest.mark.filterwarnings("ignore:GA Adam generation")  # every individual fails, as it should
def test_missing_dataset_is_an_error_not_a_download(tmp_path, monkeypatch, offline_ray):
    """With LODO_OFFLINE=1 an empty --data-dir makes every trial fail with the missing-file message."""
    monkeypatch.setenv("LODO_OFFLINE", "1")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, run_dir = _run_cli(tmp_path, "image_generation", empty, 4, ["Adam"])
    errors = sorted((run_dir / "errors" / "Adam").glob("*.txt"))
    assert errors and "Dataset files missing or corrupt (offline)" in errors[0].read_text()
    assert datasets.offline() and code == 4  # every trial raised: Adam failed, not tuned


def test_an_invalid_task_option_is_refused_before_any_trial(tmp_path, monkeypatch, tiny_data, capsys):
    """A schedule's task_options are checked against the built-in task up front (an invalid batch size
    used to reach every trial and fail each one): exit 2, one line naming the option, nothing written."""
    monkeypatch.setenv("LODO_OFFLINE", "1")
    code, run_dir = _run_cli(tmp_path, "image_generation", tiny_data[0], 0, ["Adam"])
    err = capsys.readouterr().err
    assert code == 2 and not run_dir.exists()
    assert err.count("\n") == 1 and "task_options.batch_size" in err
