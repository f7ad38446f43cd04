"""The Appendix-E genetic algorithm (docs/paper.md §4): rescaling, selection, seeding, JSON state, convergence.

References are computed here independently: the rescaling formulas written out with `math`, the
better half sorted by hand, the optimum of a quadratic known in closed form.
"""
import json
import math
import os
import subprocess
import sys
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuner.search.ga import GeneticAlgorithm, Individual, individual_seed, rescale, unrescale

SPACE = [("lr", 1e-3, "log"), ("beta1", 0.9, "decay"), ("beta2", 0.999, "decay")]
BELOW_ONE = 1.0 - 2.0**-53


def u_of(x, scale):
    """Appendix E written out: u = ln x (log), u = 1 − ln(1 − x) (decay)."""
    return math.log(x) if scale == "log" else 1.0 - math.log(1.0 - x)


def x_of(u, scale):
    """Appendix E's inverse: x = e^u (log), x = 1 − e^(1 − u) clipped at 0 (decay)."""
    return math.exp(u) if scale == "log" else max(0.0, 1.0 - math.exp(1.0 - u))


def reference_next_mean(individuals, fitness, space):
    """Mean in rescaled space of the population // 2 best individuals, finite fitness only, ties by index."""
    finite = sorted((f, ind.index) for ind, f in zip(individuals, fitness) if math.isfinite(f))
    chosen = [i for _, i in finite[: len(individuals) // 2]]
    if not chosen:
        return None, []
    mean = {name: sum(u_of(individuals[i].hparams[name], scale) for i in chosen) / len(chosen)
            for name, _, scale in space}
    return mean, chosen


fitness_values = st.one_of(st.floats(-1e6, 1e6), st.sampled_from([math.nan, math.inf, -math.inf]))
fast = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- rescaling ------------------------------------------------------------------------------

def test_rescaling_matches_appendix_e_at_known_points():
    assert rescale(1.0, "log") == 0.0
    assert rescale(math.e, "log") == pytest.approx(1.0, rel=1e-15)
    assert rescale(0.0, "decay") == 1.0
    assert rescale(1.0 - math.exp(-1.0), "decay") == pytest.approx(2.0, rel=1e-15)
    assert unrescale(2.0, "decay") == pytest.approx(1.0 - 1.0 / math.e, rel=1e-15)
    assert unrescale(-3.0, "log") == pytest.approx(math.exp(-3.0), rel=1e-15)


@fast
@given(st.floats(1e-300, 1e300))
def test_log_rescaling_round_trips(x):
    assert rescale(x, "log") == pytest.approx(math.log(x), rel=1e-15, abs=1e-300)
    assert unrescale(rescale(x, "log"), "log") == pytest.approx(x, rel=1e-13)


@fast
@given(st.one_of(st.floats(0.0, BELOW_ONE), st.sampled_from([0.0, 5e-324, 1e-17, 0.5, 0.9999999, BELOW_ONE])))
def test_decay_rescaling_round_trips(x):
    u = rescale(x, "decay")
    assert u >= 1.0
    assert u == pytest.approx(u_of(x, "decay"), rel=1e-15, abs=1e-15)
    back = unrescale(u, "decay")
    # u = 1 + x rounds at ulp(1) near x = 0; near 1 the relative error is on 1 − x.
    assert abs(back - x) <= 2.3e-16 + 1e-14 * (1.0 - x)
    assert 0.0 <= back < 1.0


@fast
@given(st.floats(allow_nan=False))
def test_decay_inverse_stays_in_zero_one_and_clips_below_one(u):
    x = unrescale(u, "decay")
    assert 0.0 <= x < 1.0
    if u <= 1.0:
        assert x == 0.0


@fast
@given(st.floats(allow_nan=False))
def test_log_inverse_is_positive_and_finite_for_any_u(u):
    x = unrescale(u, "log")
    assert 0.0 < x < math.inf
    if -700.0 < u < 700.0:
        assert x == pytest.approx(math.exp(u), rel=1e-15)


def test_extreme_decay_coordinates_give_largest_double_below_one():
    assert unrescale(1e6, "decay") == BELOW_ONE
    assert unrescale(math.inf, "decay") == BELOW_ONE
    assert unrescale(0.5, "decay") == 0.0
    assert unrescale(-math.inf, "decay") == 0.0


@pytest.mark.parametrize("x, scale", [(0.0, "log"), (-1.0, "log"), (math.inf, "log"), (math.nan, "log"),
                                      (1.0, "decay"), (-0.1, "decay"), (1.5, "decay"), (0.5, "linear")])
def test_invalid_values_are_rejected(x, scale):
    with pytest.raises(ValueError, match="Invalid"):
        rescale(x, scale)


# --- generation 0 and individuals ------------------------------------------------------------

def test_generation_zero_mean_is_the_defaults_or_start_values():
    assert GeneticAlgorithm(SPACE, [(3.0, 10)], 4).mean == pytest.approx({"lr": 1e-3, "beta1": 0.9, "beta2": 0.999})
    ga = GeneticAlgorithm(SPACE, [(3.0, 10)], 4, start={"lr": 0.5})
    assert ga.mean == pytest.approx({"lr": 0.5, "beta1": 0.9, "beta2": 0.999})


def test_zero_noise_individuals_sit_on_the_mean_with_the_schedules_steps():
    ga = GeneticAlgorithm(SPACE, [(0.0, 123), (1.0, 7)], 4)
    individuals = ga.ask()
    assert [i.index for i in individuals] == [0, 1, 2, 3]
    assert all(isinstance(i, Individual) and i.steps == 123 and i.generation == 0 for i in individuals)
    for ind in individuals:
        assert ind.hparams == pytest.approx({"lr": 1e-3, "beta1": 0.9, "beta2": 0.999}, rel=1e-14)


def test_individual_noise_has_the_schedules_std_in_rescaled_space():
    sigma, population = 2.0, 2000
    ga = GeneticAlgorithm(SPACE, [(sigma, 1)], population, seed=3)
    for name, default, scale in SPACE[:1]:  # log: no clipping, so the std is exactly σ
        deviations = [u_of(i.hparams[name], scale) - u_of(default, scale) for i in ga.ask()]
        mean = sum(deviations) / population
        std = math.sqrt(sum((d - mean) ** 2 for d in deviations) / (population - 1))
        assert abs(mean) < 4 * sigma / math.sqrt(population)
        assert std == pytest.approx(sigma, rel=0.06)


def test_ask_returns_the_same_individuals_until_tell():
    ga = GeneticAlgorithm(SPACE, [(3.0, 10), (2.0, 10)], 6, seed=1, name="Adam")
    first = ga.ask()
    assert ga.ask() == first
    ga.tell([1.0] * 6)
    assert ga.ask() != first and ga.ask()[0].generation == 1


def test_seeds_differ_across_index_generation_name_and_tuner_seed():
    seeds = {individual_seed(0, "Adam", g, i) for g in range(10) for i in range(32)}
    assert len(seeds) == 320
    assert all(0 <= s < 2**32 for s in seeds)
    assert individual_seed(0, "Adam", 0, 0) != individual_seed(0, "Yogi", 0, 0)
    assert individual_seed(0, "Adam", 0, 0) != individual_seed(1, "Adam", 0, 0)


def test_individuals_do_not_depend_on_python_hash_salt():
    code = ("import json; from tuner.search.ga import GeneticAlgorithm as G; "
            f"ga = G({SPACE!r}, [(3.0, 5)], 5, seed=7, name='LODO-Residuals'); "
            "print(json.dumps([[i.seed, i.hparams] for i in ga.ask()]))")
    outputs = []
    for salt in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=salt)
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        outputs.append(json.loads(run.stdout))
    here = GeneticAlgorithm(SPACE, [(3.0, 5)], 5, seed=7, name="LODO-Residuals").ask()
    assert outputs[0] == outputs[1] == [[i.seed, i.hparams] for i in here]


def test_ga_imports_neither_torch_nor_ray():
    code = "import sys, tuner.search.ga; print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


# --- selection ------------------------------------------------------------------------------

@fast
@given(population=st.integers(2, 12), sigma=st.floats(0.0, 3.0), seed=st.integers(0, 2**32),
       data=st.data())
def test_next_mean_is_the_rescaled_mean_of_the_better_half(population, sigma, seed, data):
    ga = GeneticAlgorithm(SPACE, [(sigma, 10), (sigma, 10)], population, seed=seed)
    individuals = ga.ask()
    fitness = data.draw(st.lists(fitness_values, min_size=population, max_size=population))
    expected, chosen = reference_next_mean(individuals, fitness, SPACE)
    before = ga.mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        new = ga.tell(fitness)
    if expected is None:
        assert new == before
        return
    assert ga.history[-1]["selected"] == chosen
    for name, _, scale in SPACE:
        assert ga.mean_rescaled[name] == pytest.approx(expected[name], rel=1e-12, abs=1e-12)
        assert new[name] == pytest.approx(x_of(expected[name], scale), rel=1e-12, abs=1e-15)


@fast
@given(population=st.integers(2, 12), seed=st.integers(0, 2**32), data=st.data())
def test_diverged_individuals_never_move_the_mean(population, seed, data):
    """Whatever non-finite value a diverged individual reports, it is never selected and the mean
    is the same as when it reports any other non-finite value."""
    fitness = data.draw(st.lists(st.floats(-1e6, 1e6), min_size=population, max_size=population))
    diverged = data.draw(st.sets(st.integers(0, population - 1), max_size=population - 1))
    means = []
    for bad in (math.nan, math.inf, -math.inf):
        ga = GeneticAlgorithm(SPACE, [(2.0, 10)], population, seed=seed)
        told = [bad if i in diverged else f for i, f in enumerate(fitness)]
        means.append(ga.tell(told))
        assert not set(ga.history[-1]["selected"]) & diverged
    assert means[0] == means[1] == means[2]


def test_negative_infinity_ranks_last_not_first():
    ga = GeneticAlgorithm(SPACE, [(3.0, 10)], 4, seed=0)
    individuals = ga.ask()
    ga.tell([-math.inf, 2.0, 1.0, 3.0])
    assert ga.history[-1]["selected"] == [2, 1]
    expected, _ = reference_next_mean(individuals, [math.inf, 2.0, 1.0, 3.0], SPACE)
    assert ga.mean_rescaled == pytest.approx(expected, rel=1e-12)


def test_no_finite_individual_keeps_the_mean_warns_and_flags_history():
    ga = GeneticAlgorithm(SPACE, [(3.0, 10), (3.0, 10)], 4, seed=0, name="Adam")
    before = ga.mean
    with pytest.warns(RuntimeWarning, match="no individual has a finite fitness"):
        after = ga.tell({0: math.nan, 1: math.inf, 2: -math.inf, 3: math.nan})
    assert after == before and ga.generation == 1
    assert ga.history[-1]["no_finite"] is True and ga.history[-1]["selected"] == []
    ga.tell([1.0, 2.0, 3.0, 4.0])
    assert ga.history[-1]["no_finite"] is False


@fast
@given(seed=st.integers(0, 2**32), order=st.randoms(use_true_random=False))
def test_results_do_not_depend_on_the_order_results_are_told_in(seed, order):
    a = GeneticAlgorithm(SPACE, [(3.0, 10), (2.0, 10), (1.0, 10)], 8, seed=seed, name="Adam")
    b = GeneticAlgorithm(SPACE, [(3.0, 10), (2.0, 10), (1.0, 10)], 8, seed=seed, name="Adam")
    while not a.done:
        assert a.ask() == b.ask()
        fitness = [sum(u_of(i.hparams[n], s) ** 2 for n, _, s in SPACE) for i in a.ask()]
        indices = list(range(8))
        order.shuffle(indices)
        a.tell(fitness)
        b.tell({i: fitness[i] for i in indices})
    assert a.to_json() == b.to_json()


def test_tell_requires_every_index_of_the_generation():
    ga = GeneticAlgorithm(SPACE, [(3.0, 10)], 4)
    with pytest.raises(ValueError, match=r"missing \[3\]"):
        ga.tell({0: 1.0, 1: 2.0, 2: 3.0})
    with pytest.raises(ValueError, match=r"unexpected \[4\]"):
        ga.tell([1.0] * 5)
    ga.tell([1.0] * 4)
    assert ga.done
    with pytest.raises(RuntimeError, match="nothing left to ask"):
        ga.ask()
    with pytest.raises(RuntimeError, match="nothing left to tell"):
        ga.tell([1.0] * 4)


@pytest.mark.parametrize("kwargs, field", [
    (dict(population=1), "population"), (dict(population=2.5), "population"),
    (dict(seed=-1), "seed"), (dict(generations=[]), "generations"),
    (dict(generations=[(-1.0, 10)]), r"generations\[0\] noise"),
    (dict(generations=[(1.0, 10), (1.0, 0)]), r"generations\[1\] steps"),
    (dict(start={"lr": -1.0}), "start value for lr"), (dict(start={"eps": 1.0}), "start"),
    (dict(space=[("beta", 1.0, "decay")]), "default for beta"), (dict(space=[("lr", 1.0, "lin")]), "scale for lr"),
])
def test_invalid_arguments_raise_one_line_errors_naming_the_field(kwargs, field):
    args = dict(space=SPACE, generations=[(1.0, 10)], population=4) | kwargs
    with pytest.raises(ValueError, match=field) as error:
        GeneticAlgorithm(**args)
    assert "\n" not in str(error.value)


def test_space_accepts_objects_with_name_default_scale():
    from collections import namedtuple
    H = namedtuple("Hyperparameter", "name default scale")
    a = GeneticAlgorithm([H(*d) for d in SPACE], [(3.0, 10)], 4, seed=2).ask()
    assert a == GeneticAlgorithm(SPACE, [(3.0, 10)], 4, seed=2).ask()


# --- JSON state ------------------------------------------------------------------------------

def _strict_json(text):
    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


@fast
@given(seed=st.integers(0, 2**32), told=st.integers(0, 3), data=st.data())
def test_json_round_trip_is_exact_mid_run_and_continues_identically(seed, told, data):
    generations = [(3.0, 10), (1.5, 20), (0.7, 30), (0.2, 40)]
    ga = GeneticAlgorithm(SPACE, generations, 6, seed=seed, name="Yogi", start={"beta2": 0.99})
    fitness = [data.draw(st.lists(fitness_values, min_size=6, max_size=6)) for _ in generations]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for g in range(told):
            ga.tell(fitness[g])
        text = ga.to_json()
        _strict_json(text)
        restored = GeneticAlgorithm.from_json(text)
        assert restored.to_json() == text
        assert restored.generation == ga.generation and restored.mean == ga.mean
        for h, r in zip(ga.history, restored.history):
            got = [ind["fitness"] for ind in r["individuals"]]
            want = [ind["fitness"] for ind in h["individuals"]]
            assert all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(got, want))
        for g in range(told, len(generations)):
            assert restored.ask() == ga.ask()
            assert restored.tell(fitness[g]) == ga.tell(fitness[g])
    assert restored.to_json() == ga.to_json() and restored.done


