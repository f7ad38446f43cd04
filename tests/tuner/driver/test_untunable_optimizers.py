"""Optimizers without GA hyperparameters (L2LBGDBGD, meta-trained offline) skip tuning but take
part in full-length runs and tables like any other."""
import pytest

ray = pytest.importorskip("ray")

import tuner  # noqa: E402
from tuner.driver.schedule import load_schedule  # noqa: E402
from tuner.trial.loop import run_trial  # noqa: E402


def test_l2lbgdbgd_skips_the_ga_and_runs_full_length(tmp_path):
    schedule = load_schedule("noisy_bowl", {
        "population": 2, "generations": [{"noise": 1.0, "steps": 50}],
        "optimizers": ["Adam", "L2LBGDBGD"], "full_run": {"steps": 300, "seeds": 2, "time_milestone_s": None}})
    result = tuner.run("noisy_bowl", schedule=schedule, run_dir=tmp_path / "run",
                       resources=tuner.Resources(workers=1))
    assert result.hyperparameters["L2LBGDBGD"] == {}
    assert "L2LBGDBGD" not in result.history           # no GA was run for it
    assert result.ran == 2                               # only Adam's two individuals
    report = result.report["L2LBGDBGD"]
    direct = [run_trial("noisy_bowl", "L2LBGDBGD", {}, 300, seed).final_loss for seed in (0, 1)]
    assert report["final_loss_mean"] == pytest.approx(sum(direct) / 2, rel=1e-12)
    table = tuner.export_table(tmp_path / "run", "markdown")
    assert "| L2LBGDBGD | — | none (nothing to tune) |" in table
