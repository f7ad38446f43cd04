"""Other searchers than the GA (issue 19): the bounded space against its closed forms, the budget
arithmetic, random/TPE/CMA-ES end to end through `tuner.tune`, determinism, resume bit for bit, and
one-line errors for bad input."""
import json
import math
import sys

import numpy as np
import pytest

import lodo
import tasks
import tuner
from tuner.report.report import write_report
from cli import main
from tuner.driver.plan import PlanError, Resources, make_plan
from tuner.driver.rundir import RunDir, RunDirError
from tuner.driver.schedule import Schedule, ScheduleError, load_schedule
from tuner.search.optuna import WORST, SamplerSearch, Round, rounds
from tuner.driver.session import Session
from tuner.search.space import Bounded, bounded_space, default_bounds, from_unit
from tuner.trial.loop import run_trial

from conftest import LINEAR_FIT_TASK, drive_session

pytest.importorskip("optuna")
pytest.importorskip("cmaes")

TWO = Resources(workers=2)


def _schedule(searcher="tpe", optimizers=("Adam",), **search) -> Schedule:
    """4 × (100 + 100) = 800 individual-steps: 8 trials of 100 steps in two rounds of 4 (set: the default
    would be MIN_TRIALS)."""
    return Schedule.from_dict({"task": "noisy_bowl", "population": 4, "generations": [{"noise": 3, "steps": 100}] * 2,
                               "optimizers": list(optimizers), "lr_scale": 1.0,
                               "full_run": {"steps": 100, "seeds": 1, "time_milestone_s": None},
                               "search": {"searcher": searcher, "round": 4, "bounds": {"lr": [1e-3, 1.0]}, "trials": 8,
                                          **search}})




def _session(path, schedule: Schedule, seed=0) -> Session:
    rd = RunDir(path) if path.exists() else RunDir.create(path, task="noisy_bowl", schedule=schedule.to_dict(),
                                                          seed=seed, optimizers=list(schedule.optimizers))
    return Session(rd, schedule, seed, full_runs=False)


def _records(path, optimizer="Adam") -> dict:
    """Each trial's record without what depends on the clock (seconds, the curve's times, the digest)."""
    out = {}
    for p in sorted((path / "tuning" / optimizer).glob("g*-i*.json")):
        rec = {k: v for k, v in json.loads(p.read_text()).items() if k not in ("seconds", "sha256")}
        out[p.name] = {**rec, "curve": {k: v for k, v in rec["curve"].items() if k != "time"}}
    return out


# -- the space -----------------------------------------------------------------------------------
def test_default_bounds_are_the_documented_intervals():
    assert default_bounds(0.01, "log") == pytest.approx((1e-5, 10.0), rel=1e-15)
    assert default_bounds(0.9, "decay") == (0.0, 0.9999)
    schedule = load_schedule("rosenbrock", {"search": None})
    momentum = bounded_space(schedule, "Momentum")
    assert momentum == [Bounded("lr", 0.01, "log", 1e-5, 10.0), Bounded("momentum", 0.0, "decay", 0.0, 0.9999)]


def test_schedule_bounds_override_per_name_and_per_optimizer():
    schedule = load_schedule("noisy_bowl", {"search": {"bounds": {"L-BFGS": {"tau": [10, 1.0e7]},
                                                                  "beta1": [0.5, 0.99]}}})
    assert [tuple(d)[3:] for d in bounded_space(schedule, "L-BFGS")] == [(1e-3, 10.0), (10.0, 1e7)]  # lr: the file's
    assert [tuple(d)[3:] for d in bounded_space(schedule, "Adam")] == [(1e-3, 10.0), (0.5, 0.99), (0.0, 0.9999)]


def test_from_unit_is_log_uniform_in_the_value_or_in_one_minus_the_value():
    lr, beta = Bounded("lr", 1.0, "log", 1e-3, 10.0), Bounded("beta", 0.9, "decay", 0.0, 0.9999)
    assert from_unit(lr, 0.0) == pytest.approx(1e-3) and from_unit(lr, 1.0) == pytest.approx(10.0)
    assert from_unit(lr, 0.5) == pytest.approx(math.sqrt(1e-3 * 10.0))        # geometric mean
    assert from_unit(beta, 0.0) == pytest.approx(0.9999) and from_unit(beta, 1.0) == pytest.approx(0.0)
    assert from_unit(beta, 0.5) == pytest.approx(1 - math.sqrt(1e-4 * 1.0))   # 1 − geometric mean of 1 − x


