"""The GA's options beyond Appendix E (tuner/search/ga.py): a uniform first generation, cumulative
step-size adaptation, several seeds per individual, their JSON state, and that the defaults are
the paper's GA. References are written out here: the bounds rule, the uniform CDF, CSA's
formulas with hand-computed constants, per-seed means and the better half sorted by hand."""
import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuner.search.ga import GeneticAlgorithm, default_bounds, individual_seed, rescale

from test_ga import _strict_json

SPACE = [("lr", 1e-3, "log"), ("beta1", 0.9, "decay"), ("momentum", 0.0, "decay")]
fast = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def u_of(x, scale):
    return math.log(x) if scale == "log" else 1.0 - math.log(1.0 - x)


def ks_uniform(samples, low, high) -> float:
    """Kolmogorov–Smirnov distance of `samples` from the uniform distribution on [low, high]."""
    x = np.sort((np.asarray(samples) - low) / (high - low))
    n = len(x)
    return float(max(np.max(np.arange(1, n + 1) / n - x), np.max(x - np.arange(n) / n)))


# --- defaults are Appendix E ----------------------------------------------------------------

def test_default_options_are_the_papers_ga_bit_for_bit():
    generations = [(3.0, 10), (1.0, 10)]
    plain = GeneticAlgorithm(SPACE, generations, 6, seed=4, name="Adam")
    explicit = GeneticAlgorithm(SPACE, generations, 6, seed=4, name="Adam", init="mean", step_size="schedule", seeds=1)
    for g in range(2):
        assert plain.ask() == explicit.ask()
        assert [i.seed for i in plain.ask()] == [individual_seed(4, "Adam", g, i) for i in range(6)]
        fitness = [float((7 * i) % 5) for i in range(6)]
        plain.tell(fitness), explicit.tell(fitness)
    assert plain.to_json() == explicit.to_json()
    state = json.loads(plain.to_json())
    assert not {"init", "step_size", "seeds", "covariance", "trial_seeds", "step", "path", "cov"} & set(state)  # the paper's state, as before
    assert not {"sigma", "fitness"} & set(plain.history[0])


# --- init: uniform --------------------------------------------------------------------------

def test_default_bounds_follow_the_documented_rule():
    assert default_bounds(type("D", (), {"default": 0.01, "scale": "log"})) == pytest.approx((1e-5, 10.0))
    assert default_bounds(type("D", (), {"default": 0.9, "scale": "decay"})) == (0.0, 0.9999)


def test_uniform_first_generation_lies_in_the_bounds_and_is_uniform_in_rescaled_space():
    """4000 draws, fixed seed: each rescaled coordinate within its box, KS distance from the
    uniform CDF below the 1 % critical value 1.63/√n; the box of `bounds` (natural units) is used
    where given, the default rule elsewhere; the mean (not used by generation 0) is ignored."""
    n = 4000
    bounds = {"lr": (1e-3, 10.0)}
    ga = GeneticAlgorithm(SPACE, [(3.0, 10), (1.0, 10)], n, seed=11, name="Adam", init="uniform", bounds=bounds,
                          start={"lr": 1e6})
    individuals = ga.ask()
    boxes = {"lr": (math.log(1e-3), math.log(10.0)),
             "beta1": (1.0, 1.0 + math.log(1e4)),       # decay: 1 − y, y on [1e-4, 1]
             "momentum": (1.0, 1.0 + math.log(1e4))}
    for name, _, scale in SPACE:
        low, high = boxes[name]
        u = [u_of(i.hparams[name], scale) for i in individuals]
        assert low - 1e-12 <= min(u) and max(u) <= high + 1e-12
        assert ks_uniform(u, low, high) < 1.63 / math.sqrt(n)
    # The draws are independent across coordinates: correlation of lr and beta1 near 0.
    lr = [u_of(i.hparams["lr"], "log") for i in individuals]
    beta1 = [u_of(i.hparams["beta1"], "decay") for i in individuals]
    assert abs(np.corrcoef(lr, beta1)[0, 1]) < 4 / math.sqrt(n)


