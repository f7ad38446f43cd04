"""The optimizer registry: paper names, docs/paper.md §2's hyperparameter table, Table 6 as data."""
from pathlib import Path

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

def _table6_from_docs() -> dict:
    """Table 6 as docs/paper.md §5 prints it (the prose reference, written independently of
    lodo/paper.py): {task: {optimizer: {hyperparameter: value}}}."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "paper.md").read_text(encoding="utf-8")
    section = text[text.index("## 5. Table 6"):text.index("## 6.")]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    tasks = [c.strip() for c in rows[0][2:]]
    table = {task: {} for task in tasks}
    for row in rows[1:]:
        optimizer, names = row[0].strip(), [n.strip() for n in row[1].split("/")]
        for task, cell in zip(tasks, row[2:]):
            if cell.strip() != "—":
                table[task][optimizer] = dict(zip(names, (float(v) for v in cell.split("/"))))
    return table


TABLE6 = _table6_from_docs()
# Not in Table 6 (docs/paper.md §2): the λ that gives Table 1's 7.40.
TABLE6["noisy_bowl"]["Levenberg-Marquardt"] = {"damping": 1e-4}


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