def test_random_search_samples_the_box_log_uniformly():
    """Kolmogorov–Smirnov against the closed-form CDF of ln x (log) and ln(1 − x) (decay)."""
    space = [Bounded("lr", 1.0, "log", 1e-3, 10.0), Bounded("beta", 0.9, "decay", 0.2, 0.9999)]
    n = 1000
    trials = SamplerSearch("random", space, [Round(n, 1)], seed=3, name="x").ask()
    for dim, transform, (lo, hi) in ((space[0], math.log, (1e-3, 10.0)),
                                     (space[1], lambda x: math.log(1 - x), (1 - 0.9999, 1 - 0.2))):
        u = np.sort([transform(t.hparams[dim.name]) for t in trials])
        a, b = math.log(lo), math.log(hi)
        assert a - 1e-12 <= u[0] and u[-1] <= b + 1e-12
        cdf = (u - a) / (b - a)
        ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
        assert ks < 1.63 / math.sqrt(n)  # the 1 % critical value


# -- the budget ----------------------------------------------------------------------------------
def test_the_budget_is_the_ga_schedules_individual_steps_as_whole_trials():
    noisy_bowl = load_schedule("noisy_bowl", {"search": {"searcher": "tpe"}})
    assert noisy_bowl.individual_steps() == 32 * (4 * 1000 + 2 * 1500 + 2000 + 3000 + 5000 + 8000) == 800_000
    assert rounds(noisy_bowl) == (Round(8, 8000),) * 12 + (Round(4, 8000),)        # Table 5: 100 trials
    random = load_schedule("noisy_bowl", {"search": {"searcher": "random"}})
    assert rounds(random) == (Round(32, 8000),) * 3 + (Round(4, 8000),)            # random: the population
    shorter = load_schedule("noisy_bowl", {"search": {"steps": 3000, "round": 50}})
    assert rounds(shorter) == (Round(50, 3000),) * 5 + (Round(16, 3000),)          # 800,000 // 3000 = 266
    assert rounds(load_schedule("noisy_bowl", {"search": {"trials": 10}})) == (Round(10, 8000),)
    assert sum(r.size * r.steps for r in rounds(noisy_bowl)) <= noisy_bowl.individual_steps()


def test_the_improved_schedules_budget_counts_seeds_and_its_trials_skip_the_finalists_length():
    rosenbrock = load_schedule("rosenbrock-improved", {"search": {"searcher": "tpe"}})  # 20 × 24 × 200
    assert rosenbrock.individual_steps() == 20 * 24 * 200 == 96_000
    seeded = load_schedule("rosenbrock-improved", {"search": {"searcher": "tpe"}, "ga": {"seeds": 2}})
    assert seeded.individual_steps() == 2 * 96_000  # each individual's seeds are trials of its own
    assert sum(r.size for r in rounds(rosenbrock)) == 480 and {r.steps for r in rounds(rosenbrock)} == {200}
    bowl = load_schedule("noisy_bowl-improved", {"search": {"searcher": "tpe"}})  # ends in 4 finalists × 50,000
    assert bowl.individual_steps() == 48 * 2000 + 9 * 12 * 8000 + 4 * 50_000
    assert {r.steps for r in rounds(bowl)} == {8000} and sum(r.size for r in rounds(bowl)) == bowl.individual_steps() // 8000


# -- CMA-ES adapts -------------------------------------------------------------------------------
def test_cmaes_rounds_are_generations_whose_spread_shrinks_on_a_quadratic():
    space = [Bounded("lr", 1.0, "log", 1e-3, 10.0), Bounded("beta", 0.9, "decay", 0.0, 0.9999)]
    spreads = {}
    for searcher in ("cmaes", "random"):
        search = SamplerSearch(searcher, space, [Round(8, 1)] * 12, seed=0, name="x")
        spreads[searcher] = []
        while not search.done:
            trials = search.ask()
            u = np.array([[math.log(t.hparams["lr"]), math.log(1 - t.hparams["beta"])] for t in trials])
            spreads[searcher].append(float(u.std(axis=0).mean()))
            search.tell({t.index: float(np.sum((u[t.index] - np.log([0.1, 0.05])) ** 2)) for t in trials})
    assert spreads["cmaes"][-1] < 0.25 * spreads["cmaes"][1]    # round 0 is Optuna's random start
    assert min(spreads["random"]) > 0.5 * spreads["random"][0]  # what no adaptation looks like
    assert search.study.sampler.__class__.__name__ == "RandomSampler"


