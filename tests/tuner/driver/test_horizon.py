"""A schedule's `horizon:` hyperparameters (step-counted, searched at the full run's length): what a
trial runs, what the run directory records, resume, other searchers, the bundled improved schedule
and the provenance line."""
import json

import pytest

from tuner.search.ga import GeneticAlgorithm
from tuner.report.provenance import schedule_info
from tuner.driver.rundir import RunDir
from tuner.driver.schedule import Schedule, ScheduleError, load_schedule, space_for, trial_hparams
from tuner.driver.session import Session
from tuner.trial.loop import run_trial

from conftest import drive_session

FULL = 2000


def _schedule(**extra) -> Schedule:
    return Schedule.from_dict({"task": "noisy_bowl", "population": 4,
                               "generations": [{"noise": 1.0, "steps": 80}, {"noise": 0.5, "steps": 200}],
                               "optimizers": ["L-BFGS", "Momentum"], "start": {"L-BFGS": {"lr": 0.5, "tau": 400.0}},
                               "full_run": {"steps": FULL, "seeds": 1, "time_milestone_s": None}, "lr_scale": 1.0,
                               "horizon": {"L-BFGS": ["tau"]}, **extra})


def test_a_trial_runs_its_share_of_the_full_run_value_and_a_full_length_trial_the_value_itself():
    schedule = _schedule()
    searched = {"lr": 0.5, "tau": 12345.678}
    assert trial_hparams(schedule, "L-BFGS", searched, 80) == {"lr": 0.5, "tau": pytest.approx(12345.678 * 80 / FULL,
                                                                                              rel=1e-15)}
    assert trial_hparams(schedule, "L-BFGS", searched, FULL) == searched  # bit for bit
    assert trial_hparams(schedule, "Momentum", {"lr": 0.1, "momentum": 0.9}, 80) == {"lr": 0.1, "momentum": 0.9}
    assert trial_hparams(load_schedule("noisy_bowl"), "L-BFGS", searched, 80) == searched  # no horizon: as given


def test_the_field_round_trips_through_the_manifest_and_is_absent_when_unused():
    schedule = _schedule()
    assert schedule.to_dict()["horizon"] == {"L-BFGS": ["tau"]}
    assert Schedule.from_dict(json.loads(json.dumps(schedule.to_dict()))) == schedule
    assert "horizon" not in load_schedule("noisy_bowl").to_dict()  # older run directories' manifests stay equal


def test_a_power_scales_a_trial_by_its_share_of_the_run_to_that_power():
    """{hyperparameter: p}: a trial of S steps runs value·(S/full)^p; a listed one is p = 1, bit for bit."""
    schedule = _schedule(horizon={"L-BFGS": ["tau"], "Momentum": {"lr": -0.25}})
    assert schedule.horizon == {"L-BFGS": {"tau": 1.0}, "Momentum": {"lr": -0.25}}
    run = trial_hparams(schedule, "Momentum", {"lr": 0.3, "momentum": 0.5}, 80)
    assert run == {"lr": pytest.approx(0.3 * 25 ** 0.25, rel=1e-15), "momentum": 0.5}  # (80/2000)^-¼ = 25^¼
    assert trial_hparams(schedule, "Momentum", {"lr": 0.3, "momentum": 0.5}, FULL) == {"lr": 0.3, "momentum": 0.5}
    assert trial_hparams(schedule, "L-BFGS", {"lr": 0.5, "tau": 1e4}, 80)["tau"] == 1e4 * (80 / FULL)  # exactly as before
    as_mapping = _schedule(horizon={"L-BFGS": {"tau": 1}})
    assert as_mapping == _schedule() and as_mapping.to_dict()["horizon"] == {"L-BFGS": ["tau"]}


