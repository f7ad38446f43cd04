"""The pre-flight (issue 37): a user's task or optimizer that cannot run is exit 2 naming it, with one
line and no run directory, before the first trial; the paper's runs pay nothing for it and the
global random generators are left as they were."""
import random
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import lodo
import tasks
from tuner.driver.plan import PlanError, make_plan

ROOT = Path(__file__).resolve().parents[3]

# A module no one on the team wrote: tasks built with SupervisedTask and its usual mistakes, and an
# optimizer whose constructor swallows unknown keywords (as most of pytorch_optimizer's do).
USER = textwrap.dedent('''
    import torch
    from torch import nn
    from torch.nn import functional as F
    from tasks.supervised import SupervisedTask

    def _data():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 3, generator=g)
        return x, (x[:, 0] > 0).long()

    def _task(loss, seed, device, cls=SupervisedTask):
        x, y = _data()
        return cls(model=lambda: nn.Linear(3, 2), loss=loss, data=(x, y), batch_size=8, held_out=(x, y),
                   seed=seed, device=device, name="blobs")

    def good(seed=0, device="cpu"):
        return _task(F.cross_entropy, seed, device)

    def per_sample(seed=0, device="cpu"):
        return _task(lambda out, y: F.cross_entropy(out, y, reduction="none"), seed, device)

    def detached(seed=0, device="cpu"):
        return _task(lambda out, y: F.cross_entropy(out.detach(), y), seed, device)

    def nan(seed=0, device="cpu"):
        return _task(lambda out, y: F.cross_entropy(out, y) * float("nan"), seed, device)

    class FloatEvaluate(SupervisedTask):
        def evaluate(self):
            return 0.5

    def float_evaluate(seed=0, device="cpu"):
        return _task(F.cross_entropy, seed, device, cls=FloatEvaluate)

    def frozen(seed=0, device="cpu"):  # a frozen first layer, as when fine-tuning: not a mistake
        task = good(seed, device)
        task.model.weight.requires_grad_(False)
        return task

    def global_rng(seed=0, device="cpu"):
        torch.randn(3)  # a user factory drawing from the global generator
        return good(seed, device)

    class KwOpt(torch.optim.Optimizer):
        """SGD with decoupled weight decay; unknown keywords land in **kwargs and are ignored."""

        def __init__(self, params, lr=0.1, weight_decay=0.0, **kwargs):
            super().__init__(params, dict(lr=lr, weight_decay=weight_decay))

        @torch.no_grad()
        def step(self, closure=None):
            with torch.enable_grad():
                loss = closure()
            for group in self.param_groups:
                for p in (p for p in group["params"] if p.grad is not None):
                    p.mul_(1 - group["lr"] * group["weight_decay"]).add_(p.grad, alpha=-group["lr"])
            return loss

    class KeepsKwargs(KwOpt):
        """Keeps every keyword in its defaults, read or not (as pytorch_optimizer's optimizers do)."""

        def __init__(self, params, lr=0.1, weight_decay=0.0, **kwargs):
            torch.optim.Optimizer.__init__(self, params, dict(lr=lr, weight_decay=weight_decay, **kwargs))

    class ForwardsKwargs(torch.optim.AdamW):
        """A real argument through **kwargs: AdamW's betas."""

        def __init__(self, params, lr=0.1, **kwargs):
            super().__init__(params, lr=lr, **kwargs)

    class NeedsTrainMode(KwOpt):
        """Like schedulefree's optimizers: step() refuses until .train() was called."""

        def step(self, closure=None):
            raise ValueError("Optimizer was not in train mode when step is called")

    class TrainEval(KwOpt):
        """Has train()/eval() modes, as schedulefree's optimizers do: step() refuses in eval mode."""

        training = False

        def train(self):
            self.training = True

        def eval(self):
            self.training = False

        def step(self, closure=None):
            if not self.training:
                raise ValueError("Optimizer was not in train mode when step is called")
            return super().step(closure)
''')


@pytest.fixture
def user(tmp_path, monkeypatch):
    """(file, module name) of a fresh copy of USER, importable as a module (for `optimizer:` entries)."""
    name = f"pre_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(USER)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / f"{name}.py", name
    sys.modules.pop(name, None)


