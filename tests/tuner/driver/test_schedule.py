"""Tuning schedules: the bundled YAMLs hold Table 5 (docs/paper.md §4), overrides, validation errors."""
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from tuner.driver.plan import PlanError, make_plan

from tuner.search.ga import GeneticAlgorithm
from tuner.driver.schedule import Schedule, ScheduleError, bundled, load_schedule, space_for
from tuner.search.space import ga_keywords

BAD = Path(__file__).resolve().parents[2] / "bad_schedules"
STANDARD = [3, 3, 3, 3, 2, 1.7, 1.4, 1.2, 0.9, 0.6]

# Table 5 written out from docs/paper.md §4: (noise σ, steps) for generations 0..9.
TABLE_5 = {
    "noisy_bowl": list(zip(STANDARD, [1000] * 4 + [1500, 1500, 2000, 3000, 5000, 8000])),
    "rosenbrock": list(zip([3, 3, 3, 2.5, 2, 1.5, 1, 0.75, 0.5, 0.3], [200] * 10)),
    "image_generation": list(zip(STANDARD, [1000] * 4 + [1500, 1500, 2000, 3000, 5000, 8000])),
    "resnet18_cifar10": list(zip(STANDARD, [50] * 6 + [100, 200, 300, 500])),
}
# docs/paper.md §4 / the issue: population, optimizers tuned by default, full runs, lr scale.
RUNS = {
    "noisy_bowl": (32, ["Adam", "Momentum", "RMSprop", "Yogi", "L-BFGS", "O-LBFGS", "LODO", "L2LBGDBGD"],
                   (100000, 8, 300), 1.0),
    "rosenbrock": (32, ["Adam", "Momentum", "RMSprop", "Yogi", "LODO"], (200, 8, None), 1.0),
    "image_generation": (32, ["Adam", "Momentum", "RMSprop", "Yogi", "LARS", "LODO", "LODO-Diagonal",
                              "LODO-Global", "LODO-Residuals", "LODO-No-Momentum", "LODO-SGD"],
                         (300000, 8, 50000), 0.5),
    "resnet18_cifar10": (16, ["Adam", "Momentum", "RMSprop", "Yogi", "LARS", "LODO"], (3000, 8, 24000), 1.0),
}

# A stand-in optimizer registry (docs/paper.md §2's names, defaults and scales) so the error corpus does
# not depend on what lodo/registry.py happens to list.
H = namedtuple("Hyperparameter", "name default scale")
STAND_IN = {
    "Adam": [H("lr", 1e-3, "log"), H("beta1", 0.9, "decay"), H("beta2", 0.999, "decay")],
    "Momentum": [H("lr", 0.01, "log"), H("momentum", 0.0, "decay")],
    "RMSprop": [H("lr", 1e-3, "log"), H("rho", 0.9, "decay"), H("momentum", 0.0, "decay")],
}


class StandIn:
    available = staticmethod(lambda: list(STAND_IN))
    hyperparameters = staticmethod(lambda name: STAND_IN[name])


TASKS = ["noisy_bowl", "rosenbrock", "image_generation", "resnet18_cifar10"]


@pytest.mark.parametrize("name", list(TABLE_5))
def test_bundled_schedule_matches_table_5(name):
    schedule = load_schedule(name)  # validated against the real lodo registry and tasks
    population, optimizers, full_run, lr_scale = RUNS[name]
    assert schedule.task == name
    assert [(g.noise, g.steps) for g in schedule.generations] == TABLE_5[name]
    assert schedule.population == population
    assert list(schedule.optimizers) == optimizers
    assert tuple(schedule.full_run) == full_run
    assert schedule.lr_scale == lr_scale


def test_every_bundled_schedule_is_listed():
    assert bundled() == sorted(list(TABLE_5) + ["noisy_bowl-improved", "rosenbrock-improved"])