def test_json_restores_non_finite_fitness_exactly():
    ga = GeneticAlgorithm(SPACE, [(3.0, 10)], 4)
    ga.tell([math.inf, -math.inf, math.nan, 0.1 + 0.2])
    fitness = [i["fitness"] for i in GeneticAlgorithm.from_json(ga.to_json()).history[0]["individuals"]]
    assert fitness[:2] == [math.inf, -math.inf] and math.isnan(fitness[2]) and fitness[3] == 0.1 + 0.2


def test_history_records_means_in_both_scales_and_every_individual():
    ga = GeneticAlgorithm(SPACE, [(3.0, 10)], 4, seed=5)
    individuals = ga.ask()
    ga.tell([4.0, 3.0, 2.0, 1.0])
    h = ga.history[0]
    assert h["mean"] == pytest.approx({"lr": 1e-3, "beta1": 0.9, "beta2": 0.999})
    assert h["mean_rescaled"] == pytest.approx({n: u_of(d, s) for n, d, s in SPACE})
    assert [i["hparams"] for i in h["individuals"]] == [i.hparams for i in individuals]
    assert [i["seed"] for i in h["individuals"]] == [i.seed for i in individuals]
    assert [i["fitness"] for i in h["individuals"]] == [4.0, 3.0, 2.0, 1.0]
    assert h["next_mean"] == ga.mean and h["noise"] == 3.0 and h["steps"] == 10