def test_after_a_uniform_generation_the_mean_is_its_best_individual_and_generation_one_is_gaussian():
    ga = GeneticAlgorithm(SPACE, [(3.0, 10), (0.5, 20)], 8, seed=2, init="uniform")
    first = ga.ask()
    fitness = [abs(u_of(i.hparams["lr"], "log") - math.log(0.1)) for i in first]  # best near lr 0.1
    ga.tell(fitness)
    best = min(range(8), key=lambda i: (fitness[i], i))
    expected = {n: u_of(first[best].hparams[n], s) for n, _, s in SPACE}
    assert ga.mean_rescaled == pytest.approx(expected, rel=1e-13)
    second = ga.ask()
    for ind in second:  # mean + 0.5 · z, z from the individual's own generator
        z = np.random.default_rng(ind.seed).standard_normal(3)
        for (name, _, scale), zk in zip(SPACE, z):
            if scale == "log" or expected[name] + 0.5 * zk > 1.0:  # decay clips below u = 1
                assert u_of(ind.hparams[name], scale) == pytest.approx(expected[name] + 0.5 * zk, rel=1e-12)
    assert all(i.steps == 20 for i in second)


@pytest.mark.parametrize("bounds, field", [
    ({"eps": (1e-3, 1.0)}, "bounds"), ({"lr": (1.0, 1e-3)}, "bounds for lr"), ({"lr": (0.0, 1.0)}, "bounds for lr"),
    ({"beta1": (0.5, 1.0)}, "bounds for beta1"), ({"lr": (1.0,)}, "bounds for lr"),
])
def test_invalid_bounds_raise_one_line_errors(bounds, field):
    with pytest.raises(ValueError, match=field) as error:
        GeneticAlgorithm(SPACE, [(1.0, 10)], 4, init="uniform", bounds=bounds)
    assert "\n" not in str(error.value)


# --- step_size: csa -------------------------------------------------------------------------

def _run(ga, f):
    sigmas = [ga.sigma]
    while not ga.done:
        ga.tell([f(i) for i in ga.ask()])
        sigmas.append(ga.sigma)
    return sigmas