def test_bare_name_and_path_load_the_same_schedule(tmp_path):
    copy = tmp_path / "mine.yaml"
    shutil.copy(Path(__file__).resolve().parents[3] / "schedules" / "rosenbrock.yaml", copy)
    assert load_schedule(copy) == load_schedule(str(copy)) == load_schedule("rosenbrock")
    assert load_schedule(copy).source == str(copy)


def test_unknown_bare_name_lists_the_bundled_schedules():
    with pytest.raises(ScheduleError, match="no such schedule .*bundled: image_generation, noisy_bowl"):
        load_schedule("rosenbrok", registry=StandIn, task_names=TASKS)


def test_missing_file_is_a_schedule_error(tmp_path):
    with pytest.raises(ScheduleError, match="cannot be read"):
        load_schedule(tmp_path / "absent.yaml", registry=StandIn, task_names=TASKS)


def test_overrides_replace_fields_and_merge_mappings():
    schedule = load_schedule("noisy_bowl", {"population": 4, "generations": [{"noise": 1.0, "steps": 10}],
                                            "full_run": {"steps": 1000}, "start": {"Adam": {"lr": 0.5}}})
    assert schedule.population == 4
    assert [tuple(g[:2]) for g in schedule.generations] == [(1.0, 10)] and schedule.generations[0].population is None
    assert tuple(schedule.full_run) == (1000, 8, 300)  # seeds and milestone kept from the file
    assert schedule.start == {"Adam": {"lr": 0.5}}
    assert load_schedule("noisy_bowl").population == 32  # the bundled file is untouched


