"""The optimizer registry: paper names, docs/paper.md §2's hyperparameter table, Table 6 as data."""
import pytest
import torch

import lodo
from lodo import Hyperparameter

PAPER_NAMES = ["Adam", "Momentum", "RMSprop", "Yogi", "LARS", "L-BFGS", "O-LBFGS", "BFGS",
               "Levenberg-Marquardt", "Newton", "LODO", "LODO-Diagonal", "LODO-Global",
               "LODO-Residuals", "LODO-No-Momentum", "LODO-SGD"]

# docs/paper.md §2's table, written out: (name, default, scale); decay rates in [0, 1) are "decay".
DOCUMENTED_HYPERPARAMETERS = {
    "Adam": [("lr", 0.001, "log"), ("beta1", 0.9, "decay"), ("beta2", 0.999, "decay")],
    "Momentum": [("lr", 0.01, "log"), ("momentum", 0.0, "decay")],
    "RMSprop": [("lr", 0.001, "log"), ("rho", 0.9, "decay"), ("momentum", 0.0, "decay")],
    "Yogi": [("lr", 0.001, "log"), ("beta1", 0.9, "decay"), ("beta2", 0.999, "decay")],
    "LARS": [("lr", 0.001, "log"), ("momentum", 0.9, "decay"), ("weight_decay", 0.0005, "log")],
    "L-BFGS": [("lr", 0.001, "log"), ("tau", 10000.0, "log")],
    "O-LBFGS": [("lr", 0.001, "log"), ("tau", 10000.0, "log")],
    "BFGS": [("lr", 0.01, "log"), ("h0_scale", 1.0, "log")],
    "Levenberg-Marquardt": [("damping", 1.0, "log")],
    "Newton": [],
    "LODO": [("lr", 1.0, "log"), ("meta_lr", 0.001, "log"), ("beta", 0.9, "decay")],
    "LODO-Diagonal": [("lr", 1.0, "log"), ("meta_lr", 0.001, "log"), ("beta", 0.9, "decay")],
    "LODO-Global": [("lr", 1.0, "log"), ("meta_lr", 0.001, "log"), ("beta", 0.9, "decay")],
    "LODO-Residuals": [("lr", 1.0, "log"), ("meta_lr", 0.001, "log"), ("beta", 0.9, "decay")],
    "LODO-No-Momentum": [("lr", 1.0, "log"), ("meta_lr", 0.001, "log")],
    "LODO-SGD": [("lr", 1.0, "log"), ("meta_lr", 0.001, "log"), ("beta", 0.9, "decay")],
}

# Table 6 (docs/paper.md §5), typed in independently of lodo/paper.py.
TABLE6 = {
    "noisy_bowl": {
        "Adam": {"lr": 1.164, "beta1": 0.465, "beta2": 0.9884},
        "Momentum": {"lr": 1.394, "momentum": 0.529},
        "RMSprop": {"lr": 0.449, "rho": 0.04943, "momentum": 0.595},
        "Yogi": {"lr": 2.169, "beta1": 0.4362, "beta2": 0.9999723},
        "L-BFGS": {"lr": 1.204, "tau": 23002},
        "O-LBFGS": {"lr": 1.050, "tau": 36721},
        "LODO": {"meta_lr": 0.0009600, "beta": 0.195, "lr": 0.270},
        "Levenberg-Marquardt": {"damping": 1e-4},  # not in Table 6: docs/paper.md §2's λ for Table 1's 7.40
    },
    "rosenbrock": {
        "Adam": {"lr": 0.9704, "beta1": 0.864, "beta2": 0.99804},
        "Momentum": {"lr": 0.09870, "momentum": 0.9359},
        "RMSprop": {"lr": 0.004318, "rho": 0.02836, "momentum": 0.880},
        "Yogi": {"lr": 0.2991, "beta1": 0.9273, "beta2": 0.998787},
        "LODO": {"meta_lr": 0.0001394, "beta": 0.897, "lr": 0.2946},
    },
    "image_generation": {
        "Adam": {"lr": 0.0009554, "beta1": 0.9323, "beta2": 0.99505},
        "Momentum": {"lr": 0.003411, "momentum": 0.9640},
        "RMSprop": {"lr": 4.167e-5, "rho": 0.002258, "momentum": 0.936},
        "Yogi": {"lr": 0.0009340, "beta1": 0.9319, "beta2": 0.999708},
        "LARS": {"lr": 0.0008552, "momentum": 0.9343, "weight_decay": 4.839e-5},
        "LODO": {"meta_lr": 7.946e-6, "beta": 0.9343, "lr": 0.08459},
        "LODO-Diagonal": {"meta_lr": 0.0005196, "beta": 0.9860, "lr": 0.1325},
        "LODO-Global": {"meta_lr": 7.951e-5, "beta": 0.9525, "lr": 0.05583},
        "LODO-Residuals": {"meta_lr": 3.829e-5, "beta": 0.9301, "lr": 0.02134},
        "LODO-SGD": {"meta_lr": 0.0007196, "beta": 0.9499, "lr": 0.1035},
    },
    "resnet18_cifar10": {
        "Adam": {"lr": 0.0004295, "beta1": 0.9562, "beta2": 0.99814},
        "Momentum": {"lr": 0.009942, "momentum": 0.99409},
        "RMSprop": {"lr": 9.877e-6, "rho": 0.03338, "momentum": 0.9394},
        "Yogi": {"lr": 0.001829, "beta1": 0.9730, "beta2": 0.9828},
        "LARS": {"lr": 0.002516, "momentum": 0.9385, "weight_decay": 5.370e-5},
        "LODO": {"meta_lr": 0.0001134, "beta": 0.9490, "lr": 0.1725},
    },
}