# --- convergence -----------------------------------------------------------------------------

OPTIMUM = {"lr": 0.05, "beta1": 0.95, "beta2": 1.0 - math.exp(-1.0)}  # u* = (ln 0.05, 4, 2)


@pytest.mark.parametrize("schedule", ["rosenbrock", "noisy_bowl"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_reaches_the_optimum_of_a_quadratic_in_rescaled_space(schedule, seed):
    """f(x) = Σ (u(x) − u*)², started from the defaults (≈ 3.9, 0.7, 5.9 away in u): after the
    bundled schedule every rescaled coordinate of the mean is within the final noise σ of u*."""
    from tuner.driver.schedule import load_schedule

    plan = load_schedule(schedule)
    ga = GeneticAlgorithm(SPACE, plan.generations, plan.population, seed=seed, name="quadratic")
    target = {n: u_of(OPTIMUM[n], s) for n, _, s in SPACE}
    while not ga.done:
        ga.tell([sum((u_of(i.hparams[n], s) - target[n]) ** 2 for n, _, s in SPACE) for i in ga.ask()])
    final_sigma = plan.generations[-1].noise
    for name, _, scale in SPACE:
        assert abs(u_of(ga.best()[name], scale) - target[name]) < final_sigma


def _tune_adam_on_rosenbrock(population):
    from tuner.driver.schedule import load_schedule, space_for
    from tuner.trial.loop import run_trial

    plan = load_schedule("rosenbrock")
    space = space_for(plan, "Adam")
    ga = GeneticAlgorithm(space, plan.generations, population, seed=0, name="Adam")
    while not ga.done:
        ga.tell({i.index: run_trial("rosenbrock", "Adam", i.hparams, i.steps, i.seed).final_loss for i in ga.ask()})
    default = run_trial("rosenbrock", "Adam", {d.name: d.default for d in space}, 200, 0).final_loss
    tuned = run_trial("rosenbrock", "Adam", ga.best(), 200, 0).final_loss
    return default, tuned, ga.best()


def test_tuning_adam_on_rosenbrock_with_few_individuals_cuts_the_loss_tenfold():
    """Table 5's Rosenbrock schedule with 8 instead of 32 individuals (≈ 4 s)."""
    default, tuned, _ = _tune_adam_on_rosenbrock(population=8)
    assert tuned * 10 <= default


@pytest.mark.slow
def test_tuning_adam_on_rosenbrock_with_the_bundled_schedule_cuts_the_loss_tenfold():
    """The full Table 5 Rosenbrock schedule, 32 individuals × 10 generations × 200 steps (≈ 20 s).
    The tuned lr lands near Table 6's 0.9704 (within a factor of 4)."""
    default, tuned, best = _tune_adam_on_rosenbrock(population=32)
    assert tuned * 10 <= default
    assert 0.9704 / 4 < best["lr"] < 0.9704 * 4
