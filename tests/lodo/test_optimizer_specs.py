"""Any torch optimizer as a lodo.OptimizerSpec (docs/tasks.md): registration, tuple entries,
validation against the constructor's signature and the scales' domains, and schedules' mappings."""
import pytest
import torch

import lodo
from lodo import Hyperparameter, OptimizerSpec, OptimizerSpecError
from tuner.driver.schedule import Schedule, ScheduleError, load_schedule, space_for

ADAMW = {"name": "AdamW-spec", "optimizer": "torch.optim.AdamW",
         "hyperparameters": {"lr": {"default": 1e-3, "scale": "log"},
                             "weight_decay": {"default": 1e-2, "scale": "log"},
                             "betas.0": {"default": 0.9, "scale": "decay"}},
         "fixed": {"eps": 1e-8}}


@pytest.fixture
def registered():
    """Names registered by a test, unregistered afterwards so no other test sees them."""
    names = []
    yield names
    for name in names:
        if lodo.registered(name) is not None:
            lodo.unregister(name)


def _params():
    return [torch.zeros(3, requires_grad=True)]


def test_a_registered_spec_is_known_by_name(registered):
    spec = lodo.register(OptimizerSpec.from_dict(ADAMW))
    registered.append(spec.name)
    assert lodo.available()[-1] == "AdamW-spec"
    assert lodo.hyperparameters("AdamW-spec") == [Hyperparameter("lr", 1e-3, "log"),
                                                  Hyperparameter("weight_decay", 1e-2, "log"),
                                                  Hyperparameter("betas.0", 0.9, "decay")]
    assert "amsgrad" in lodo.options("AdamW-spec") and "lr" not in lodo.options("AdamW-spec")
    opt = lodo.create("AdamW-spec", _params(), lr=0.5, **{"betas.0": 0.25})
    assert isinstance(opt, torch.optim.AdamW)
    # betas[0] tuned, betas[1] AdamW's own default, eps fixed, weight_decay the spec's default
    assert opt.defaults["betas"] == (0.25, 0.999) and opt.defaults["eps"] == 1e-8
    assert (opt.defaults["lr"], opt.defaults["weight_decay"]) == (0.5, 1e-2)


def test_keyword_registration_equals_the_spec_and_repeating_it_is_a_no_op(registered):
    first = lodo.register(**ADAMW)
    registered.append(first.name)
    assert first == OptimizerSpec.from_dict(ADAMW) and lodo.register(**ADAMW) == first
    with pytest.raises(OptimizerSpecError, match="already registered with a different spec"):
        lodo.register(**(ADAMW | {"fixed": {"eps": 1e-6}}))
    lodo.unregister(first.name)
    assert first.name not in lodo.available()


def test_a_tuple_entry_takes_the_rest_from_fixed():
    spec = OptimizerSpec("Adam-b2", torch.optim.Adam, [Hyperparameter("betas.1", 0.99, "decay")],
                         {"betas.0": 0.5})
    opt = lodo.create(spec, _params())  # a spec object works without registration
    assert opt.defaults["betas"] == (0.5, 0.99)


def test_a_factory_and_a_class_object_are_accepted():
    def sgd(params, lr=0.1, momentum=0.0):
        return torch.optim.SGD(params, lr=lr, momentum=momentum)

    by_factory = OptimizerSpec("sgd-factory", sgd, {"lr": {"default": 0.1, "scale": "log"}})
    opt = lodo.create(by_factory, _params(), lr=0.2)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["lr"] == 0.2
    by_class = OptimizerSpec("sgd-class", torch.optim.SGD, [Hyperparameter("momentum", 0.5, "decay")], {"lr": 0.3})
    assert lodo.create(by_class, _params()).defaults["momentum"] == 0.5


def test_the_mapping_round_trips():
    spec = OptimizerSpec.from_dict(ADAMW)
    assert OptimizerSpec.from_dict(spec.to_dict()) == spec and spec.to_dict() == ADAMW


def _not_an_optimizer(params, lr=0.1):
    return [lr]