def test_csa_grows_sigma_on_a_linear_slope_and_shrinks_it_on_a_sphere():
    """f = u_lr (a slope: the mean keeps moving one way) vs f = ‖u − mean₀‖² (the mean sits at
    the optimum): over 12 generations of noise 1, σ grows more than 4-fold vs shrinks more than 2-fold;
    the schedule rule keeps σ = 1 on both."""
    space = [("lr", 1e-2, "log"), ("tau", 1e4, "log")]
    center = [math.log(1e-2), math.log(1e4)]
    slope = lambda i: math.log(i.hparams["lr"])  # noqa: E731
    sphere = lambda i: sum((math.log(i.hparams[n]) - c) ** 2 for n, c in zip(("lr", "tau"), center))  # noqa: E731
    for seed in range(3):
        up = _run(GeneticAlgorithm(space, [(1.0, 5)] * 12, 16, seed=seed, step_size="csa"), slope)
        down = _run(GeneticAlgorithm(space, [(1.0, 5)] * 12, 16, seed=seed, step_size="csa"), sphere)
        assert up[-1] > 4.0 and all(b > a for a, b in zip(up, up[1:]))
        assert down[-1] < 0.5 and down[-1] < down[len(down) // 2] < 1.0
        assert _run(GeneticAlgorithm(space, [(1.0, 5)] * 12, 16, seed=seed), slope) == [1.0] * 13


def test_csa_one_step_matches_the_formulas_written_out():
    """n = 3, μ = 4 (population 8): c = 6/12 = 0.5, d = 1 + 2·max(0, √(3/4) − 1) + 0.5 = 1.5,
    E‖N(0, I₃)‖ ≈ √3·(1 − 1/12 + 1/189); after one generation p = √(0.5·1.5·4)·Δmean/σ and
    σ₁ = noise₁ · exp((0.5/1.5)(‖p‖/χ − 1)); the schedule's noise ratio still applies."""
    ga = GeneticAlgorithm(SPACE, [(2.0, 10), (1.0, 10)], 8, seed=5, step_size="csa", start={"momentum": 0.5})
    before = [ga.mean_rescaled[n] for n, _, _ in SPACE]
    first = ga.ask()
    fitness = [float(i) for i in range(8)]  # the better half: individuals 0..3
    ga.tell(fitness)
    after = [sum(u_of(first[i].hparams[n], s) for i in range(4)) / 4 for n, _, s in SPACE]
    p = [math.sqrt(0.5 * 1.5 * 4) * (a - b) / 2.0 for a, b in zip(after, before)]
    chi = math.sqrt(3) * (1 - 1 / 12 + 1 / 189)
    assert ga.sigma == pytest.approx(1.0 * math.exp((0.5 / 1.5) * (math.hypot(*p) / chi - 1)), rel=1e-12)
    assert ga.history[0]["sigma"] == 2.0 and ga.history[0]["next_sigma"] == ga.sigma


# --- seeds: k trials per individual ---------------------------------------------------------

def test_several_seeds_per_individual_share_hparams_and_their_fitness_is_the_mean():
    population, k = 6, 3
    ga = GeneticAlgorithm(SPACE, [(2.0, 10), (1.0, 10)], population, seed=9, name="Yogi", seeds=k)
    plain = GeneticAlgorithm(SPACE, [(2.0, 10), (1.0, 10)], population, seed=9, name="Yogi")
    trials = ga.ask()
    assert ga.evaluations == len(trials) == population * k and [t.index for t in trials] == list(range(18))
    assert trials[:population] == plain.ask()  # the first seed is the paper's individual
    for t in trials:
        assert t.hparams == trials[t.index % population].hparams
        assert t.seed == individual_seed(9, "Yogi", 0, t.index)
    assert len({t.seed for t in trials}) == 18
    rng = np.random.default_rng(0)
    fitness = {t.index: float(rng.uniform(0, 10)) for t in trials}
    fitness[7] = math.nan  # individual 1's second seed diverged: individual 1 ranks last
    ga.tell(fitness)
    means = [sum(fitness[i + j * population] for j in range(k)) / k for i in range(population)]
    means[1] = math.inf
    chosen = sorted(range(population), key=lambda i: (means[i], i))[:3]
    assert ga.history[0]["selected"] == chosen
    assert ga.history[0]["fitness"][:1] + ga.history[0]["fitness"][2:] == pytest.approx(means[:1] + means[2:],
                                                                                        rel=1e-15)
    expected = {n: sum(u_of(trials[i].hparams[n], s) for i in chosen) / 3 for n, _, s in SPACE}
    assert ga.mean_rescaled == pytest.approx(expected, rel=1e-13)
    assert [i["fitness"] for i in ga.history[0]["individuals"]] == [fitness[i] for i in range(18)] or math.isnan(
        ga.history[0]["individuals"][7]["fitness"])
    with pytest.raises(ValueError, match=r"indices missing \[17\]"):
        ga.tell({i: 1.0 for i in range(17)})


@pytest.mark.parametrize("kwargs, field", [
    (dict(init="broad"), "init"), (dict(step_size="1/5"), "step_size"), (dict(seeds=0), "seeds"),
    (dict(seeds=1.5), "seeds"), (dict(seeds=True), "seeds"), (dict(covariance="full"), "covariance"),
    (dict(boundary="reflect"), "boundary"),
])
def test_invalid_options_raise_one_line_errors_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"Invalid {field}") as error:
        GeneticAlgorithm(SPACE, [(1.0, 10)], 4, **kwargs)
    assert "\n" not in str(error.value)


# --- JSON state with every option -----------------------------------------------------------

JSON_CASES = {  # (generations, population, options): every option, and the sized rows with the newer ones
    "uniform": ([(3.0, 10), (1.5, 20), (1.5, 30), (1.0, 40)], 5,
                dict(init="uniform", bounds={"lr": (1e-4, 3.0)}, step_size="csa", seeds=2, covariance="rank_mu")),
    "elite": ([(1.0, 10, 12), (1.5, 20), (1.0, 30, 6), (0.5, 40)], 4,
              dict(init="elite", step_size="csa", covariance="rank_mu", trial_seeds="common", seeds=2)),
    "finalists": ([(1.0, 10, 6), (1.5, 20), (0.5, 20), (0.0, 80, 3)], 4,
                  dict(init="uniform", step_size="csa", covariance="rank_mu", final="finalists")),
    "weighted": ([(1.0, 10), (0.8, 20), (0.5, 30), (0.4, 30), (0.3, 40)], 8,
                 dict(step_size="csa", covariance="rank_mu", recombination="weighted")),
    "clip": ([(3.0, 10, 6), (2.0, 20), (1.0, 30), (1.0, 30), (0.5, 40)], 4,
             dict(init="elite", bounds={"lr": (1e-4, 3.0)}, step_size="csa", covariance="rank_mu", boundary="clip")),
}