def test_a_diverged_trial_is_told_as_the_worst_finite_value_and_never_becomes_the_best():
    space = [Bounded("lr", 1.0, "log", 1e-3, 10.0), Bounded("beta", 0.9, "decay", 0.0, 0.9999)]
    search = SamplerSearch("cmaes", space, [Round(4, 1)] * 2, seed=0, name="x")
    first = search.ask()
    search.tell([math.nan, 2.0, math.inf, 1.0])
    assert [t.value for t in search.study.trials] == [WORST, 2.0, WORST, 1.0]
    assert search.best() == first[3].hparams
    assert len(search.ask()) == 4  # CMA-ES goes on with its next generation


# -- end to end through tuner.tune ---------------------------------------------------------------
def test_cmaes_tunes_through_the_api_to_its_best_trial(ray_session, tmp_path):
    searcher = "cmaes"
    result = tuner.tune("noisy_bowl", schedule=_schedule(searcher), run_dir=tmp_path / "r", resources=TWO)
    records = _records(tmp_path / "r")
    assert sorted(records) == [f"g{g:02d}-i{i:02d}.json" for g in range(2) for i in range(4)]
    best = min(records.values(), key=lambda r: (r["fitness"], r["generation"], r["index"]))
    assert result.hyperparameters["Adam"] == best["hparams"]
    # the recorded fitness (a lane of a batched trial) is the trial loop's, on the unbatched reference path
    reference = run_trial("noisy_bowl", "Adam", best["hparams"], 100, best["seed"]).final_loss
    assert best["fitness"] == pytest.approx(reference, rel=1e-12)
    tuned = json.loads((tmp_path / "r" / "tuned.json").read_text())
    assert (tuned["searcher"], tuned["schedule"]) == (searcher, "<dict>")
    assert f"(tuned by {searcher} · <dict>)" in tuner.export_table(tmp_path / "r")
    assert json.loads(tuner.export_table(tmp_path / "r", "json"))["searcher"] == searcher
    text = write_report(tmp_path / "r").read_text()  # trials by round, no GA mean replayed for them
    assert "### Tuning: Adam (CMA-ES)" in text and "### GA tuning" not in text
    assert "do not match a replay" not in text


@pytest.mark.slow  # end to end through Ray or a CLI subprocess: `make test-slow`
def test_tpe_resumes_an_interrupted_run_bit_identically(ray_session, tmp_path):
    rd = tmp_path / "r"
    first = tuner.tune("noisy_bowl", schedule=_schedule("tpe"), run_dir=rd, resources=TWO)
    assert (first.ran, first.reused) == (8, 0)
    before = _records(rd)
    for name in ("g00-i02.json", "g01-i00.json", "g01-i03.json"):  # never written: the driver was killed
        (rd / "tuning" / "Adam" / name).unlink()
    (rd / "tuned.json").unlink()
    again = tuner.tune("noisy_bowl", run_dir=rd, resume=True, resources=TWO, searcher="tpe")
    assert (again.reused, again.ran) == (5, 3)
    assert again.hyperparameters == first.hyperparameters
    assert _records(rd) == before  # the rerun trials are the same trials, bit for bit

    with pytest.raises(PlanError, match=r"^searcher: .* was tuned with searcher 'tpe', not 'cmaes'"):
        tuner.tune("noisy_bowl", run_dir=rd, resume=True, searcher="cmaes")


def test_a_user_task_and_optimizer_are_tuned_by_tpe(tmp_path):
    path = tmp_path / "linear_fit.py"
    path.write_text(LINEAR_FIT_TASK)
    spec = tasks.resolve(f"{path}:LinearFit")
    schedule = Schedule.from_dict({
        "population": 3, "generations": [{"noise": 1, "steps": 20}] * 2, "lr_scale": 1.0,
        "optimizers": [{"name": "SGD-search", "optimizer": "torch.optim.SGD",
                        "hyperparameters": {"lr": {"default": 0.01, "scale": "log"},
                                            "momentum": {"default": 0.5, "scale": "decay"}}}],
        "full_run": {"steps": 20, "seeds": 1, "time_milestone_s": None},
        "search": {"searcher": "tpe", "trials": 6}}, task_names=[spec.name])
    optimizer = lodo.register(schedule.optimizer_specs["SGD-search"])
    try:
        rd = RunDir.create(tmp_path / "r", task=spec.name, schedule=schedule.to_dict(), seed=0,
                           optimizers=["SGD-search"])
        session = Session(rd, schedule, 0, full_runs=True, task=spec.ref)
        drive_session(session, session.start(["SGD-search"]))
    finally:
        lodo.unregister(optimizer.name)
    records = _records(tmp_path / "r", "SGD-search")
    assert len(records) == 6  # 3 × (20 + 20) individual-steps as trials of 20 steps, in rounds of 3
    assert all(math.isfinite(r["fitness"]) for r in records.values())
    assert session.hyperparameters["SGD-search"] == min(records.values(), key=lambda r: r["fitness"])["hparams"]
    assert [r["hparams"] for r in rd.full_runs("SGD-search")] == [session.hyperparameters["SGD-search"]]


