"""GASearcher: the GA behind Ray Tune's Searcher interface tunes a trivial Tune trainable."""
import math
import sys

import pytest

from tuner.search.ga import GeneticAlgorithm
from tuner.search.tune import GASearcher

SPACE = [("lr", 1.0, "log"), ("beta", 0.5, "decay")]
GENERATIONS = [(2.0, 10), (1.0, 20)]


def objective(config) -> float:
    """A bowl in rescaled space with its minimum at lr = 0.1, beta = 0.9."""
    return (math.log(config["lr"]) - math.log(0.1)) ** 2 + (math.log1p(-config["beta"]) - math.log(0.1)) ** 2


def reference_mean():
    """The same GA driven directly (ask/tell), without Tune."""
    ga = GeneticAlgorithm(SPACE, GENERATIONS, population=4, seed=7)
    while not ga.done:
        ga.tell({i.index: objective(i.hparams) for i in ga.ask()})
    return ga.mean


@pytest.mark.slow  # end to end through Ray or a CLI subprocess: `make test-slow`
def test_tune_run_with_ga_searcher_matches_the_ga_driven_directly(ray_session, tmp_path):
    import ray
    from ray import tune

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not importable on workers

    def trainable(config):
        assert config["ga_steps"] in (10, 20)
        return {"loss": objective(config)}

    searcher = GASearcher(SPACE, GENERATIONS, population=4, metric="loss", mode="min", seed=7)
    tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=8),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0))
    results = tuner.fit()
    assert len(results) == 8 and not results.errors
    assert searcher.ga.done and searcher.mean == reference_mean()


def test_mode_max_negates_and_errors_rank_last():
    s = GASearcher([("lr", 1.0, "log")], [(1.0, 5)], population=2, metric="score", mode="max", seed=0)
    a, b = s.suggest("a"), s.suggest("b")
    assert s.suggest("c") is None  # the generation is fully handed out: wait
    s.on_trial_complete("a", {"score": 3.0})
    s.on_trial_complete("b", None, error=True)
    hist = s.ga.history[0]["individuals"]
    assert [i["fitness"] for i in hist] == [-3.0, math.inf]
    assert s.mean["lr"] == pytest.approx(a["lr"], rel=1e-12)  # better half = the one that scored
    assert s.suggest("d") == GASearcher.FINISHED and b["ga_steps"] == 5


def test_save_and_restore_continue_identically(tmp_path):
    s = GASearcher(SPACE, GENERATIONS, population=4, metric="loss", mode="min", seed=7)
    cfg = {f"t{k}": s.suggest(f"t{k}") for k in range(4)}
    s.on_trial_complete("t0", {"loss": objective(cfg["t0"])})
    s.save(str(tmp_path / "ckpt"))
    r = GASearcher(SPACE, GENERATIONS, population=4, metric="loss", mode="min", seed=0)
    r.restore(str(tmp_path / "ckpt"))
    for x in (s, r):
        for k in (1, 2, 3):
            x.on_trial_complete(f"t{k}", {"loss": objective(cfg[f"t{k}"])})
    assert r.mean == s.mean and r.ga.generation == 1 and r.ga.history == s.ga.history