@pytest.mark.parametrize("case", list(JSON_CASES))
@fast
@given(seed=st.integers(0, 2**32), told=st.integers(0, 4), data=st.data())
def test_json_round_trip_with_every_option_is_exact_mid_run_and_continues_identically(case, seed, told, data):
    generations, population, options = JSON_CASES[case]
    ga = GeneticAlgorithm(SPACE, generations, population, seed=seed, name="Momentum", **options)
    values = st.one_of(st.floats(-1e6, 1e6), st.sampled_from([math.nan, math.inf]))
    fitness = [data.draw(st.lists(values, min_size=n, max_size=n)) for n in ga.sizes]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for g in range(told):
            ga.tell(fitness[g][: ga.evaluations])
        text = ga.to_json()
        _strict_json(text)
        restored = GeneticAlgorithm.from_json(text)
        assert restored.to_json() == text
        assert (restored.sigma, restored._path, restored._cov) == (ga.sigma, ga._path, ga._cov)
        for g in range(told, len(generations)):
            assert restored.ask() == ga.ask()
            told_now = fitness[g][: ga.evaluations]  # the finalists may be fewer than the row's size
            ga.tell(told_now), restored.tell(told_now)
    assert restored.to_json() == ga.to_json() and restored.done


# --- covariance: rank_mu --------------------------------------------------------------------

def test_rank_mu_one_step_matches_the_formula_and_generation_one_samples_with_its_square_root():
    """n = 3, μ = 4: c_μ = 2(4 − 2 + 1/4)/((3 + 2)² + 4) = 4.5/29; C₁ = (1 − c_μ)·I + c_μ·(1/4)Σ yyᵀ,
    y = (u_i − mean₀)/σ₀ over the better half; generation 1's u = mean₁ + σ₁·C₁^½·z (scipy's sqrtm)."""
    from scipy.linalg import sqrtm

    ga = GeneticAlgorithm(SPACE, [(2.0, 10), (0.5, 10)], 8, seed=3, covariance="rank_mu", start={"momentum": 0.9})
    before = np.array([ga.mean_rescaled[n] for n, _, _ in SPACE])
    first = ga.ask()
    ga.tell([float(-i) for i in range(8)])  # the better half: individuals 7, 6, 5, 4
    y = np.array([[u_of(first[i].hparams[n], s) for n, _, s in SPACE] for i in (4, 5, 6, 7)]) - before
    y /= 2.0
    c_mu = 4.5 / 29
    cov = (1 - c_mu) * np.eye(3) + c_mu * sum(np.outer(v, v) for v in y) / 4
    np.testing.assert_allclose(np.array(ga._cov), cov, rtol=1e-12)
    mean = np.array([ga.mean_rescaled[n] for n, _, _ in SPACE])
    root = np.real(sqrtm(cov))
    for ind in ga.ask():
        z = np.random.default_rng(ind.seed).standard_normal(3)
        expected = mean + 0.5 * root @ z
        got = [u_of(ind.hparams[n], s) for n, _, s in SPACE]
        for (name, _, scale), e, g in zip(SPACE, expected, got):
            if scale == "log" or e > 1.0:  # decay clips below u = 1
                assert g == pytest.approx(e, rel=1e-10, abs=1e-12)


def test_rank_mu_stretches_the_noise_along_a_diagonal_ridge():
    """f = 100·(u₁ − u₂)² + (u₁ + u₂): a valley along (1, 1) sloping down. After 10 generations
    C’s leading eigenvector lies within 10° of the valley and its eigenvalues differ > 5-fold;
    the mean has moved further down the valley than the identity-covariance GA's."""
    space = [("a", 1.0, "log"), ("b", 1.0, "log")]
    f = lambda i: 100 * (math.log(i.hparams["a"]) - math.log(i.hparams["b"])) ** 2 + math.log(i.hparams["a"] * i.hparams["b"])  # noqa: E731
    for seed in range(3):
        shaped = GeneticAlgorithm(space, [(0.3, 5)] * 10, 16, seed=seed, covariance="rank_mu")
        plain = GeneticAlgorithm(space, [(0.3, 5)] * 10, 16, seed=seed)
        for ga in (shaped, plain):
            while not ga.done:
                ga.tell([f(i) for i in ga.ask()])
        values, vectors = np.linalg.eigh(np.array(shaped._cov))
        lead = vectors[:, -1] * np.sign(vectors[0, -1])
        assert math.degrees(math.acos(abs(lead @ np.array([1, 1]) / math.sqrt(2)))) < 10
        assert values[-1] > 5 * values[0]
        assert sum(shaped.mean_rescaled.values()) < sum(plain.mean_rescaled.values())


