"""The GA's options are validated once, by `tuner.search.ga.GAConfig`: the GA and a schedule's `ga:`
mapping refuse the same values with the same words, and the presets are the bundled schedules'."""
import dataclasses
import subprocess
import sys

import pytest

from tuner.search.ga import GAConfig, GAOptionError, GeneticAlgorithm
from tuner.driver.schedule import ScheduleError, load_schedule

SPACE = [("lr", 1e-3, "log"), ("beta1", 0.9, "decay")]
BAD = [  # (options, field, what the message must say)
    (dict(init="broad"), "init", "must be one of mean, uniform, elite"),
    (dict(step_size="1/5"), "step_size", "must be one of schedule, csa"),
    (dict(covariance="full"), "covariance", "must be one of identity, rank_mu"),
    (dict(seeds=0), "seeds", "must be an integer >= 1"),
    (dict(seeds=1.5), "seeds", "must be an integer >= 1"),
    (dict(seeds=True), "seeds", "must be an integer >= 1"),
    (dict(trial_seeds="shared"), "trial_seeds", "must be one of individual, common"),
    (dict(final="best"), "final", "must be one of mean, finalists"),
    (dict(recombination="best_only"), "recombination", "must be one of equal, weighted"),
    (dict(boundary="reflect"), "boundary", "must be one of free, clip"),
    (dict(init="elite"), "init", "needs covariance: rank_mu"),
]


@pytest.mark.parametrize("options, field, allowed", BAD, ids=lambda x: str(x))
def test_the_ga_and_a_schedule_refuse_a_bad_option_with_the_same_words(options, field, allowed):
    with pytest.raises(GAOptionError) as direct:
        GeneticAlgorithm(SPACE, [(1.0, 10), (0.5, 10)], 4, **options)
    assert str(direct.value).startswith(f"Invalid {field}: ") and allowed in str(direct.value)
    with pytest.raises(ScheduleError) as scheduled:
        load_schedule("rosenbrock", {"ga": options})
    message = str(scheduled.value)
    assert f": ga.{field}: " in message and f"({direct.value.allowed})" in message and "\n" not in message


def test_finalists_need_a_generation_of_their_own_in_both():
    with pytest.raises(GAOptionError, match="Invalid final: 'finalists' .*at least 2 generations"):
        GeneticAlgorithm(SPACE, [(1.0, 10)], 4, final="finalists")
    with pytest.raises(ScheduleError, match=r"ga\.final: 'finalists' is not allowed \(needs at least 2 generations"):
        load_schedule("rosenbrock", {"ga": {"final": "finalists"}, "generations": [{"noise": 1, "steps": 200}]})
    GeneticAlgorithm(SPACE, [(1.0, 10), (0.0, 50)], 4, final="finalists")  # two rows: allowed


def test_the_improved_preset_is_the_bundled_improved_schedule():
    assert GAConfig(**load_schedule("noisy_bowl-improved").ga) == GAConfig.improved()
    assert GAConfig.improved() != GAConfig.paper() and not GAConfig.improved().is_paper


def test_the_paper_preset_is_the_ga_without_options():
    assert GAConfig.paper().is_paper and load_schedule("noisy_bowl").ga == {}
    plain = GeneticAlgorithm(SPACE, [(2.0, 10), (1.0, 10)], 4, seed=3)
    preset = GeneticAlgorithm(SPACE, [(2.0, 10), (1.0, 10)], 4, seed=3, **dataclasses.asdict(GAConfig.paper()))
    for ga in (plain, preset):
        while not ga.done:
            ga.tell([float(i) for i in range(ga.evaluations)])
    assert plain.to_json() == preset.to_json() and '"init"' not in plain.to_json()  # Appendix E's keys only


def test_a_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        GAConfig().init = "uniform"


def test_the_ga_module_imports_neither_torch_nor_ray():
    code = "import sys, tuner.search.ga; print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_a_config_object_is_the_same_ga_as_its_keywords():
    generations = [(1.0, 10, 8), (0.8, 10), (0.5, 10), (0.0, 40, 3)]
    by_object = GeneticAlgorithm(SPACE, generations, 6, seed=2, config=GAConfig.improved())
    by_keywords = GeneticAlgorithm(SPACE, generations, 6, seed=2, **dataclasses.asdict(GAConfig.improved()))
    for ga in (by_object, by_keywords):
        while not ga.done:
            ga.tell({i.index: abs(i.hparams["lr"] - 0.01) + i.hparams["beta1"] for i in ga.ask()})
    assert by_object.config == GAConfig.improved() and by_object.to_json() == by_keywords.to_json()
    with pytest.raises(ValueError, match="Invalid config"):
        GeneticAlgorithm(SPACE, generations, 6, config=GAConfig.improved(), step_size="csa")
    with pytest.raises(ValueError, match="Invalid config"):
        GeneticAlgorithm(SPACE, generations, 6, config={"init": "uniform"})