def test_a_decay_rate_scales_its_time_constant_and_one_shorter_than_a_step_runs_as_zero():
    """1/(1 − β_trial) = (S/full)^p / (1 − β): beta2 = 0.999 (1,000 steps) over 80 of 2,000 steps runs
    at a 40-step constant; a constant below one step is β = 0; the full length runs β itself."""
    schedule = _schedule(horizon={"Momentum": ["momentum"], "L-BFGS": ["tau"]})
    assert schedule.to_dict()["horizon"] == {"Momentum": ["momentum"], "L-BFGS": ["tau"]}
    run = trial_hparams(schedule, "Momentum", {"lr": 0.3, "momentum": 0.999}, 80)
    assert run["lr"] == 0.3 and 1 / (1 - run["momentum"]) == pytest.approx(1000 * 80 / FULL, rel=1e-12)
    assert trial_hparams(schedule, "Momentum", {"lr": 0.3, "momentum": 0.9}, 80)["momentum"] == 0.0  # 10 → 0.4 steps
    assert trial_hparams(schedule, "Momentum", {"lr": 0.3, "momentum": 0.999}, FULL)["momentum"] == 0.999
    powered = _schedule(horizon={"Momentum": {"momentum": 0.5}})
    half = trial_hparams(powered, "Momentum", {"lr": 0.3, "momentum": 0.999}, 80)["momentum"]
    assert 1 / (1 - half) == pytest.approx(1000 * (80 / FULL) ** 0.5, rel=1e-12)
    assert Schedule.from_dict(json.loads(json.dumps(powered.to_dict()))) == powered


def test_a_decay_horizon_runs_in_a_trial_as_the_session_records_it(tmp_path):
    schedule = _schedule(horizon={"Momentum": ["momentum"]},
                         search={"searcher": "random", "trials": 4, "steps": 100,
                                 "bounds": {"lr": [1e-3, 0.3], "momentum": [0.99, 0.9999]}})
    session = _session(tmp_path / "run", schedule)
    drive_session(session, session.start(["Momentum"]))
    for rec in session.rd.individuals("Momentum"):
        constant = 1 / (1 - rec["hparams"]["momentum"])
        assert 1 / (1 - rec["trial_hparams"]["momentum"]) == pytest.approx(constant * 100 / FULL, rel=1e-9)
        assert rec["fitness"] == pytest.approx(run_trial("noisy_bowl", "Momentum", rec["trial_hparams"], 100,
                                                         rec["seed"]).final_loss, rel=1e-9)


def test_a_power_round_trips_through_the_manifest():
    schedule = _schedule(horizon={"L-BFGS": ["tau"], "Momentum": {"lr": -0.25}})
    assert schedule.to_dict()["horizon"] == {"L-BFGS": ["tau"], "Momentum": {"lr": -0.25}}
    assert Schedule.from_dict(json.loads(json.dumps(schedule.to_dict()))) == schedule


@pytest.mark.parametrize("horizon, field", [({"Momentum": {"lr": 0}}, "horizon.Momentum.lr"),
                                            ({"Momentum": {"lr": "half"}}, "horizon.Momentum.lr"),
                                            ({"Momentum": {"lr": float("inf")}}, "horizon.Momentum.lr"),
                                            ({"Momentum": {"beta": -0.5}}, "horizon.Momentum.beta"),
                                            ({"Momentum": 0.5}, "horizon.Momentum")])
def test_a_bad_power_names_its_field(horizon, field):
    with pytest.raises(ScheduleError) as error:
        _schedule(horizon=horizon)
    assert f": {field}: " in str(error.value) and "\n" not in str(error.value)


def test_a_session_records_the_powered_value_a_trial_ran(tmp_path):
    schedule = _schedule(horizon={"Momentum": {"lr": -0.5}},
                         search={"searcher": "random", "trials": 4, "steps": 100, "bounds": {"lr": [1e-3, 0.3]}})
    session = _session(tmp_path / "run", schedule)
    drive_session(session, session.start(["Momentum"]))
    records = session.rd.individuals("Momentum")
    assert len(records) == 4
    for rec in records:
        assert rec["trial_hparams"]["lr"] == pytest.approx(rec["hparams"]["lr"] * (100 / FULL) ** -0.5, rel=1e-15)
        assert rec["trial_hparams"]["momentum"] == rec["hparams"]["momentum"]
        assert rec["fitness"] == pytest.approx(run_trial("noisy_bowl", "Momentum", rec["trial_hparams"], 100,
                                                         rec["seed"]).final_loss, rel=1e-9)


@pytest.mark.parametrize("horizon, field", [({"L-BFGS": ["memory"]}, "horizon.L-BFGS[0]"),
                                            ({"Momentum": ["lr", 3]}, "horizon.Momentum[1]"),
                                            ({"L-BFGS": ["tau", "tau"]}, "horizon.L-BFGS"),
                                            ({"L-BFGS": "tau"}, "horizon.L-BFGS"),
                                            ([1], "horizon")])