# --- a generation of its own size, common random numbers, init: elite -----------------------

def test_a_generation_of_its_own_size_asks_that_many_and_selects_its_better_half():
    """Generation 0 of 10 individuals, generation 1 of the population's 4: ask and tell follow each
    row's size; the next mean is the mean of the 5 best of 10 (sorted by hand)."""
    ga = GeneticAlgorithm(SPACE, [(1.0, 7, 10), (0.5, 9)], 4, seed=2, name="RMSprop")
    assert (ga.sizes, ga.evaluations) == ([10, 4], 10)
    first = ga.ask()
    assert [i.index for i in first] == list(range(10)) and {i.steps for i in first} == {7}
    with pytest.raises(ValueError, match="indices missing"):
        ga.tell([1.0] * 4)
    fitness = [5.0, 3.0, 9.0, 1.0, 8.0, 0.0, 7.0, 2.0, 6.0, 4.0]  # the best five: 5, 3, 7, 1, 9
    ga.tell(fitness)
    best = [5, 3, 7, 1, 9]
    for name, _, scale in SPACE:
        expected = sum(u_of(first[i].hparams[name], scale) for i in best) / 5
        assert ga.mean_rescaled[name] == pytest.approx(expected, rel=1e-12)
    assert ga.history[0]["selected"] == best
    second = ga.ask()
    assert len(second) == ga.evaluations == 4 and {i.steps for i in second} == {9}


@pytest.mark.parametrize("row", [(1.0, 10, 1), (1.0, 10, 2.5), (1.0, 10, True), (1.0,), (1.0, 10, 4, 5)])
def test_invalid_generation_rows_raise_one_line_errors(row):
    with pytest.raises(ValueError, match=r"Invalid generations\[1\]") as error:
        GeneticAlgorithm(SPACE, [(1.0, 10), row], 4)
    assert "\n" not in str(error.value)


def test_common_trial_seeds_give_one_seed_per_generation_and_repeat_and_leave_the_draws_alone():
    generations = [(1.0, 10), (0.5, 10)]
    own = GeneticAlgorithm(SPACE, generations, 5, seed=8, name="Yogi", seeds=2)
    common = GeneticAlgorithm(SPACE, generations, 5, seed=8, name="Yogi", seeds=2, trial_seeds="common")
    for g in range(2):
        a, b = own.ask(), common.ask()
        assert [i.hparams for i in a] == [i.hparams for i in b]  # the draws: each index's own seed
        assert len({i.seed for i in a}) == 10
        assert [i.seed for i in b] == [individual_seed(8, "Yogi", g, 0)] * 5 + [individual_seed(8, "Yogi", g, 5)] * 5
        fitness = [float((3 * i) % 7) for i in range(10)]
        own.tell(fitness), common.tell(fitness)
    assert own.mean == common.mean  # the same fitness, the same selection


def test_common_trial_seeds_rank_the_bowls_values_as_the_expected_loss_does():
    """Noisy bowl, Momentum at 8 learning rates near its best (losses within ~30 % of each other):
    with one bowl and noise stream per generation the GA's fitness orders more pairs as the mean
    loss over 16 other seeds does than with a seed per individual (6 generations' seeds each)."""
    from itertools import combinations

    from tuner.trial.loop import run_batched_trial

    hp = [{"lr": lr, "momentum": 0.4} for lr in (1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2, 2.4)]
    steps = 1000
    reference = np.mean([[r.final_loss for r in run_batched_trial("noisy_bowl", "Momentum", hp, steps, [100 + s] * 8)]
                         for s in range(16)], axis=0)
    concordant = {"individual": 0, "common": 0}
    for g in range(6):
        for rule in concordant:
            seeds = [individual_seed(1, "Momentum", g, 0)] * 8 if rule == "common" else \
                [individual_seed(1, "Momentum", g, i) for i in range(8)]
            fitness = [r.final_loss for r in run_batched_trial("noisy_bowl", "Momentum", hp, steps, seeds)]
            concordant[rule] += sum((fitness[i] - fitness[j]) * (reference[i] - reference[j]) > 0
                                    for i, j in combinations(range(8), 2))
    assert concordant["common"] > concordant["individual"] + 10  # measured: 162 vs 137 of 168