# -- determinism and resume in one process -------------------------------------------------------
def test_same_seed_same_values_other_seed_other_values_and_resume_mid_round(tmp_path):
    schedule = _schedule("tpe")
    tuned = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        session = _session(tmp_path / name, schedule, seed)
        drive_session(session, session.start(["Adam"]))
        tuned[name] = session.hyperparameters["Adam"]
    assert tuned["a"] == tuned["b"] and tuned["a"] != tuned["c"]

    session = _session(tmp_path / "d", schedule)
    assert drive_session(session, session.start(["Adam"]), stop_after=6) == 6  # the driver dies in round 1
    resumed = _session(tmp_path / "d", schedule)
    jobs = resumed.start(["Adam"])
    assert [j.key[2:] for j in jobs if j.key[0] == "tuning"] == [(1, 2), (1, 3)]  # only what is missing (and round 0's noise check)
    drive_session(resumed, jobs)
    assert resumed.hyperparameters["Adam"] == tuned["a"] and _records(tmp_path / "d") == _records(tmp_path / "a")


def test_random_search_in_a_session_tunes_to_its_best_trial(tmp_path):
    session = _session(tmp_path / "r", _schedule("random"))
    drive_session(session, session.start(["Adam"]))
    records = _records(tmp_path / "r")
    assert len(records) == 8
    assert session.hyperparameters["Adam"] == min(records.values(), key=lambda r: r["fitness"])["hparams"]
    state = json.loads((tmp_path / "r" / "tuning" / "Adam" / "state.json").read_text())
    assert (state["generation"], state["generations"], state["done"]) == (2, 2, True)


def test_a_record_of_another_searcher_is_refused_on_resume(tmp_path):
    session = _session(tmp_path / "r", _schedule("tpe"))
    drive_session(session, session.start(["Adam"]), stop_after=4)
    with pytest.raises(RunDirError, match="does not match this run's random searcher"):
        _session(tmp_path / "r", _schedule("random")).start(["Adam"])


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("search, field", [
    ({"searcher": "hyperopt"}, "search.searcher"),
    ({"trials": 0}, "search.trials"),
    ({"searcher": "cmaes", "round": 1}, "search.round"),
    ({"steps": 10**7}, "search.steps"),
    ({"bounds": {"lr": [1.0, 0.1]}}, "search.bounds.lr"),
    ({"bounds": {"beta1": [0.5, 1.0]}}, "search.bounds.beta1"),
    ({"bounds": {"gamma": [0.5, 1.0]}}, "search.bounds.gamma"),
    ({"bounds": {"Adam": {"tau": [1, 2]}}}, "search.bounds.Adam.tau"),
    ({"budget": 3}, "search.budget"),
])
def test_a_bad_search_section_is_one_line_naming_the_field(search, field):
    with pytest.raises(ScheduleError) as info:
        load_schedule("noisy_bowl", {"search": search})
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"schedules/noisy_bowl.yaml (with overrides): {field}:")


def test_cli_bad_searcher_and_missing_optuna_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "r"
    assert main(["--task", "noisy_bowl", "--searcher", "hyperopt", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err == "lodo-tune: error: --searcher: unknown searcher 'hyperopt' (valid: ga, random, tpe, cmaes)\n"
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if the search extra were not installed
    assert main(["--task", "noisy_bowl", "--searcher", "tpe", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lodo-tune: error: --searcher: searcher 'tpe' needs optuna")
    assert 'pip install "lodo-tune[search]"' in err and not run_dir.exists()
    assert make_plan("noisy_bowl", run_dir=run_dir, searcher="ga").searcher == "ga"  # the GA needs no Optuna
    with pytest.raises(PlanError, match="^searcher: 'tpe' tunes, and hyperparameters 'paper' are not tuned"):
        make_plan("noisy_bowl", run_dir=run_dir, searcher="tpe", hyperparameters="paper")  # not silently ignored