def _schedule(tmp_path, optimizers) -> str:
    path = tmp_path / f"schedule-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump({"population": 2, "generations": [{"noise": 1, "steps": 10}],
                                    "optimizers": optimizers, "full_run": {"steps": 10, "seeds": 1,
                                                                           "time_milestone_s": None},
                                    "lr_scale": 1}))
    return str(path)


def _kw(module, hyperparameters, optimizer="KwOpt"):
    return {"name": optimizer, "optimizer": f"{module}.{optimizer}", "hyperparameters": hyperparameters}


def _refused(task, schedule, tmp_path, **kw) -> PlanError:
    with pytest.raises(PlanError) as info:
        make_plan(task, schedule=schedule, run_dir=tmp_path / "run", **kw)
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()
    return info.value


@pytest.mark.parametrize("optimizer", ["KwOpt", "KeepsKwargs"])
def test_a_misspelt_hyperparameter_on_a_kwargs_optimizer_is_refused_naming_it(user, tmp_path, optimizer):
    file, module = user
    ok = make_plan(f"{file}:good", schedule=_schedule(tmp_path, ["Adam", _kw(module, {
        "lr": {"default": 0.1, "scale": "log"}, "weight_decay": {"default": 0.01, "scale": "log"}}, optimizer)]),
        run_dir=tmp_path / "run")
    assert ok.optimizers == ("Adam", optimizer)
    error = _refused(f"{file}:good", _schedule(tmp_path, [_kw(module, {
        "lr": {"default": 0.1, "scale": "log"}, "weight_decy": {"default": 0.01, "scale": "log"}}, optimizer)]),
        tmp_path)
    assert error.parameter == "schedule" and f"'{optimizer}'" in str(error) and "'weight_decy'" in str(error)
    assert "weight_decay" in str(error)  # what a step reads


def test_a_real_argument_through_kwargs_is_accepted(user, tmp_path):
    file, module = user
    plan = make_plan(f"{file}:good", schedule=_schedule(tmp_path, [_kw(module, {
        "lr": {"default": 0.01, "scale": "log"}, "weight_decay": {"default": 0.01, "scale": "log"}},
        "ForwardsKwargs")]), run_dir=tmp_path / "run")
    assert plan.optimizers == ("ForwardsKwargs",)


def test_a_misspelt_fixed_argument_is_refused_too(user, tmp_path):
    file, module = user
    entry = {**_kw(module, {"lr": {"default": 0.1, "scale": "log"}}), "fixed": {"wd": 0.1}}
    error = _refused(f"{file}:good", _schedule(tmp_path, [entry]), tmp_path)
    assert "'wd'" in str(error) and "KwOpt" in str(error)


@pytest.mark.parametrize("factory, words", [
    ("per_sample", ["shape (8,)", "not a scalar"]),
    ("detached", ["no graph"]),
    ("nan", ["nan"]),
    ("float_evaluate", ["evaluate()", "float"]),
])
def test_a_task_mistake_is_refused_naming_the_task_and_the_cause(user, tmp_path, factory, words):
    file, _ = user
    error = _refused(f"{file}:{factory}", _schedule(tmp_path, ["Adam"]), tmp_path)
    assert error.parameter == "task" and str(error).startswith(f"task: '{factory}': ")
    for word in words:
        assert word in str(error)


def test_a_task_with_a_frozen_parameter_passes(user, tmp_path):
    file, module = user
    plan = make_plan(f"{file}:frozen", schedule=_schedule(tmp_path, ["LODO", "Adam", "L-BFGS", _kw(module, {
        "lr": {"default": 0.1, "scale": "log"}})]), run_dir=tmp_path / "run")
    assert plan.optimizers == ("LODO", "Adam", "L-BFGS", "KwOpt")


def test_an_optimizer_whose_step_raises_is_refused_naming_it(user, tmp_path):
    file, module = user
    error = _refused(f"{file}:good", _schedule(tmp_path, ["Adam", _kw(module, {
        "lr": {"default": 0.1, "scale": "log"}}, "NeedsTrainMode")]), tmp_path)
    assert error.parameter == "optimizers" and str(error).startswith("optimizers: NeedsTrainMode: ")
    assert "not in train mode" in str(error)


