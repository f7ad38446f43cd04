"""benchmarks/tuning_quality.py on tiny settings: every cell runs, the table reads back what the
cells' run directories hold, and a second invocation skips the finished cells."""
import importlib.util
import json
import math
from pathlib import Path

import pytest

import lodo
from tuner.driver.rundir import RunDir

pytest.importorskip("optuna")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "tuning_quality.py"
TINY = """task: noisy_bowl
population: 4
generations: [{noise: 3, steps: 50}, {noise: 1, steps: 50}]
optimizers: [Adam]
full_run: {steps: 100, seeds: 1, time_milestone_s: null}
lr_scale: 1
search: {bounds: {lr: [1.0e-3, 10]}}
"""


def _benchmark():
    spec = importlib.util.spec_from_file_location("tuning_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # end to end through Ray or a CLI subprocess: `make test-slow`
def test_tiny_benchmark_fills_its_cells_and_skips_them_when_run_again(ray_session, tmp_path, capsys):
    schedule = tmp_path / "tiny.yaml"
    schedule.write_text(TINY)
    argv = ["--out", str(tmp_path / "out"), "--optimizers", "Adam", "--searchers", "random,ga-improved",
            "--seeds", "0", "--full-steps", "60", "--full-seeds", "2", "--schedule", str(schedule),
            "--improved", str(tmp_path / "absent.yaml"), "--workers", "2"]
    bench = _benchmark()
    assert bench.main(argv) == 0
    out = capsys.readouterr()
    assert "ga-improved skipped" in out.err
    cells = {s: json.loads((tmp_path / "out" / s / "Adam" / "seed-0" / "cell.json").read_text()) for s in ("random",)}
    for searcher, cell in cells.items():
        full = RunDir(tmp_path / "out" / searcher / "Adam" / "seed-0" / "full").full_runs("Adam")
        assert [r["hparams"] for r in full] == [cell["hyperparameters"]] * 2
        assert cell["full_loss"] == pytest.approx(sum(r["final_loss"] for r in full) / 2, rel=1e-12)
        assert cell["individual_steps"] == 4 * (50 + 50)  # the GA's budget: 8 trials of 50 steps
    table6 = json.loads((tmp_path / "out" / "paper" / "Adam" / "table6" / "cell.json").read_text())
    assert table6["hyperparameters"] == lodo.paper_hyperparameters("noisy_bowl")["Adam"]
    assert f"| {table6['full_loss']:.2f} |" in out.out
    row = next(line for line in out.out.splitlines() if line.startswith("| Adam | random |"))
    assert f"{cells['random']['full_loss']:.2f} ± 0.00" in row and "| 15.28 |" in row and "| 400 |" in row

    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("cell.json")}
    assert bench.main(argv) == 0  # everything on disk: nothing runs again
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_the_table_keeps_small_losses_readable_and_defaults_follow_the_task():
    bench = _benchmark()
    assert [bench._num(v) for v in (15.274, 0.0, 0.5, 6.54e-5, -3e-3)] == ["15.27", "0.00", "0.50", "6.54e-05", "-3.00e-03"]
    assert bench._fmt(None) == "—" and bench._fmt(math.inf) == "diverged"
    # --task rosenbrock: the faithful GA's schedule is rosenbrock's, the improved one rosenbrock-improved
    args = bench.argparse.Namespace(task="rosenbrock", schedule=None, improved=None, full_steps=200, full_seeds=8)
    assert bench._schedule(args, "ga").task == "rosenbrock"
    assert bench._schedule(args, "ga-improved").source.startswith("schedules/rosenbrock-improved.yaml")
    assert bench._schedule(args, "tpe").search.searcher == "tpe"
