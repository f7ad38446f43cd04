"""tuner.driver.plan.make_plan: every argument resolved and checked once, errors naming the parameter,
resume values taken from (and checked against) the run directory's manifest. Writes nothing."""
import pytest

import lodo
from tuner.driver.plan import Plan, PlanError, Resources, make_plan
from tuner.driver.rundir import RunDir
from tuner.driver.schedule import load_schedule


def _error(**kw) -> PlanError:
    with pytest.raises(PlanError) as info:
        make_plan(**kw)
    return info.value


@pytest.fixture
def resumable(tmp_path):
    """A run directory as `run_plan` leaves it: seed 3, Adam and LODO with given hyperparameters."""
    given = {"Adam": {"lr": 0.1}, "LODO": {"lr": 0.2}}
    plan = make_plan("noisy_bowl", hyperparameters=given, seed=3, run_dir=tmp_path / "r")
    RunDir.create(plan.run_dir, task="noisy_bowl", schedule=plan.schedule.to_dict(), seed=3,
                  optimizers=list(plan.optimizers), hparams="given", given_hyperparameters=plan.given(),
                  full_runs=False)
    return plan


def test_defaults_are_the_tasks_schedule_seed_0_tuned_and_full_runs(tmp_path):
    plan = make_plan("rosenbrock", run_dir=tmp_path / "r")
    assert isinstance(plan, Plan) and plan.schedule == load_schedule("rosenbrock")
    assert plan.optimizers == load_schedule("rosenbrock").optimizers
    assert (plan.seed, plan.hyperparameters, plan.full_runs, plan.resources) == (0, "tuned", True, Resources())
    assert plan.given() is None and not (tmp_path / "r").exists()


def test_paper_hyperparameters_are_table6_with_registry_defaults_where_it_has_no_row(tmp_path):
    plan = make_plan("noisy_bowl", optimizers=["Adam", "Newton"], hyperparameters="paper", run_dir=tmp_path / "r")
    assert plan.given()["Adam"] == {"lr": 1.164, "beta1": 0.465, "beta2": 0.9884}  # Table 6, docs/paper.md §5
    assert plan.given()["Newton"] == {h.name: h.default for h in lodo.hyperparameters("Newton")}


@pytest.mark.parametrize("kw,parameter,message", [
    ({"task": "bowl"}, "task", "unknown task 'bowl' (valid: noisy_bowl, "),
    ({"task": None}, "task", "required (one of: noisy_bowl, "),
    ({"optimizers": []}, "optimizers", "empty list"),
    ({"optimizers": ["Adam", "Adamm"]}, "optimizers", "unknown optimizer 'Adamm' (valid: "),
    ({"seed": -1}, "seed", "-1 is not allowed (must be an integer >= 0)"),
    ({"seed": True}, "seed", "True is not allowed"),
    ({"hyperparameters": "best"}, "hyperparameters", "'best' is not allowed (must be 'tuned', 'paper' or a mapping"),
    ({"hyperparameters": {"Adam": {"lr": "x"}}}, "hyperparameters", "Adam.lr: 'x' is not allowed (must be a finite"),
    ({"hyperparameters": {"Adam": {"lr": 0.1}}, "optimizers": ["Adam", "LODO"]}, "hyperparameters",
     "no values for LODO"),
    ({"schedule": "rosenbrock"}, "schedule", "schedules/rosenbrock.yaml is for task 'rosenbrock', not 'noisy_bowl'"),
    ({"schedule_overrides": {"population": 1}}, "schedule", "population: 1 is not allowed"),
    ({"schedule_overrides": {"task_options": {"size": 3}}}, "task_options.size", "not an option of task 'noisy_bowl'"),
    ({"resume": True, "run_dir": None}, "run_dir", "required to resume"),
])
def test_a_bad_argument_is_one_line_naming_the_parameter(kw, parameter, message, tmp_path):
    e = _error(**{"task": "noisy_bowl", "run_dir": tmp_path / "r", **kw})
    assert e.parameter == parameter and str(e) == f"{parameter}: {e.message}" and "\n" not in str(e)
    assert message in e.message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kw,parameter,message", [
    ({"workers": 0}, "resources.workers", "0 is not allowed (must be an integer >= 1 or None)"),
    ({"cpus_per_trial": 0}, "resources.cpus_per_trial", "0 is not allowed (must be a number > 0)"),
    ({"gpus_per_trial": -0.5}, "resources.gpus_per_trial", "-0.5 is not allowed (must be a number >= 0)"),
    ({"device": "tpu"}, "resources.device", "'tpu' is not allowed (must be 'cpu' or 'cuda')"),
])
def test_resources_are_checked_when_made(kw, parameter, message):
    with pytest.raises(PlanError) as info:
        Resources(**kw)
    assert (info.value.parameter, info.value.message) == (parameter, message)


def test_a_non_empty_new_run_dir_is_refused(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "x").write_text("")
    e = _error(task="noisy_bowl", run_dir=tmp_path / "r")
    assert e.parameter == "run_dir" and "is not empty" in e.message


def test_resume_takes_what_is_unspecified_from_the_manifest(resumable):
    plan = make_plan(run_dir=resumable.run_dir, resume=True)
    assert plan == Plan(**{**resumable.__dict__, "resume": True, "full_runs": False})


@pytest.mark.parametrize("kw,parameter,message", [
    ({"task": "rosenbrock"}, "task", "{r} is a run of task 'noisy_bowl', not 'rosenbrock'"),
    ({"seed": 0}, "seed", "{r} was run with seed 3, not 0"),
    ({"optimizers": ["Adam"]}, "optimizers", "{r} runs Adam, LODO, not Adam"),
    ({"schedule_overrides": {"population": 4}}, "schedule", "{r} was run with another schedule"),
    ({"hyperparameters": "tuned"}, "hyperparameters", "{r} was run with hyperparameters 'given'"),
    ({"hyperparameters": {"Adam": {"lr": 0.1}, "LODO": {"lr": 0.3}}}, "hyperparameters",
     "{r} was run with hyperparameters 'given' (other values)"),
])
def test_resume_refuses_what_does_not_match_the_manifest(resumable, kw, parameter, message):
    e = _error(run_dir=resumable.run_dir, resume=True, **kw)
    assert (e.parameter, e.message) == (parameter, message.format(r=repr(str(resumable.run_dir))))


def test_resume_of_a_non_run_dir_names_the_run_dir(tmp_path):
    e = _error(run_dir=tmp_path, resume=True)
    assert (e.parameter, e.message) == ("run_dir", f"'{tmp_path}' is not a run directory (no manifest.json)")