def test_elite_init_sets_the_shape_to_the_best_quarters_spread_over_sigma_one_squared():
    """Generation 0 of 16 uniform draws, the best quarter = 4 (by hand: fitness = index); C₁ =
    Cov(their u, ddof 0) / σ₁², up to the 1e-6·max diagonal floor; generation 1 at the best draw."""
    ga = GeneticAlgorithm(SPACE, [(1.0, 10, 16), (0.5, 10)], 6, seed=5, init="elite", covariance="rank_mu")
    first = ga.ask()
    ga.tell([float(i) for i in range(16)])
    u = np.array([[u_of(first[i].hparams[n], s) for n, _, s in SPACE] for i in range(4)])
    expected = np.cov(u.T, bias=True) / 0.5**2
    np.testing.assert_allclose(np.array(ga._cov), expected, rtol=1e-5, atol=1e-6 * np.diag(expected).max())
    assert ga.mean == first[0].hparams
    uniform = GeneticAlgorithm(SPACE, [(1.0, 10, 16), (0.5, 10)], 6, seed=5, init="uniform", covariance="rank_mu")
    assert [i.hparams for i in uniform.ask()] == [i.hparams for i in first]  # the same draws; only C differs
    uniform.tell([float(i) for i in range(16)])
    assert uniform._cov == np.eye(3).tolist()


def test_elite_init_needs_the_rank_mu_covariance():
    with pytest.raises(ValueError, match="Invalid init: 'elite'") as error:
        GeneticAlgorithm(SPACE, [(1.0, 10)], 4, init="elite")
    assert "\n" not in str(error.value)


def test_a_degenerate_generation_cannot_overflow_the_step_size():
    """All fitness equal (ties by index) in every generation, 12 individuals in 3 dimensions: the best
    quarter alone (3 draws) spans a plane, so the elite shape takes n + 1 = 4; CSA changes σ by at most
    a factor e per generation (purecma's bound), so σ stays finite (hypothesis found the overflow)."""
    ga = GeneticAlgorithm(SPACE, [(1.0, 10, 12), (1.5, 20), (1.0, 30, 6), (0.5, 40)], 4, seed=4,
                          init="elite", step_size="csa", covariance="rank_mu", trial_seeds="common", seeds=2)
    sigmas = []
    while not ga.done:
        before = ga._step
        ga.tell([0.0] * ga.evaluations)
        sigmas.append(ga.sigma)
        assert math.isfinite(ga._step) and ga._step <= before * math.e * (1 + 1e-12)
    assert np.linalg.matrix_rank(np.array(ga._cov)) == 3


# --- final: finalists -----------------------------------------------------------------------

def _told(ga: GeneticAlgorithm, fitness_of) -> None:
    """Tell every generation but the last, each individual's fitness `fitness_of(generation, hparams)`."""
    while ga.generation < len(ga.generations) - 1:
        ga.tell([fitness_of(ind.generation, ind.hparams) for ind in ga.ask()])


def test_the_finalists_are_the_mean_and_the_best_distinct_individuals_of_the_long_generations():
    ga = GeneticAlgorithm(SPACE, [(1.0, 10, 8), (0.8, 50), (0.5, 50), (0.0, 400, 4)], 6, seed=3, final="finalists",
                          step_size="csa")
    distance = lambda hp: abs(math.log(hp["lr"]) - math.log(0.05)) + abs(hp["beta1"] - 0.5)  # noqa: E731
    # generation 0's trials are short: its fitness values are far lower but must not compete
    _told(ga, lambda g, hp: distance(hp) - (100.0 if g == 0 else 0.0))
    mean = ga.mean
    finalists = ga.ask()
    long_ones = sorted((distance(i["hparams"]), h["generation"], i["index"]) for h in ga.history[1:]
                       for i in h["individuals"])
    expected = [mean] + [ga.history[g]["individuals"][i]["hparams"] for _, g, i in long_ones[:3]]
    assert [f.hparams for f in finalists] == expected
    assert [f.steps for f in finalists] == [400] * 4 and [f.index for f in finalists] == [0, 1, 2, 3]
    assert [f.seed for f in finalists] == [individual_seed(3, "", 3, i) for i in range(4)]


