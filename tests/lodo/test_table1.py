"""Table 1 (docs/paper.md §6): the noisy bowl, average loss over the last 10 % of 100k steps.

Every closure evaluation is one step (docs/paper.md §3): L-BFGS and O-LBFGS get 50k iterations. The slow
tests use Table 6's values (lodo/paper.py, typed in again here so a typo there
cannot move the target) and the mean over seeds 0 and 1; `pytest -m slow -s` prints per-seed
results. A fast test runs the optimizers on Rosenbrock.
"""
import math

import numpy as np
import pytest
import torch

import tasks
from tuner.trial.loop import run_trial

STEPS = 100_000
SEEDS = (0, 1)

# (optimizer, Table 6 noisy_bowl values, Table 1 target)
ROWS = [
    ("Adam", {"lr": 1.164, "beta1": 0.465, "beta2": 0.9884}, 15.28),
    ("Momentum", {"lr": 1.394, "momentum": 0.529}, 16.59),
    ("RMSprop", {"lr": 0.449, "rho": 0.04943, "momentum": 0.595}, 22.37),
    ("Yogi", {"lr": 2.169, "beta1": 0.4362, "beta2": 0.9999723}, 15.35),
    ("O-LBFGS", {"lr": 1.050, "tau": 36721}, 13.96),
    # Table 1's 49.30 came from the authors' scaling slip; the correct scaling gives ≈ 15.5 (docs/paper.md §2).
    ("L-BFGS", {"lr": 1.204, "tau": 23002}, 15.5),
    ("LODO", {"meta_lr": 0.0009600, "beta": 0.195, "lr": 0.270}, 8.99),
    # Table 6 omits λ; λ = 1e-4 is docs/paper.md §2's value for Table 1's 7.40.
    ("Levenberg-Marquardt", {"damping": 1e-4}, 7.40),
]


def _run(name, hparams):
    results = []
    for seed in SEEDS:
        r = run_trial("noisy_bowl", name, hparams, STEPS, seed)
        print(f"{name} seed {seed}: final_loss {r.final_loss:.4f}  {r.seconds:.1f} s  "
              f"({len(r.losses)} evaluations, diverged={r.diverged})")
        results.append(r)
    return results


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("name, hparams, target", ROWS, ids=[row[0] for row in ROWS])
def test_table1_row_within_3_percent(name, hparams, target):
    results = _run(name, hparams)
    assert all(len(r.losses) == STEPS and not r.diverged for r in results)
    mean = float(np.mean([r.final_loss for r in results]))
    print(f"{name}: mean {mean:.4f} vs Table 1 {target}")
    assert mean == pytest.approx(target, rel=0.03)


@pytest.mark.slow
def test_table1_newton_is_the_ideal_tracker():
    """Newton jumps to the current centre and pays ½·v·tr(H) = ½·Σ geometric(0.001 … 1) per step."""
    eigenvalues = [0.001 * 1000.0 ** (i / 99) for i in range(100)]
    ideal = 0.5 * math.fsum(eigenvalues)
    assert ideal == pytest.approx(7.412, abs=5e-4)
    mean = float(np.mean([r.final_loss for r in _run("Newton", {})]))
    print(f"Newton: mean {mean:.4f} vs ½·tr(H) {ideal:.4f}")
    assert mean == pytest.approx(ideal, rel=0.01)


@pytest.mark.slow
def test_table1_bfgs_fails_to_track_the_bowl():
    """Table 1: BFGS "diverged". Consecutive gradients come from different noise samples, so
    sᵀy turns negative and the inverse-Hessian estimate loses definiteness. With the defaults
    (lr 0.01, h0_scale 1; Table 6 has no values) the loss stays finite here but settles orders of
    magnitude above every other method (2.8·10⁵ and 7.0·10⁵ for seeds 1 and 0, against ≈ 15 for Adam)."""
    for r in _run("BFGS", {}):
        assert r.diverged or r.final_loss > 1e3 * 15.28


# ---- fast ---------------------------------------------------------------------------------------

# Every baseline plus LODO; the LODO ablations belong to image_generation (Table 3) and
# L2LBGDBGD needs a meta-trained checkpoint.
ROSENBROCK_OPTIMIZERS = ["Adam", "Momentum", "RMSprop", "Yogi", "LARS", "L-BFGS", "O-LBFGS", "BFGS",
                         "Levenberg-Marquardt", "Newton", "LODO"]
ROSENBROCK_TABLE6 = {
    "Adam": {"lr": 0.9704, "beta1": 0.864, "beta2": 0.99804},
    "Momentum": {"lr": 0.09870, "momentum": 0.9359},
    "RMSprop": {"lr": 0.004318, "rho": 0.02836, "momentum": 0.880},
    "Yogi": {"lr": 0.2991, "beta1": 0.9273, "beta2": 0.998787},
    "LODO": {"meta_lr": 0.0001394, "beta": 0.897, "lr": 0.2946},
}


def test_rosenbrock_start_loss_is_the_closed_form():
    task = tasks.create("rosenbrock")
    x, y = -0.5, 2.0
    assert task.loss(task.sample()).item() == pytest.approx(0.01 * (x - 1) ** 2 + (x * x - y) ** 2, abs=1e-15)
    assert 0.01 * (x - 1) ** 2 + (x * x - y) ** 2 == pytest.approx(3.085)


@pytest.mark.parametrize("name", ROSENBROCK_OPTIMIZERS)
def test_rosenbrock_200_steps_stay_finite(name):
    r = run_trial("rosenbrock", name, ROSENBROCK_TABLE6.get(name, {}), 200, seed=0)
    assert len(r.losses) == 200 and not r.diverged
    assert np.isfinite(r.losses).all() and math.isfinite(r.final_loss)
    assert r.losses[0] == pytest.approx(3.085, abs=1e-12)  # the first evaluation is at the start point
    assert r.final_loss < r.losses[0]