@pytest.mark.parametrize("change, field, allowed", [
    ({"optimizer": "torch.optim.AdamX"}, "optimizer", "does not resolve"),
    ({"optimizer": "no_such_package.Opt"}, "optimizer", "does not resolve"),
    ({"optimizer": "torch.nn.Linear"}, "optimizer", "must be a torch.optim.Optimizer subclass"),
    ({"optimizer": f"{__name__}._not_an_optimizer", "hyperparameters": {}, "fixed": {}}, "optimizer",
     "the factory returned list"),
    ({"hyperparameters": {"lrr": {"default": 1.0, "scale": "log"}}}, "hyperparameters.lrr", "not an argument"),
    ({"fixed": {"epsilon": 1e-8}}, "fixed.epsilon", "not an argument of AdamW"),
    ({"hyperparameters": {"lr": {"default": -1, "scale": "log"}}}, "hyperparameters.lr.default",
     "must be > 0 for scale log"),
    ({"hyperparameters": {"betas.0": {"default": 1.0, "scale": "decay"}}}, "hyperparameters.betas.0.default",
     "must be in [0, 1) for scale decay"),
    ({"hyperparameters": {"lr": {"default": 1e-3, "scale": "linear"}}}, "hyperparameters.lr.scale",
     "must be one of: log, decay"),
    ({"hyperparameters": {"betas.2": {"default": 0.5, "scale": "decay"}}}, "hyperparameters.betas.2",
     "betas has 2 entries"),
    ({"fixed": {"lr": 0.1}}, "fixed.lr", "is both tuned and fixed"),
    ({"fixed": {"eps": -1.0}}, "optimizer", "Invalid epsilon value"),  # the constructor's own check
    ({"name": "Adam"}, "name", "already a registry optimizer"),
    ({"name": "has space"}, "name", "must be letters"),
])
def test_bad_specs_raise_one_line_naming_the_field(change, field, allowed, registered):
    with pytest.raises(OptimizerSpecError) as error:
        lodo.register(OptimizerSpec.from_dict(ADAMW | change))
    assert error.value.field == field and isinstance(error.value, ValueError)
    message = str(error.value)
    assert "\n" not in message and f": {field}: " in message and allowed in message, message


# --- schedules ------------------------------------------------------------------------------------

BASE = {"population": 2, "generations": [{"noise": 1, "steps": 5}],
        "full_run": {"steps": 10, "seeds": 1, "time_milestone_s": None}, "lr_scale": 1}


def test_a_schedule_mixes_registry_names_and_mappings():
    schedule = Schedule.from_dict(BASE | {"optimizers": ["LODO", "Adam", ADAMW], "start": {"AdamW-spec": {"lr": 0.02}},
                                          "scales": {"AdamW-spec": {"weight_decay": "decay"}}})
    assert schedule.task is None and schedule.optimizers == ("LODO", "Adam", "AdamW-spec")
    assert "AdamW-spec" not in lodo.available()  # validating a schedule registers nothing
    assert [tuple(d) for d in space_for(schedule, "AdamW-spec")] == [
        ("lr", 0.02, "log"), ("weight_decay", 1e-2, "decay"), ("betas.0", 0.9, "decay")]
    assert Schedule.from_dict(schedule.to_dict()) == schedule
    assert schedule.to_dict()["optimizers"][2] == ADAMW


@pytest.mark.parametrize("optimizers, message", [
    (["Adam", ADAMW | {"hyperparameters": {"lr": {"default": -1, "scale": "log"}}}],
     "optimizers[1].hyperparameters.lr.default: -1 is not allowed (must be > 0 for scale log)"),
    ([ADAMW, ADAMW], "optimizers[1].name: 'AdamW-spec' is not allowed (must not repeat an optimizer)"),
    ([ADAMW | {"name": "LODO"}], "optimizers[0].name: 'LODO' is not allowed (must not be a registry optimizer's name"),
    ([ADAMW | {"optimiser": "x"}], "optimizers[0].optimiser: unknown key"),
    ([ADAMW | {"hyperparameters": {"lr": {"default": 1e-3}}}], "optimizers[0].hyperparameters.lr.scale: missing"),
    ([{k: v for k, v in ADAMW.items() if k != "optimizer"}], "optimizers[0].optimizer: missing (required)"),
])
def test_bad_optimizer_entries_are_schedule_errors_naming_the_field(optimizers, message):
    with pytest.raises(ScheduleError) as error:
        Schedule.from_dict(BASE | {"optimizers": optimizers}, source="mine.yaml")
    assert str(error.value).startswith(f"mine.yaml: {message}"), str(error.value)


def test_task_is_optional_and_checked_when_given(tmp_path):
    assert Schedule.from_dict(BASE | {"optimizers": ["Adam"]}).task is None
    assert Schedule.from_dict(BASE | {"optimizers": ["Adam"], "task": "digits"}, task_names=["digits"]).task == "digits"
    with pytest.raises(ScheduleError, match="task: 'digit' is not allowed"):
        Schedule.from_dict(BASE | {"optimizers": ["Adam"], "task": "digit"}, task_names=["digits"])
    path = tmp_path / "s.yaml"
    path.write_text("population: 2\ngenerations: [{noise: 1, steps: 5}]\noptimizers: [Adam]\n"
                    "full_run: {steps: 10, seeds: 1, time_milestone_s: null}\nlr_scale: 1\n")
    assert load_schedule(path).task is None
