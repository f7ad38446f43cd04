"""The improved GA through the tool: the bundled `*-improved` schedules (budget ≤ 1.5× Table 5's,
computed from the YAML), a session with every option against a GA driven by hand with unbatched
`run_trial` calls, resume after an interruption mid-generation (bit-identical), `tuner.driver.api.tune`
end to end, and a user task."""
import json
import math
import uuid
from pathlib import Path

import pytest
import yaml

import tuner
from tuner.search.ga import GeneticAlgorithm
from tuner.driver.plan import Resources, make_plan
from tuner.driver.rundir import RunDir
from tuner.driver.schedule import Schedule, load_schedule, space_for
from tuner.driver.session import Session
from tuner.search.space import ga_keywords
from tuner.trial.loop import run_trial

from conftest import LINEAR_FIT_TASK, drive_session

SCHEDULES = Path(__file__).resolve().parents[3] / "schedules"
OPTIONS = {"init": "uniform", "step_size": "csa", "covariance": "rank_mu", "seeds": 2}


def _individual_steps(data: dict) -> int:
    """Σ population × seeds × steps over the generations (a row's own population where given),
    read straight from the YAML."""
    seeds = (data.get("ga") or {}).get("seeds", 1)
    return sum(row.get("population", data["population"]) * seeds * row["steps"] for row in data["generations"])


@pytest.mark.parametrize("task", ["noisy_bowl", "rosenbrock"])
def test_bundled_improved_schedules_load_and_spend_at_most_one_and_a_half_times_table_5(task):
    improved = yaml.safe_load((SCHEDULES / f"{task}-improved.yaml").read_text())
    faithful = yaml.safe_load((SCHEDULES / f"{task}.yaml").read_text())
    assert _individual_steps(improved) <= 1.5 * _individual_steps(faithful)
    schedule = load_schedule(f"{task}-improved")  # by bare name, as --schedule noisy_bowl-improved
    assert schedule.task == task and schedule.ga and schedule.full_run == load_schedule(task).full_run
    assert schedule.individual_steps() == _individual_steps(improved)
    assert list(schedule.optimizers) == list(load_schedule(task).optimizers)


def _schedule(optimizers=("Adam", "Momentum")) -> Schedule:
    return Schedule.from_dict({"task": "noisy_bowl", "population": 4,
                               "generations": [{"noise": 1.0, "steps": 60}, {"noise": 0.5, "steps": 80}],
                               "optimizers": list(optimizers),
                               "full_run": {"steps": 50, "seeds": 1, "time_milestone_s": None}, "lr_scale": 1.0,
                               "ga": OPTIONS, "search": {"bounds": {"lr": [1e-3, 1.0]}}})


def _by_hand(schedule: Schedule, optimizer: str, seed: int) -> dict:
    """The GA with the schedule's options, each trial an unbatched run_trial: the reference."""
    space = space_for(schedule, optimizer)
    ga = GeneticAlgorithm(space, schedule.generations, schedule.population, seed=seed, name=optimizer,
                          init="uniform", step_size="csa", covariance="rank_mu", seeds=2, bounds={"lr": (1e-3, 1.0)})
    while not ga.done:
        ga.tell({i.index: run_trial("noisy_bowl", optimizer, i.hparams, i.steps, i.seed).final_loss for i in ga.ask()})
    return ga.best()


def _session(path, schedule, batch=True) -> Session:
    rd = RunDir(path) if path.exists() else RunDir.create(path, task="noisy_bowl", schedule=schedule.to_dict(),
                                                          seed=1, optimizers=list(schedule.optimizers))
    session = Session(rd, schedule, 1, full_runs=False)
    session.workers, session.batch = 4, batch  # 2 chunks of 4 trials per optimizer and generation
    return session




def test_the_uniform_start_gets_the_search_box_of_its_own_hyperparameters():
    schedule = _schedule()  # search.bounds lr; momentum: the decay default 1 − [1e-4, 1]
    options = ga_keywords(schedule, "Momentum")
    assert options["bounds"] == {"lr": (1e-3, 1.0), "momentum": (0.0, 0.9999)}
    assert {k: v for k, v in options.items() if k != "bounds"} == OPTIONS
    assert ga_keywords(load_schedule("noisy_bowl"), "Adam") == {}  # the paper's GA: no options, no box