def _x():
    return [torch.zeros(4, dtype=torch.float64, requires_grad=True)]


def test_available_lists_the_paper_names_in_order():
    names = lodo.available()
    assert names[: len(PAPER_NAMES)] == PAPER_NAMES
    assert set(names) - set(PAPER_NAMES) <= {"L2LBGDBGD"}


@pytest.mark.parametrize("name", PAPER_NAMES)
def test_hyperparameters_match_the_spec_table(name):
    expected = [Hyperparameter(*row) for row in DOCUMENTED_HYPERPARAMETERS[name]]
    assert lodo.hyperparameters(name) == expected


@pytest.mark.parametrize("name", PAPER_NAMES)
def test_create_builds_an_optimizer_from_defaults_and_from_every_hyperparameter(name):
    assert isinstance(lodo.create(name, _x(), seed=0), torch.optim.Optimizer)
    values = {h.name: h.default for h in lodo.hyperparameters(name)}
    assert isinstance(lodo.create(name, _x(), seed=1, **values), torch.optim.Optimizer)


def test_create_maps_public_names_onto_torch_builtins():
    adam = lodo.create("Adam", _x(), lr=0.5, beta1=0.1, beta2=0.2)
    assert isinstance(adam, torch.optim.Adam)
    assert adam.defaults["betas"] == (0.1, 0.2) and adam.defaults["eps"] == 1e-7 and adam.defaults["lr"] == 0.5
    rms = lodo.create("RMSprop", _x(), lr=0.5, rho=0.3, momentum=0.4)
    assert isinstance(rms, torch.optim.RMSprop)
    assert (rms.defaults["alpha"], rms.defaults["momentum"], rms.defaults["eps"]) == (0.3, 0.4, 1e-7)
    sgd = lodo.create("Momentum", _x(), lr=0.5, momentum=0.4)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.4


def test_classes_carry_the_step_protocol_attributes():
    assert lodo.LBFGS.requires_closure and lodo.OLBFGS.requires_closure and lodo.BFGS.requires_closure
    assert lodo.LevenbergMarquardt.create_graph and lodo.Newton.create_graph
    assert not getattr(lodo.Yogi, "create_graph", False) and not getattr(lodo.LBFGS, "create_graph", False)


def test_unknown_optimizer_error_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"Unknown optimizer: 'Adagrad' \(valid: Adam, Momentum, .*Newton, LODO"):
        lodo.create("Adagrad", _x())
    with pytest.raises(ValueError, match="Unknown optimizer: 'adam'"):
        lodo.hyperparameters("adam")


def test_unknown_hyperparameter_error_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown hyperparameter for Adam: betas \(valid: lr, beta1, beta2\)"):
        lodo.create("Adam", _x(), betas=(0.9, 0.99))
    with pytest.raises(ValueError, match=r"Unknown hyperparameter for Newton: lr \(valid: none\)"):
        lodo.create("Newton", _x(), lr=1.0)
    with pytest.raises(ValueError, match=r"valid: lr, momentum, weight_decay; options: total_steps"):
        lodo.create("LARS", _x(), nesterov=True)


def test_non_tunable_options_pass_through():
    assert lodo.create("LARS", _x(), total_steps=100).defaults["total_steps"] == 100
    assert lodo.create("L-BFGS", _x(), memory=7).defaults["memory"] == 7
    assert "total_steps" in lodo.options("LARS") and "seed" not in lodo.options("LODO")


def test_seed_reaches_lodo_and_is_ignored_by_deterministic_baselines():
    def permutations(seed):
        return lodo.create("LODO", _x(), seed=seed).state_dict()["state"][0]["permutations"]

    assert torch.equal(permutations(3), permutations(3))
    assert not torch.equal(permutations(3), permutations(4))
    assert isinstance(lodo.create("Adam", _x(), seed=123), torch.optim.Adam)  # accepted, unused


@pytest.mark.parametrize("task", sorted(TABLE6))
def test_paper_hyperparameters_match_table6(task):
    loaded = lodo.paper_hyperparameters(task)
    assert set(loaded) == set(TABLE6[task])
    for optimizer, values in TABLE6[task].items():
        assert loaded[optimizer] == pytest.approx(values, rel=1e-12), optimizer


def test_paper_hparams_unknown_task_lists_the_tasks():
    with pytest.raises(ValueError, match=r"Unknown task: 'mnist' \(valid: noisy_bowl, rosenbrock"):
        lodo.paper_hyperparameters("mnist")