def test_given_values_an_optimizer_refuses_are_exit_2_on_a_paper_task(tmp_path):
    error = _refused("noisy_bowl", None, tmp_path, optimizers=["Adam"],
                     hyperparameters={"Adam": {"lr": 0.1, "beta1": 1.5, "beta2": 0.999}})
    assert error.parameter == "hyperparameters" and "Adam" in str(error) and "beta" in str(error)


def test_a_divergence_at_the_starting_values_is_left_to_the_trials(user, tmp_path):
    file, module = user
    plan = make_plan(f"{file}:good", schedule=_schedule(tmp_path, [_kw(module, {"lr": {"default": 1e30, "scale": "log"}})]),
                     run_dir=tmp_path / "run")
    assert plan.optimizers == ("KwOpt",)


def test_the_paper_tasks_with_our_optimizers_build_nothing(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("the pre-flight built something")

    monkeypatch.setattr(lodo, "create", refuse)
    monkeypatch.setattr(tasks, "create", refuse)
    for task in ("noisy_bowl", "rosenbrock", "image_generation"):
        make_plan(task, run_dir=tmp_path / "run")
    make_plan("noisy_bowl", run_dir=tmp_path / "run", hyperparameters="paper")


def test_the_global_random_generators_are_left_as_they_were(user, tmp_path):
    file, module = user
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    before = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    make_plan(f"{file}:global_rng", schedule=_schedule(tmp_path, ["LODO", "Adam", _kw(module, {
        "lr": {"default": 0.1, "scale": "log"}})]), run_dir=tmp_path / "run")
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1]) and random.getstate() == before[2]


def test_the_cli_exits_2_with_one_line_and_no_run_directory(user, tmp_path):
    file, module = user
    schedule = _schedule(tmp_path, [_kw(module, {"lr": {"default": 0.1, "scale": "log"},
                                                 "weight_decy": {"default": 0.01, "scale": "log"}})])
    for task, words in ((f"{file}:per_sample", ["--task:", "not a scalar"]),
                        (f"{file}:good", ["--schedule:", "'weight_decy'"])):
        done = subprocess.run([sys.executable, "-m", "cli", "--task", task, "--schedule", schedule,
                               "--run-dir", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True,
                              env={"PYTHONPATH": f"{ROOT}:{tmp_path}", "PATH": "/usr/bin:/bin"}, timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr
        assert all(w in lines[0] for w in words), lines[0]
        assert not (tmp_path / "run").exists() and not (ROOT / "runs" / "blobs").exists()


@pytest.mark.parametrize("value", [-1, "abc", float("nan")])
def test_task_options_a_paper_task_refuses_are_exit_2(tmp_path, value):
    error = _refused("noisy_bowl", None, tmp_path, schedule_overrides={"task_options": {"noise_variance": value}})
    assert "noise_variance" in str(error)  # named by the pre-flight, or by a check of the options before it


def test_the_pre_flight_steps_as_a_trial_does_with_the_recipe_and_modes(user, tmp_path):
    """A tuned recipe value (clip_grad_norm) is the recipe's, not a constructor argument, and an
    optimizer with train()/eval() is put in train mode: the run is accepted, as its trials would run."""
    file, module = user
    schedule = tmp_path / "recipe.yaml"
    schedule.write_text(yaml.safe_dump({
        "population": 2, "generations": [{"noise": 1, "steps": 10}],
        "optimizers": [_kw(module, {"lr": {"default": 0.1, "scale": "log"}}, "TrainEval")],
        "recipe": {"TrainEval": {"clip_grad_norm": {"default": 1.0, "scale": "log"},
                                 "lr_schedule": {"name": "cosine", "warmup": 0.1}}},
        "full_run": {"steps": 10, "seeds": 1, "time_milestone_s": None}, "lr_scale": 1}))
    plan = make_plan(f"{file}:good", schedule=str(schedule), run_dir=tmp_path / "run")
    assert plan.optimizers == ("TrainEval",) and not (tmp_path / "run").exists()