def test_the_best_finalist_is_tuned_exactly_as_trained_and_a_tie_keeps_the_mean():
    ga = GeneticAlgorithm(SPACE, [(1.0, 20), (0.0, 100, 3)], 4, seed=1, final="finalists")
    _told(ga, lambda g, hp: hp["lr"])
    finalists = ga.ask()
    ga.tell([5.0, 2.0, math.nan])
    assert ga.done and ga.best() == finalists[1].hparams  # the values trained, not their rescaled round trip
    assert ga.mean == pytest.approx(finalists[1].hparams, rel=1e-12)
    assert ga.history[-1]["selected"] == [1]
    tie = GeneticAlgorithm(SPACE, [(1.0, 20), (0.0, 100, 3)], 4, seed=1, final="finalists")
    _told(tie, lambda g, hp: hp["lr"])
    tie.tell([2.0, 2.0, 3.0])
    assert tie.best() == finalists[0].hparams  # the mean, index 0, wins ties


def test_finalists_with_no_finite_fitness_keep_the_mean_and_too_few_candidates_shrink_the_generation():
    ga = GeneticAlgorithm(SPACE, [(1.0, 20), (0.0, 100, 8)], 4, seed=2, final="finalists")
    ga.tell([1.0, math.inf, math.nan, 2.0])  # two finite individuals: with the mean (theirs) all there is
    assert ga.evaluations == len(ga.ask()) == 3
    mean = ga.mean
    with pytest.warns(RuntimeWarning, match="no individual has a finite fitness"):
        ga.tell([math.inf, math.nan, math.inf])
    assert ga.best() == mean


def test_finalists_repeat_with_seeds_and_average_them():
    ga = GeneticAlgorithm(SPACE, [(1.0, 20), (0.0, 100, 2)], 4, seed=5, final="finalists", seeds=2)
    _told(ga, lambda g, hp: hp["lr"])
    finalists = ga.ask()
    assert len(finalists) == 4 and finalists[2].hparams == finalists[0].hparams
    ga.tell([3.0, 2.0, 0.0, 2.5])  # mean 1.5, best individual 2.25
    assert ga.best() == finalists[0].hparams


@pytest.mark.parametrize("kwargs, message", [
    (dict(final="best"), "Invalid final: 'best'"),
    (dict(final="finalists", generations=[(1.0, 10)]), "needs at least 2 generations"),
])
def test_invalid_final_options_raise_one_line_errors(kwargs, message):
    generations = kwargs.pop("generations", [(1.0, 10), (0.0, 50)])
    with pytest.raises(ValueError, match=message) as error:
        GeneticAlgorithm(SPACE, generations, 4, **kwargs)
    assert "\n" not in str(error.value)


# --- weighted recombination -------------------------------------------------------------------

def test_weighted_recombination_is_cmaes_log_weighted_mean_and_rank_mu_sum():
    """Hansen 2016 eq. 49 written out: w_i ∝ ln(μ + ½) − ln i over the better half, best first;
    C ← (1 − c_μ)C + c_μ Σ w_i y_i y_iᵀ with μ_eff = 1/Σw² in c_μ; σ's factor by CSA with μ_eff."""
    ga = GeneticAlgorithm(SPACE, [(0.7, 10), (0.5, 10)], 8, seed=3, name="Adam",
                          step_size="csa", covariance="rank_mu", recombination="weighted")
    asked = ga.ask()
    fitness = [5.0, 1.0, 7.0, 3.0, math.nan, 2.0, 8.0, 4.0]  # better half, best first: 1, 5, 3, 7
    mean0 = np.array([u_of(1e-3, "log"), u_of(0.9, "decay"), u_of(0.0, "decay")])
    u = np.array([[u_of(i.hparams[n], s) for n, _, s in SPACE] for i in asked])
    order = [1, 5, 3, 7]
    raw = np.array([math.log(4.5) - math.log(k) for k in (1, 2, 3, 4)])
    w = raw / raw.sum()
    ga.tell(fitness)
    assert np.allclose(list(ga.mean_rescaled.values()), (w[:, None] * u[order]).sum(0), rtol=0, atol=1e-12)
    mu_eff, n = 1 / (w ** 2).sum(), 3
    c_mu = min(1.0, 2 * (mu_eff - 2 + 1 / mu_eff) / ((n + 2) ** 2 + mu_eff))
    y = (u[order] - mean0) / 0.7
    expected_cov = (1 - c_mu) * np.eye(3) + c_mu * sum(wi * np.outer(yi, yi) for wi, yi in zip(w, y))
    assert np.allclose(ga._cov, expected_cov, rtol=1e-12, atol=1e-15)
    c = (mu_eff + 2) / (n + mu_eff + 5)
    d = 1 + 2 * max(0.0, math.sqrt((mu_eff - 1) / (n + 1)) - 1) + c
    path = math.sqrt(c * (2 - c) * mu_eff) * ((w[:, None] * u[order]).sum(0) - mean0) / 0.7  # C = I before
    chi = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n))
    assert ga.sigma == pytest.approx(0.5 * math.exp(min(1.0, c / d * (np.linalg.norm(path) / chi - 1))), rel=1e-12)