def test_a_clipped_session_gets_the_search_box_and_records_only_draws_inside_it(tmp_path):
    """boundary: clip without a uniform start still gets the searchers' box; σ = 2 around lr 0.04
    sends many draws past lr 0.05, and each is recorded (and trained) at the box's edge."""
    schedule = Schedule.from_dict({"task": "noisy_bowl", "population": 4,
                                   "generations": [{"noise": 2.0, "steps": 40}, {"noise": 2.0, "steps": 40}],
                                   "optimizers": ["Momentum"], "start": {"Momentum": {"lr": 0.04}},
                                   "full_run": {"steps": 50, "seeds": 1, "time_milestone_s": None}, "lr_scale": 1.0,
                                   "ga": {"boundary": "clip"}, "search": {"bounds": {"lr": [1e-3, 0.05]}}})
    assert ga_keywords(schedule, "Momentum") == {"boundary": "clip",
                                                 "bounds": {"lr": (1e-3, 0.05), "momentum": (0.0, 0.9999)}}
    session = _session(tmp_path / "run", schedule)
    drive_session(session, session.start(["Momentum"]))
    lrs = [r["hparams"]["lr"] for r in session.rd.individuals("Momentum")]
    assert len(lrs) == 8 and all(1e-3 * (1 - 1e-12) <= lr <= 0.05 * (1 + 1e-12) for lr in lrs)
    assert sum(lr == pytest.approx(0.05, rel=1e-12) for lr in lrs) >= 2
    assert session.raw["Momentum"]["lr"] <= 0.05 * (1 + 1e-12)


def test_a_session_with_every_option_gives_the_hand_driven_gas_values_and_resumes_bit_identically(tmp_path):
    """2 seeds per individual: 8 trials per generation, 16 records per optimizer. The interrupted
    session stops mid-generation 1; the resumed one runs only what is missing, to the same values."""
    schedule = _schedule()
    straight = _session(tmp_path / "straight", schedule)
    drive_session(straight, straight.start(schedule.optimizers))
    for optimizer in schedule.optimizers:
        assert straight.raw[optimizer] == pytest.approx(_by_hand(schedule, optimizer, 1), rel=1e-12)
        assert len(list((tmp_path / "straight" / "tuning" / optimizer).glob("g*-i*.json"))) == 16
    first = _session(tmp_path / "cut", schedule)
    drive_session(first, first.start(schedule.optimizers), stop_after=5)  # 4 chunks of generation 0, 1 of generation 1
    resumed = _session(tmp_path / "cut", schedule)
    drive_session(resumed, resumed.start(schedule.optimizers))
    assert (resumed.reused, resumed.ran) == (20, 12)
    assert resumed.raw == straight.raw  # bit-identical
    records = lambda p: {q.name: json.loads(q.read_text())["fitness"] for q in p.rglob("g*-i*.json")}  # noqa: E731
    assert records(tmp_path / "cut" / "tuning") == records(tmp_path / "straight" / "tuning")


def test_tune_runs_the_improved_schedule_end_to_end_and_resumes(ray_session, tmp_path):
    schedule = load_schedule("noisy_bowl-improved", {"population": 4, "optimizers": ["Momentum"],
                                                     "generations": [{"noise": 1.0, "steps": 40}] * 2,
                                                     "ga": {"seeds": 2}})
    rd = tmp_path / "run"
    first = tuner.tune("noisy_bowl", schedule=schedule, seed=0, run_dir=rd, resources=Resources(workers=2))
    assert (first.ran, first.errors) == (2 * 4 * 2, 0)
    reference = GeneticAlgorithm(space_for(schedule, "Momentum"), schedule.generations, 4, seed=0, name="Momentum",
                                 **ga_keywords(schedule, "Momentum"))
    while not reference.done:
        reference.tell({i.index: run_trial("noisy_bowl", "Momentum", i.hparams, i.steps, i.seed).final_loss
                        for i in reference.ask()})
    assert first.raw["Momentum"] == pytest.approx(reference.best(), rel=1e-12)
    for i in (1, 5, 6):  # a crash in generation 1
        (rd / "tuning" / "Momentum" / f"g01-i{i:02d}.json").unlink()
    again = tuner.tune("noisy_bowl", schedule=schedule, seed=0, run_dir=rd, resume=True, resources=Resources(workers=2))
    assert (again.reused, again.ran) == (13, 3)
    assert again.hyperparameters == first.hyperparameters
    assert json.loads((rd / "manifest.json").read_text())["schedule"]["ga"]["seeds"] == 2


