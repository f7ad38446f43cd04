"""`lodo-tune demo` (what `make demo` runs): a short GA from Table 6's values, then full runs."""
import json

import pytest

import lodo
from cli import demo_schedule, main
from tuner.driver.schedule import Schedule, load_schedule


def test_demo_schedule_is_valid_and_starts_from_the_papers_values():
    demo = demo_schedule()
    schedule = load_schedule("noisy_bowl", demo)
    assert isinstance(schedule, Schedule)
    paper = lodo.paper_hyperparameters("noisy_bowl")
    assert schedule.start["LODO"] == paper["LODO"]
    assert schedule.start["Adam"] == paper["Adam"]


@pytest.mark.slow  # end to end through Ray or a CLI subprocess: `make test-slow`
def test_demo_runs_end_to_end_and_writes_its_tables_and_report(ray_session, tmp_path, capsys):
    run_dir = tmp_path / "demo"
    assert main(["demo", "--run-dir", str(run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["tuned"]) == set(out["results"]) == {"Adam", "Momentum", "LODO"}
    assert all(r["seeds"] == 2 and r["steps"] == 20000 and r["diverged"] == 0 for r in out["results"].values())
    assert out["ran"] == 3 * 2 * 8 and out["full_ran"] == 3 * 2
    assert (run_dir / "report.md").is_file() and (run_dir / "tuned.json").is_file()


@pytest.mark.slow  # a reproduction result (the paper's ranking), not a unit property
def test_lodo_wins_the_demo(ray_session, tmp_path, capsys):
    assert main(["demo", "--run-dir", str(tmp_path / "demo"), "--json"]) == 0
    means = {o: r["final_loss_mean"] for o, r in json.loads(capsys.readouterr().out)["results"].items()}
    assert min(means, key=means.get) == "LODO", means
    assert means["LODO"] < 12  # paper, 100k steps: 8.99; the ideal tracker: 7.41
