"""User tasks (docs/tasks.md): resolution from a module, a file and the object, display names,
Ray's runtime_env, one-line errors, and SupervisedTask's determinism and bit-identical resume."""
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lodo
import tasks
from tasks.supervised import SupervisedTask
from tuner.driver.schedule import load_schedule, space_for, template
from tuner.trial.loop import run_trial

from conftest import LINEAR_FIT_TASK, train_by_hand

ROOT = Path(__file__).resolve().parents[2]

# A task module the project has never seen: a hand-written Task, a SupervisedTask factory, bad entries.
USER_MODULE = LINEAR_FIT_TASK + textwrap.dedent('''
    from torch import nn
    from tasks.supervised import SupervisedTask

    def blobs(seed=0, device="cpu", hidden=4):
        g = torch.Generator().manual_seed(123)
        x = torch.randn(64, 2, generator=g)
        y = (x.sum(1) > 0).long()
        return SupervisedTask(model=lambda: nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2)),
                              loss=nn.functional.cross_entropy, data=(x, y), batch_size=16,
                              seed=seed, device=device, name="blobs")

    def named(seed=0, device="cpu", **options):
        return LinearFit(seed=seed, device=device, **options)
    named.name = "named_factory"

    class NotATask:
        def __init__(self, seed=0, device="cpu"):
            pass

    class Abstract(Task):
        pass

    class Clash(LinearFit):
        name = "noisy_bowl"

    def returns_a_list(seed=0, device="cpu"):
        return [seed]

    def no_seed(device="cpu"):
        return LinearFit(device=device)

    CONSTANT = 3
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A fresh module name per test (file and sys.modules entry), removed afterwards."""
    name = f"usertask_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def test_file_spec_resolves_class_and_factory_with_display_names(user_module, tmp_path):
    path = tmp_path / f"{user_module}.py"
    spec = tasks.resolve(f"{user_module}.py:LinearFit")
    assert spec.name == "linear_fit" and not spec.builtin
    assert spec.ref == f"{user_module}:LinearFit"
    assert spec.source == f"{path.resolve()}:LinearFit"
    assert spec.runtime_env == {"py_modules": [str(path.resolve())]}  # Ray: a single-file module
    assert spec.options() == ["dim"]
    task = tasks.create(f"{user_module}.py:LinearFit", seed=4, dim=5)
    assert type(task).__name__ == "LinearFit" and task.w.shape == (5,) and task.seed == 4
    assert tasks.resolve(f"{user_module}.py:blobs").name == "blobs"            # a factory: its Name
    assert tasks.resolve(f"{user_module}.py:named").name == "named_factory"    # ... or its `name`
    assert tasks.resolve(spec.ref).factory is spec.factory                    # what a worker resolves


def test_module_spec_and_package_ship_through_py_modules(tmp_path, monkeypatch):
    package = f"userpkg_{uuid.uuid4().hex[:8]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "mytasks.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        spec = tasks.resolve(f"{package}.mytasks:LinearFit")
        assert spec.ref == spec.source == f"{package}.mytasks:LinearFit"
        assert spec.runtime_env == {"py_modules": [str(tmp_path / package)]}  # Ray: the package's directory
        assert isinstance(tasks.create(spec.ref, seed=1), tasks.Task)
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == package]:
            del sys.modules[name]


def test_class_and_factory_objects_resolve_with_their_names(user_module):
    module = tasks.resolve(f"{user_module}.py:LinearFit").factory.__module__
    cls, factory = sys.modules[module].LinearFit, sys.modules[module].blobs
    assert tasks.resolve(cls).name == "linear_fit" and tasks.resolve(cls).ref is cls
    assert tasks.resolve(factory).name == "blobs"
    assert tasks.resolve(cls).source.endswith(f"{user_module}.py:LinearFit")  # rebuildable from the file
    assert isinstance(tasks.create(factory, seed=2, hidden=3), SupervisedTask)


def test_builtin_tasks_keep_their_names_and_need_no_runtime_env():
    spec = tasks.resolve("noisy_bowl")
    assert (spec.name, spec.builtin, spec.runtime_env, spec.ref) == ("noisy_bowl", True, {}, "noisy_bowl")
    assert tasks.options("noisy_bowl") == ["noise_variance", "dim"]


@pytest.mark.parametrize("spec, culprit", [
    ("no_such_module_xyz:Task", "module 'no_such_module_xyz' not found"),
    ("missing/file.py:Task", "file 'missing/file.py' not found"),
    ("{m}.py:Nope", "'Nope' not found"),
    ("{m}.py:NotATask", "NotATask is a class but not a tasks.Task subclass"),
    ("{m}.py:CONSTANT", "not a tasks.Task subclass or a factory"),
    ("{m}.py:Abstract", "does not implement"),
    ("{m}.py:Clash", "'noisy_bowl' is a built-in task's"),
    ("{m}.py:no_seed", "must accept seed and device"),
    ("noisy_bowel", "valid: noisy_bowl"),
])
def test_bad_task_specs_raise_one_line_naming_the_culprit(user_module, spec, culprit):
    spec = spec.format(m=user_module)
    with pytest.raises(ValueError) as error:
        tasks.resolve(spec)
    message = str(error.value)
    assert "\n" not in message and repr(spec) in message and culprit in message, message


def test_a_factory_returning_a_non_task_fails_when_called(user_module):
    spec = tasks.resolve(f"{user_module}.py:returns_a_list")  # only calling it can tell
    with pytest.raises(ValueError, match=r"returned list, not a tasks.Task") as error:
        spec.create(seed=0)
    assert "\n" not in str(error.value)


def test_unknown_option_of_a_user_task_is_refused_naming_it(user_module):
    with pytest.raises(ValueError, match=r"Unknown option for task 'linear_fit': dimm \(valid: dim\)"):
        tasks.create(f"{user_module}.py:LinearFit", dimm=2)


# --- SupervisedTask ------------------------------------------------------------------------------


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return x, (x[:, 0] > 0).long()


def _task(seed=0, dropout=0.0, **kw):
    return SupervisedTask(model=lambda: nn.Sequential(nn.Linear(3, 6), nn.Dropout(dropout), nn.Linear(6, 2)),
                          loss=F.cross_entropy, data=_data(), batch_size=8, seed=seed, **kw)


def _flat(task):
    return torch.cat([p.detach().reshape(-1) for p in task.parameters()])


def test_same_seed_same_weights_and_batches_whatever_the_global_rng():
    torch.manual_seed(1)
    a = _task(seed=5)
    torch.manual_seed(2)
    b = _task(seed=5)
    assert torch.equal(_flat(a), _flat(b))
    for _ in range(3):
        x, y = a.sample(), b.sample()
        assert torch.equal(x.inputs, y.inputs) and x.seed == y.seed
    assert not torch.equal(_flat(a), _flat(_task(seed=6)))


def test_the_task_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    task = _task(dropout=0.5)
    task.loss(task.sample()).backward()
    assert torch.equal(torch.get_rng_state(), before)


def test_every_evaluation_of_a_batch_sees_the_same_dropout():
    task = _task(dropout=0.5)
    batch = task.sample()
    assert torch.equal(task.loss(batch), task.loss(batch))


def test_resume_from_state_dict_is_bit_identical():
    reference = _task(seed=3, dropout=0.3)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=0.01)
    expected = train_by_hand(reference, ref_opt, 20)

    first = _task(seed=3, dropout=0.3)
    first_opt = torch.optim.Adam(first.parameters(), lr=0.01)
    losses = train_by_hand(first, first_opt, 8)
    saved, saved_opt = first.state_dict(), first_opt.state_dict()
    resumed = _task(seed=99, dropout=0.3)  # another seed: everything must come from the state
    resumed.load_state_dict(saved)
    resumed_opt = torch.optim.Adam(resumed.parameters(), lr=0.01)
    resumed_opt.load_state_dict(saved_opt)
    losses += train_by_hand(resumed, resumed_opt, 12)
    assert losses == expected


def test_evaluate_scores_the_held_out_data_in_chunks():
    x, y = _data(n=50, seed=7)
    task = _task(held_out=(x, y), eval_batch_size=7)
    metrics = task.evaluate()
    with torch.no_grad():
        logits = task.model.eval()(x)
    task.model.train()
    assert metrics["test_loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert metrics["test_accuracy"] == int((logits.argmax(1) == y).sum()) / len(y)
    assert task.model.training and _task().evaluate() == {}


def test_a_custom_sampler_draws_from_the_task_generator():
    x, y = _data()
    make = lambda seed: SupervisedTask(model=lambda: nn.Linear(3, 2), loss=F.cross_entropy,  # noqa: E731
                                       sample=lambda g: (x[torch.randint(40, (4,), generator=g)], y[:4]), seed=seed)
    assert torch.equal(make(1).sample().inputs, make(1).sample().inputs)
    assert not torch.equal(make(1).sample().inputs, make(2).sample().inputs)


@pytest.mark.parametrize("kwargs, field", [
    ({"model": nn.Linear(3, 2)}, "model"), ({"loss": 3}, "loss"), ({"data": None}, "data/sample"),
    ({"batch_size": 0}, "batch_size"), ({"data": (torch.zeros(3, 1), torch.zeros(2))}, "data"),
])
def test_bad_supervised_task_arguments_name_the_field(kwargs, field):
    base = {"model": lambda: nn.Linear(3, 2), "loss": F.cross_entropy, "data": _data(), "batch_size": 4}
    with pytest.raises(ValueError, match=f"^Invalid {field}:"):
        SupervisedTask(**(base | kwargs))


# --- trials and the example -----------------------------------------------------------------------


@pytest.fixture
def adamw():
    spec = lodo.register(name="AdamW-test", optimizer="torch.optim.AdamW",
                         hyperparameters={"lr": {"default": 1e-2, "scale": "log"},
                                          "betas.0": {"default": 0.9, "scale": "decay"}},
                         fixed={"eps": 1e-8})
    yield spec.name
    lodo.unregister(spec.name)


@pytest.mark.parametrize("optimizer, hparams", [("LODO", {}), ("Adam", {"lr": 0.01}),
                                                ("AdamW-test", {"lr": 0.01, "betas.0": 0.8})])
def test_run_trial_trains_a_user_task_given_by_file_and_by_class(user_module, adamw, optimizer, hparams):
    spec = tasks.resolve(f"{user_module}.py:blobs")
    by_file = run_trial(f"{user_module}.py:blobs", optimizer, hparams, 150, seed=0)
    by_object = run_trial(spec.factory, optimizer, hparams, 150, seed=0)
    assert not by_file.diverged and np.array_equal(by_file.losses, by_object.losses)
    assert by_file.losses[-15:].mean() < by_file.losses[:15].mean()


def test_the_digits_example_runs_its_tiny_schedule(monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.chdir(ROOT)
    try:
        spec = tasks.resolve("examples/digits/digits.py:digits")
        schedule = load_schedule("examples/digits/tiny.yaml", task_names=[spec.name])
        assert spec.name == schedule.task == "digits" and schedule.optimizers == ("LODO", "Adam", "AdamW")
        for name, specs in schedule.optimizer_specs.items():
            lodo.register(specs)
        for optimizer in schedule.optimizers:
            hparams = {d.name: d.default for d in space_for(schedule, optimizer)}
            result = run_trial(spec.ref, optimizer, hparams, schedule.generations[0].steps, seed=0,
                               task_options=schedule.task_options)
            assert np.isfinite(result.final_loss), optimizer
        task = spec.create(seed=0, **schedule.task_options)
        assert set(task.evaluate()) == {"test_loss", "test_accuracy"} and task.info()["num_train"] == 1500
    finally:
        for name in schedule.optimizer_specs if "schedule" in locals() else ():
            lodo.unregister(name)
        sys.modules.pop("digits", None)


def test_the_schedule_template_loads_as_is(tmp_path):
    path = tmp_path / "schedule.yaml"
    path.write_text(template())
    schedule = load_schedule(path)
    assert schedule.task is None and schedule.optimizers == ("LODO", "Adam", "AdamW")
    assert [d.name for d in space_for(schedule, "AdamW")] == ["lr", "weight_decay", "betas.0"]