def test_a_user_task_is_tuned_with_the_improved_options(tmp_path):
    """conftest.LINEAR_FIT_TASK from a file, every option on, driven in this process (as a worker would)."""
    module = tmp_path / f"usertask_{uuid.uuid4().hex[:8]}.py"
    module.write_text(LINEAR_FIT_TASK)
    schedule = Schedule.from_dict({"population": 4, "generations": [{"noise": 1.0, "steps": 30}] * 2,
                                   "optimizers": ["Adam"], "full_run": {"steps": 30, "seeds": 1, "time_milestone_s": None},
                                   "lr_scale": 1, "ga": OPTIONS, "search": {"bounds": {"lr": [1e-3, 1.0]}}})
    plan = make_plan(f"{module}:LinearFit", schedule=schedule, run_dir=tmp_path / "run", full_runs=False)
    rd = RunDir.create(tmp_path / "run", task=plan.task, schedule=schedule.to_dict(), seed=0, optimizers=["Adam"])
    session = Session(rd, schedule, 0, full_runs=False, task=plan.spec.ref)
    drive_session(session, session.start(["Adam"]))
    assert (session.ran, session.errors) == (16, 0)
    history = session.gas["Adam"].history
    assert all(1e-3 <= i["hparams"]["lr"] <= 1.0 for i in history[0]["individuals"])  # uniform within the bounds
    assert [len(h["individuals"]) for h in history] == [8, 8]  # 4 individuals × 2 seeds
    assert all(math.isfinite(v) for h in history for v in h["fitness"])
    assert session.raw["Adam"] == session.gas["Adam"].best()


def test_a_session_with_finalists_tunes_the_best_finalist_and_resumes_bit_identically(tmp_path):
    """Two generations of 4, then 3 finalists trained 4× longer: the session's tuned values are the
    hand-driven GA's best finalist, and an interrupted session resumes to the same values."""
    schedule = Schedule.from_dict({"task": "noisy_bowl", "population": 4,
                                   "generations": [{"noise": 1.0, "steps": 60}, {"noise": 0.5, "steps": 60},
                                                   {"noise": 0, "steps": 240, "population": 3}],
                                   "optimizers": ["Momentum"], "full_run": {"steps": 50, "seeds": 1, "time_milestone_s": None},
                                   "lr_scale": 1.0, "ga": {"final": "finalists"}, "noise_check": False})
    ga = GeneticAlgorithm(space_for(schedule, "Momentum"), schedule.generations, 4, seed=1, name="Momentum",
                          final="finalists")
    while not ga.done:
        ga.tell({i.index: run_trial("noisy_bowl", "Momentum", i.hparams, i.steps, i.seed).final_loss for i in ga.ask()})
    finalists = ga.history[-1]["individuals"]
    assert [f["hparams"] for f in finalists][0] == ga.history[-2]["next_mean"] and len(finalists) == 3
    assert ga.best() == min(finalists, key=lambda f: f["fitness"])["hparams"]
    straight = _session(tmp_path / "straight", schedule)
    drive_session(straight, straight.start(schedule.optimizers))
    assert straight.raw["Momentum"] == pytest.approx(ga.best(), rel=1e-12)
    assert json.loads((tmp_path / "straight" / "tuned.json").read_text())["raw"]["Momentum"] == straight.raw["Momentum"]
    first = _session(tmp_path / "cut", schedule)
    drive_session(first, first.start(schedule.optimizers), stop_after=9)  # 4 + 4 chunks, then 1 of 3 finalists
    resumed = _session(tmp_path / "cut", schedule)
    drive_session(resumed, resumed.start(schedule.optimizers))
    assert (resumed.reused, resumed.ran) == (9, 2) and resumed.raw == straight.raw