@pytest.mark.parametrize("overrides, message", [
    ({"population": 1}, "schedules/rosenbrock.yaml (with overrides): population: 1 is not allowed"),
    ({"full_run": {"steps": 0}}, "full_run.steps: 0"),
    ({"popsize": 4}, "popsize: unknown key"),
])
def test_overrides_are_validated_and_named(overrides, message):
    with pytest.raises(ScheduleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_schedule("rosenbrock", overrides)


def test_to_dict_round_trips_through_from_dict():
    schedule = load_schedule("image_generation", {"scales": {"RMSprop": {"rho": "log"}}})
    data = schedule.to_dict()
    assert data["generations"][5] == {"noise": 1.7, "steps": 1500}
    assert data["full_run"] == {"steps": 300000, "seeds": 8, "time_milestone_s": 50000}
    assert Schedule.from_dict(data) == schedule


def test_space_for_applies_scale_overrides_and_start_values():
    schedule = load_schedule("noisy_bowl", {"optimizers": ["Adam", "RMSprop"], "scales": {"RMSprop": {"rho": "log"}},
                                            "start": {"RMSprop": {"lr": 0.01}}}, registry=StandIn)
    space = space_for(schedule, "RMSprop", registry=StandIn)
    assert [tuple(d) for d in space] == [("lr", 0.01, "log"), ("rho", 0.9, "log"), ("momentum", 0.0, "decay")]
    assert [tuple(d) for d in space_for(schedule, "Adam", registry=StandIn)] == [tuple(h) for h in STAND_IN["Adam"]]
    with pytest.raises(ScheduleError, match="'Yogi' is not allowed"):
        space_for(schedule, "Yogi", registry=StandIn)


def test_start_value_must_fit_the_overridden_scale():
    # rho = 0 is a valid decay value but not a valid log value
    with pytest.raises(ScheduleError, match=r"start.RMSprop.rho: 0.0 is not allowed \(must be > 0"):
        load_schedule("rosenbrock", {"optimizers": ["RMSprop"], "scales": {"RMSprop": {"rho": "log"}},
                                     "start": {"RMSprop": {"rho": 0.0}}}, registry=StandIn)


def test_schedule_drives_the_genetic_algorithm():
    schedule = load_schedule("resnet18_cifar10", {"optimizers": ["Adam"]}, registry=StandIn, task_names=TASKS)
    ga = GeneticAlgorithm(space_for(schedule, "Adam", registry=StandIn), schedule.generations,
                          schedule.population, name="Adam")
    steps = []
    while not ga.done:
        individuals = ga.ask()
        assert len(individuals) == 16
        steps.append(individuals[0].steps)
        ga.tell([float(i.index) for i in individuals])
    assert steps == [s for _, s in TABLE_5["resnet18_cifar10"]]


def test_malformed_corpus_covers_the_required_cases():
    names = {p.stem for p in BAD.glob("*.yaml")}
    assert len(names) >= 12
    assert {"unknown_key", "wrong_type_population", "negative_steps", "zero_steps", "population_one",
            "negative_noise", "empty_generations", "unknown_optimizer", "unknown_hyperparameter_in_scales",
            "bad_scale_name", "non_mapping_top_level", "invalid_yaml_syntax"} <= names


@pytest.mark.parametrize("path", sorted(BAD.glob("*.yaml")), ids=lambda p: p.stem)
def test_malformed_schedule_raises_one_line_error_naming_file_and_field(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# field: "), f"{path.name} must start with '# field: ...'"
    field = first.removeprefix("# field: ")
    try:
        load_schedule(path, registry=StandIn, task_names=TASKS)
    except ScheduleError:
        pass
    else:  # a value the schedule's shape allows, which the plan checks against the task itself
        assert field.startswith("task_options."), f"{path.name} loads"
        with pytest.raises(PlanError) as error:
            make_plan(task="noisy_bowl", schedule=str(path))
        assert error.value.parameter == field and "\n" not in str(error.value)
        return
    with pytest.raises(ScheduleError) as error:
        load_schedule(path, registry=StandIn, task_names=TASKS)
    message = str(error.value)
    assert isinstance(error.value, ValueError)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    rest = message.removeprefix(f"{path}: ")
    assert rest.startswith((f"{field}:", f"{field},")), f"{message!r} does not name {field!r} first"


BROAD = {"generations": [{"noise": 1, "steps": 2000, "population": 48}] + [{"noise": n, "steps": 8000} for n in
                         (1, 0.85, 0.7, 0.6, 0.5, 0.42, 0.35, 0.3, 0.25, 0.2, 0.16)],
         "ga": {"init": "elite", "trial_seeds": "common", "final": "mean"}}  # benchmarks/RESULTS.md, "Second iteration"


def test_a_generation_of_its_own_size_counts_in_every_budget_and_round_trips():
    """The broad GA of RESULTS.md: 48 × 2,000 + 11 × 12 × 8,000 individual-steps (by hand), the same
    budget for the other searchers (144 trials of 8,000 steps), and its GA asks 48 then 12."""
    from tuner.search.optuna import rounds

    schedule = load_schedule("noisy_bowl-improved", BROAD)
    assert schedule.generations[0].population == 48 and schedule.generations[1].population is None
    assert schedule.individual_steps() == 48 * 2000 + 11 * 12 * 8000 == 1_152_000
    searched = load_schedule("noisy_bowl-improved", {**BROAD, "search": {"searcher": "random"}})
    assert sum(r.size for r in rounds(searched)) == 1_152_000 // 8000
    data = schedule.to_dict()
    assert data["generations"][0] == {"noise": 1, "steps": 2000, "population": 48}
    assert data["generations"][1] == {"noise": 1, "steps": 8000}
    assert Schedule.from_dict(data) == schedule
    assert schedule.ga == {"init": "elite", "step_size": "csa", "covariance": "rank_mu", "trial_seeds": "common",
                           "final": "mean", "boundary": "clip"}
    ga = GeneticAlgorithm(space_for(schedule, "Adam"), schedule.generations, schedule.population, name="Adam",
                          **ga_keywords(schedule, "Adam"))
    sizes = []
    while not ga.done:
        individuals = ga.ask()
        sizes.append(len(individuals))
        ga.tell([float(i.index) for i in individuals])
    assert sizes == [48] + [12] * 11
