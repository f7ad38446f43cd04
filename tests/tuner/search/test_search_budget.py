"""A searcher's budget a user can read and set (issue 37): random, TPE and CMA-ES get at least
MIN_TRIALS trials by default, `search: {trials, steps}` sets them, and the run says what they get."""
import logging

import pytest

from tuner.driver.rundir import RunDir
from tuner.driver.schedule import Schedule, load_schedule
from tuner.search.optuna import MIN_TRIALS, Round, budget, rounds
from tuner.driver.session import Session

SMALL = {"task": "noisy_bowl", "population": 3, "generations": [{"noise": 1, "steps": 50}, {"noise": 1, "steps": 100}],
         "optimizers": ["Adam"], "lr_scale": 1, "full_run": {"steps": 100, "seeds": 1, "time_milestone_s": None}}


def test_a_small_schedule_still_gives_the_searcher_twenty_trials():
    schedule = Schedule.from_dict({**SMALL, "search": {"searcher": "tpe"}})
    assert schedule.individual_steps() // 100 == 4  # 3 × 50 + 3 × 100 = 450 individual-steps: 4 trials of 100
    assert MIN_TRIALS == 20 and rounds(schedule) == (Round(8, 100),) * 2 + (Round(4, 100),)
    assert budget(schedule) == ("tpe: 20 trials of 100 steps in rounds of 8 per optimizer (default: at least 20 "
                                "(the GA's 450 individual-steps // 100 = 4); steps: the GA's trial length; "
                                "set search.trials and search.steps)")


def test_trials_and_steps_are_the_schedules_when_given():
    schedule = Schedule.from_dict({**SMALL, "search": {"searcher": "random", "trials": 6, "steps": 70}})
    assert rounds(schedule) == (Round(3, 70),) * 2
    assert budget(schedule) == "random: 6 trials of 70 steps in rounds of 3 per optimizer (the schedule's)"


@pytest.mark.parametrize("name, trials, steps", [("noisy_bowl", 100, 8000), ("rosenbrock", 320, 200),
                                                 ("resnet18_cifar10", 44, 500), ("image_generation", 100, 8000)])
def test_the_bundled_schedules_budgets_are_unchanged(name, trials, steps):
    """Σ population × steps of Table 5's rows // the last row's steps, as before MIN_TRIALS: all above it."""
    schedule = load_schedule(name, {"search": {"searcher": "tpe"}})
    table5 = sum(schedule.size(g) * g.steps for g in schedule.generations)
    assert table5 // steps == trials and sum(r.size for r in rounds(schedule)) == trials
    assert {r.steps for r in rounds(schedule)} == {steps}


def test_the_budget_is_logged_when_the_searcher_starts(tmp_path, caplog):
    pytest.importorskip("optuna")
    schedule = Schedule.from_dict({**SMALL, "search": {"searcher": "random"}})
    rd = RunDir.create(tmp_path / "r", task="noisy_bowl", schedule=schedule.to_dict(), seed=0, optimizers=["Adam"])
    with caplog.at_level(logging.INFO, logger="tuner.driver.session"):
        Session(rd, schedule, 0, full_runs=False).start(["Adam"])
    assert "searcher random: 20 trials of 100 steps in rounds of 3 per optimizer" in caplog.text