def test_a_bad_horizon_names_its_field(horizon, field):
    with pytest.raises(ScheduleError) as error:
        _schedule(horizon=horizon)
    assert f": {field}: " in str(error.value) and "\n" not in str(error.value)


def _session(path, schedule) -> Session:
    rd = RunDir(path) if path.exists() else RunDir.create(path, task="noisy_bowl", schedule=schedule.to_dict(),
                                                          seed=3, optimizers=list(schedule.optimizers))
    session = Session(rd, schedule, 3, full_runs=False)
    session.workers, session.batch = 2, True
    return session


def test_trials_run_the_scaled_value_records_keep_the_searchers_and_a_resume_is_bit_identical(tmp_path):
    """The reference: the GA driven by hand, each trial an unbatched run_trial at τ·steps/full_run.steps."""
    schedule = _schedule()
    ga = GeneticAlgorithm(space_for(schedule, "L-BFGS"), schedule.generations, 4, seed=3, name="L-BFGS")
    while not ga.done:
        ga.tell({i.index: run_trial("noisy_bowl", "L-BFGS", {**i.hparams, "tau": i.hparams["tau"] * i.steps / FULL},
                                    i.steps, i.seed).final_loss for i in ga.ask()})
    straight = _session(tmp_path / "straight", schedule)
    drive_session(straight, straight.start(schedule.optimizers))
    assert straight.raw["L-BFGS"] == pytest.approx(ga.best(), rel=1e-12)
    for generation in ga.history:
        for ind in generation["individuals"]:
            rec = straight.rd.read_individual("L-BFGS", generation["generation"], ind["index"])
            assert rec["hparams"] == ind["hparams"]  # the searcher's values, in full-run units
            assert rec["trial_hparams"]["tau"] == pytest.approx(ind["hparams"]["tau"] * rec["steps"] / FULL, rel=1e-15)
            assert rec["fitness"] == pytest.approx(ind["fitness"], rel=1e-6)  # batched L-BFGS: ~1e-7 (trial.py)
    assert all("trial_hparams" not in r for r in straight.rd.individuals("Momentum"))
    first = ga.history[0]["individuals"][0]
    unscaled = run_trial("noisy_bowl", "L-BFGS", first["hparams"], 80, first["seed"]).final_loss
    assert unscaled != pytest.approx(first["fitness"], rel=1e-3)  # the scaling is not a no-op here
    cut = _session(tmp_path / "cut", schedule)
    drive_session(cut, cut.start(schedule.optimizers), stop_after=5)
    resumed = _session(tmp_path / "cut", schedule)
    drive_session(resumed, resumed.start(schedule.optimizers))
    assert resumed.reused > 0 and resumed.raw == straight.raw


def test_another_searcher_runs_the_scaled_value_too(tmp_path):
    schedule = _schedule(search={"searcher": "random", "trials": 4, "steps": 100,
                                                                  "bounds": {"lr": [1e-3, 0.3]}})
    session = _session(tmp_path / "run", schedule)
    drive_session(session, session.start(["L-BFGS"]))
    records = session.rd.individuals("L-BFGS")
    assert len(records) == 4
    for rec in records:
        assert rec["trial_hparams"]["lr"] == rec["hparams"]["lr"]
        assert rec["trial_hparams"]["tau"] == pytest.approx(rec["hparams"]["tau"] * 100 / FULL, rel=1e-15)
        assert rec["fitness"] == pytest.approx(run_trial("noisy_bowl", "L-BFGS", rec["trial_hparams"], 100,
                                                         rec["seed"]).final_loss, rel=1e-6)


def test_the_improved_bowl_schedule_scales_the_l_bfgs_familys_tau_and_the_report_says_so():
    schedule = load_schedule("noisy_bowl-improved")
    assert schedule.horizon == {"L-BFGS": {"tau": 1.0}, "O-LBFGS": {"tau": 1.0}, "LODO": {"meta_lr": -0.25},
                                "Yogi": {"beta2": 1.0}}
    assert schedule.ga["boundary"] == "clip"
    manifest = {"task": "noisy_bowl", "schedule": schedule.to_dict(), "schedule_source": "noisy_bowl-improved"}
    assert schedule_info(manifest).label == "schedules/noisy_bowl-improved.yaml"
    assert any("horizon" in d for d in schedule_info(manifest).deviations)