def test_weighted_recombination_pulls_the_mean_towards_the_best_more_than_equal_weights():
    runs = {}
    for recombination in ("equal", "weighted"):
        ga = GeneticAlgorithm(SPACE, [(1.0, 10), (1.0, 10)], 8, seed=0, recombination=recombination)
        asked = ga.ask()
        ga.tell([float(k) for k in range(8)])  # individual 0 is the best
        best = np.array([u_of(asked[0].hparams[n], s) for n, _, s in SPACE])
        runs[recombination] = np.linalg.norm(np.array(list(ga.mean_rescaled.values())) - best)
    assert runs["weighted"] < runs["equal"]


def test_invalid_recombination_raises_a_one_line_error():
    with pytest.raises(ValueError, match="Invalid recombination: 'best'") as error:
        GeneticAlgorithm(SPACE, [(1.0, 10)], 4, recombination="best")
    assert "\n" not in str(error.value)



# --- boundary: clip -------------------------------------------------------------------------

CLIP_BOUNDS = {"lr": (1e-2, 1.0), "beta1": (0.5, 0.99), "momentum": (0.0, 0.9)}


def test_clip_moves_each_draw_to_the_nearest_point_of_the_box_and_leaves_the_others_alone():
    free = GeneticAlgorithm(SPACE, [(2.0, 10)] * 2, 64, seed=4, bounds=CLIP_BOUNDS)
    clip = GeneticAlgorithm(SPACE, [(2.0, 10)] * 2, 64, seed=4, bounds=CLIP_BOUNDS, boundary="clip")
    outside = 0
    for a, b in zip(free.ask(), clip.ask()):
        assert a.seed == b.seed
        for name, _, scale in SPACE:
            lo, hi = (u_of(v, scale) for v in CLIP_BOUNDS[name])
            u = u_of(a.hparams[name], scale)
            if lo <= u <= hi:
                assert b.hparams[name] == a.hparams[name]
            else:
                outside += 1
                assert u_of(b.hparams[name], scale) == pytest.approx(min(max(u, lo), hi), abs=1e-12)
    assert outside > 64  # σ = 2 around lr 1e-3, beta1 0.9: many draws leave the box


def test_clip_keeps_the_mean_in_the_box_where_a_free_search_walks_out_of_it():
    means = {}
    for boundary in ("free", "clip"):
        ga = GeneticAlgorithm(SPACE, [(1.0, 10)] * 12, 8, seed=1, bounds=CLIP_BOUNDS, step_size="csa",
                              start={"lr": 0.1}, boundary=boundary)
        while not ga.done:
            ga.tell([-i.hparams["lr"] for i in ga.ask()])  # lower is better: a slope towards lr → ∞
        means[boundary] = ga.mean["lr"]
    assert means["free"] > 100.0
    assert 0.5 < means["clip"] <= 1.0 * (1 + 1e-12)


def test_clip_is_not_the_papers_ga_and_round_trips_its_option():
    ga = GeneticAlgorithm(SPACE, [(1.0, 10)], 4, boundary="clip")
    state = json.loads(ga.to_json())
    assert state["boundary"] == "clip"
    assert "boundary" not in json.loads(GeneticAlgorithm(SPACE, [(1.0, 10)], 4).to_json())
