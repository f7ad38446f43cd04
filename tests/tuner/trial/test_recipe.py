"""The user's training recipe (issue 38): learning-rate schedules against their closed forms, gradient
clipping against the norm computed by hand, parameter groups' weight decay, optimizer train/eval
modes, resume bit for bit, and the schedule's `recipe:` field (validation, tuned values)."""
import math

import pytest
import torch
from torch import nn

import lodo
import tasks
from tasks.noisy_bowl import NoisyBowl
from tasks.supervised import SupervisedTask
from tuner.trial.recipe import split
from tuner.driver.schedule import Schedule, ScheduleError, space_for
from tuner.trial.loop import Job, batchable, run_job, run_trial

from conftest import Interrupted, interrupt_after


def _lrs(opt) -> list[float]:
    """The lr of every optimizer step, read by torch's step pre-hook."""
    seen = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append(o.param_groups[0]["lr"]))
    return seen


def _closed_form(kind: str, e: int, steps: int, warmup=0.0, final=0.0, milestones=(), gamma=0.1) -> float:
    """The factor written out independently of tuner.trial.recipe (module docstring's formulas)."""
    w = warmup * steps
    if e < w:
        return min(1.0, (e + 1) / w)
    q = min(1.0, (e - w) / (steps - w))
    if kind == "cosine":
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * q))
    if kind == "linear":
        return 1 - (1 - final) * q
    if kind == "step":
        return gamma ** len([m for m in milestones if e >= m * steps])
    return 1.0


@pytest.mark.parametrize("schedule", [
    {"name": "cosine", "warmup": 0.1, "final": 0.1},
    {"name": "linear", "warmup": 0.25, "final": 0.0},
    {"name": "step", "milestones": [0.3, 0.6], "gamma": 0.5},
    {"name": "constant", "warmup": 0.05},
])
@pytest.mark.parametrize("optimizer", ["Momentum", "LODO", "L-BFGS"])
def test_the_lr_of_every_step_is_the_closed_form(schedule, optimizer):
    steps, base = 40, 0.3
    task = tasks.create("noisy_bowl", seed=1)
    opt = lodo.create(optimizer, task.parameters(), seed=1, lr=base)
    seen = _lrs(opt)
    run_trial(task, opt, None, steps, 1, recipe={"lr_schedule": schedule})
    per_step = 2 if optimizer == "L-BFGS" else 1  # the schedule counts evaluations (the budget's steps)
    args = {k: v for k, v in schedule.items() if k != "name"}
    expected = [base * _closed_form(schedule["name"], i * per_step, steps, **args) for i in range(len(seen))]
    assert len(seen) == steps // per_step
    assert seen == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_a_torch_scheduler_by_name_gets_its_arguments_and_the_run_length():
    steps = 30
    task = tasks.create("noisy_bowl", seed=0)
    opt = lodo.create("Adam", task.parameters(), lr=0.2)
    seen = _lrs(opt)
    run_trial(task, opt, None, steps, 0, recipe={"lr_schedule": {"name": "CosineAnnealingLR", "T_max": "run",
                                                                 "eta_min": 0.01}})
    expected = [0.01 + (0.2 - 0.01) * (1 + math.cos(math.pi * t / steps)) / 2 for t in range(steps)]
    assert seen == pytest.approx(expected, rel=1e-9)


def test_a_schedule_stretches_to_the_trial_length():
    for steps in (20, 80):
        task = tasks.create("noisy_bowl", seed=0)
        opt = lodo.create("Momentum", task.parameters(), lr=1.0)
        seen = _lrs(opt)
        run_trial(task, opt, None, steps, 0, recipe={"lr_schedule": {"name": "linear", "warmup": 0.25}})
        assert seen[steps // 4 - 1] == 1.0 and seen[steps // 4 - 2] < 1.0  # warm-up ends at a quarter
        assert seen[-1] == pytest.approx(1 - (steps - 1 - steps / 4) / (steps - steps / 4))


def _by_hand_clip(params, max_norm):
    total = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params))
    coef = min(1.0, max_norm / (total + 1e-6))
    for p in params:
        p.grad.mul_(coef)


def test_clipping_matches_the_norm_computed_by_hand():
    steps, max_norm = 25, 0.5
    task = tasks.create("noisy_bowl", seed=2)
    opt = torch.optim.SGD(task.parameters(), lr=0.05)
    run_trial(task, opt, None, steps, 2, recipe={"clip_grad_norm": max_norm})
    ref = tasks.create("noisy_bowl", seed=2)
    params = ref.parameters()
    ref_opt = torch.optim.SGD(params, lr=0.05)
    for _ in range(steps):
        batch = ref.sample()
        ref_opt.zero_grad()
        ref.loss(batch).backward()
        _by_hand_clip(params, max_norm)
        ref_opt.step()
    for p, q in zip(task.parameters(), params):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-7)
    unclipped = tasks.create("noisy_bowl", seed=2)
    run_trial(unclipped, torch.optim.SGD(unclipped.parameters(), lr=0.05), None, steps, 2)
    assert not torch.allclose(unclipped.parameters()[0], params[0], rtol=1e-3)  # the clip mattered


class TwoEvaluations(torch.optim.Optimizer):
    """A closure-based optimizer (as L-BFGS: two evaluations per step) that records each gradient's norm."""

    requires_closure = True

    def __init__(self, params, lr=0.1):
        super().__init__(params, {"lr": lr})
        self.norms = []

    @torch.no_grad()
    def step(self, closure):
        params = self.param_groups[0]["params"]
        for _ in range(2):
            with torch.enable_grad():
                closure()
            self.norms.append(math.sqrt(sum(float((p.grad ** 2).sum()) for p in params)))
        for p in params:
            p.add_(p.grad, alpha=-self.param_groups[0]["lr"])


def test_clipping_applies_inside_the_closure_of_closure_based_optimizers():
    task = tasks.create("noisy_bowl", seed=0)
    opt = TwoEvaluations(task.parameters(), lr=0.01)
    run_trial(task, opt, None, 20, 0, recipe={"clip_grad_norm": 0.25})
    assert len(opt.norms) == 20 and max(opt.norms) <= 0.25 * (1 + 1e-5)
    plain = tasks.create("noisy_bowl", seed=0)
    free = TwoEvaluations(plain.parameters(), lr=0.01)
    run_trial(plain, free, None, 20, 0)
    assert max(free.norms) > 0.25  # without the recipe the same run's gradients are larger


def _tiny_task(**kw):
    data = (torch.randn(64, 4, generator=torch.Generator().manual_seed(0)), torch.randint(3, (64,)))
    return SupervisedTask(model=lambda: nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3)),
                          loss=lambda out, y: 0.0 * out.sum(), data=data, batch_size=8, seed=0, **kw)


def test_weight_decay_leaves_the_no_decay_group_untouched():
    task = _tiny_task(no_weight_decay=["*.bias", "1.*"])
    before = {n: p.detach().clone() for n, p in task.model.named_parameters()}
    sgd = lodo.OptimizerSpec(name="SGD-wd", optimizer="torch.optim.SGD",
                             hyperparameters={"lr": {"default": 0.1, "scale": "log"},
                                              "weight_decay": {"default": 0.5, "scale": "log"}})
    run_trial(task, sgd, {"lr": 0.1, "weight_decay": 0.5}, 5, 0)
    for name, p in task.model.named_parameters():
        if name.endswith(".bias") or name.startswith("1."):
            assert torch.equal(p, before[name]), name  # the loss's gradient is 0: only decay could move it
        else:
            assert torch.allclose(p, before[name] * (1 - 0.1 * 0.5) ** 5, rtol=1e-6), name


def test_no_weight_decay_is_accepted_by_lodo_and_changes_nothing_there():
    data = (torch.randn(64, 4, generator=torch.Generator().manual_seed(0)), torch.randint(3, (64,)))
    make = lambda **kw: SupervisedTask(model=lambda: nn.Linear(4, 3), loss=nn.functional.cross_entropy,  # noqa: E731
                                       data=data, batch_size=8, seed=0, **kw)
    plain = run_trial(make(), "LODO", {}, 15, 0)
    grouped = run_trial(make(no_weight_decay="bias"), "LODO", {}, 15, 0)
    assert grouped.losses.tobytes() == plain.losses.tobytes()


def test_per_group_settings_lodo_cannot_honour_are_refused_in_one_line():
    task = _tiny_task()
    params = task.parameters()
    task.param_groups = lambda: [{"params": params[:2]}, {"params": params[2:], "lr": 0.01}]
    with pytest.raises(ValueError, match=r"Invalid param_groups: LODO cannot honour the task's per-group lr") as e:
        run_trial(task, "LODO", {}, 5, 0)
    assert "\n" not in str(e.value)


def test_a_pattern_that_matches_nothing_is_refused():
    with pytest.raises(ValueError, match=r"Invalid no_weight_decay: '\*.bais' matches no parameter name"):
        _tiny_task(no_weight_decay=["*.bais"])


class Averaging(torch.optim.Optimizer):
    """SGD with train()/eval() modes: eval() puts the running average of the iterates into the
    parameters, train() puts the iterates back (what schedule-free and averaging optimizers do)."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, {"lr": lr, "train_mode": False})

    def _swap(self):
        for p in self.param_groups[0]["params"]:
            state = self.state[p]
            state.setdefault("average", p.detach().clone())
            state.setdefault("count", torch.zeros(()))
            average = state["average"].clone()
            state["average"].copy_(p.detach())
            p.data.copy_(average)

    def train(self):
        if not self.param_groups[0]["train_mode"]:
            if self.state:
                self._swap()
            self.param_groups[0]["train_mode"] = True

    def eval(self):
        if self.param_groups[0]["train_mode"]:
            self._swap()
            self.param_groups[0]["train_mode"] = False

    @torch.no_grad()
    def step(self, closure=None):
        if not self.param_groups[0]["train_mode"]:
            raise RuntimeError("Averaging: call train() before step()")
        if closure is not None:
            with torch.enable_grad():
                closure()
        for p in self.param_groups[0]["params"]:
            p.add_(p.grad, alpha=-self.param_groups[0]["lr"])
            state = self.state[p]
            state.setdefault("average", p.detach().clone())
            state.setdefault("count", torch.zeros(()))
            state["count"] += 1
            state["average"].add_((p - state["average"]) / state["count"])


def _classification(**kw):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 4, generator=g), torch.randint(3, (96,), generator=g)
    return SupervisedTask(model=lambda: nn.Linear(4, 3), loss=nn.functional.cross_entropy, data=(x[:64], y[:64]),
                          held_out=(x[64:], y[64:]), batch_size=8, seed=0, **kw)


def test_an_optimizer_with_modes_is_stepped_in_train_and_evaluated_on_its_eval_weights():
    task = _classification()
    opt = Averaging(task.parameters(), lr=0.5)
    res = run_trial(task, opt, None, 30, 0, evaluate=True)  # would raise without train() before stepping
    assert opt.param_groups[0]["train_mode"]  # back in train mode after the evaluation
    training_weights = task.evaluate()
    opt.eval()
    assert res.held_out == task.evaluate()  # the evaluation saw the eval() (averaged) weights
    assert res.held_out != training_weights


def test_a_run_with_a_schedule_clipping_and_modes_resumes_bit_for_bit(tmp_path, monkeypatch):
    spec = lodo.OptimizerSpec(name="Averaging-test", optimizer=Averaging,
                              hyperparameters={"lr": {"default": 0.1, "scale": "log"}})
    recipe = {"lr_schedule": {"name": "cosine", "warmup": 0.2, "final": 0.05}, "clip_grad_norm": 2.0}
    trial = dict(task="noisy_bowl", optimizer=spec, hparams={"lr": 0.05}, steps=60, seed=3, recipe=recipe)
    reference = run_trial(**trial)
    path = tmp_path / "seed-0.ckpt"
    with monkeypatch.context() as m:
        interrupt_after(m, NoisyBowl, 25)
        with pytest.raises(Interrupted):
            run_trial(**trial, check_every=5, checkpoint=path, checkpoint_every_s=0)
    saved = torch.load(path, weights_only=True)
    assert saved["recipe"]["mode"] == "train" and saved["recipe"]["lr_scheduler"]["last_epoch"] > 0
    resumed = run_trial(**trial, check_every=5, checkpoint=path, checkpoint_every_s=0)
    assert resumed.losses.tobytes() == reference.losses.tobytes()
    other = dict(trial, recipe={**recipe, "clip_grad_norm": 3.0})
    with pytest.raises(ValueError, match="belongs to another trial"):  # the recipe is part of the fingerprint
        run_trial(**other, check_every=5, checkpoint=path, checkpoint_every_s=0)


def test_schedulefree_named_in_a_schedule_runs_with_no_factory():
    pytest.importorskip("schedulefree")  # optional: the in-test Averaging optimizer is the coverage
    spec = lodo.OptimizerSpec(name="SF", optimizer="schedulefree.AdamWScheduleFree",
                              hyperparameters={"lr": {"default": 1e-2, "scale": "log"}})
    task = _classification()
    res = run_trial(task, spec, {"lr": 0.01}, 20, 0, evaluate=True)
    assert math.isfinite(res.final_loss) and res.held_out


def _schedule(recipe, **more):
    return Schedule.from_dict({"task": "noisy_bowl", "population": 4, "generations": [{"noise": 1, "steps": 50}],
                               "optimizers": ["Adam", "LODO"], "full_run": {"steps": 100, "seeds": 1,
                                                                            "time_milestone_s": None},
                               "lr_scale": 1, "recipe": recipe, **more}, source="s.yaml")


def test_tuned_recipe_values_are_dimensions_and_reach_the_trial():
    schedule = _schedule({"Adam": {"lr_schedule": {"name": "cosine", "warmup": {"default": 0.1, "scale": "log"}},
                                   "clip_grad_norm": {"default": 1.0, "scale": "log"}}},
                         search={"bounds": {"Adam": {"clip_grad_norm": [0.01, 100]}}})
    names = [d.name for d in space_for(schedule, "Adam")]
    assert names[-2:] == ["lr_schedule.warmup", "clip_grad_norm"] and "clip_grad_norm" not in \
        [d.name for d in space_for(schedule, "LODO")]
    hparams, recipe = split(schedule.recipe["Adam"], {"lr": 0.1, "clip_grad_norm": 3.0})
    assert hparams == {"lr": 0.1}
    assert recipe == {"clip_grad_norm": 3.0, "lr_schedule": {"name": "cosine", "warmup": 0.1}}
    assert Schedule.from_dict(schedule.to_dict()).recipe == schedule.recipe
    job = Job(key=("tuning", "Adam", 0, 0), task="noisy_bowl", optimizer="Adam",
              hparams={"lr": 0.1, "beta1": 0.9, "beta2": 0.999, "clip_grad_norm": 3.0, "lr_schedule.warmup": 0.1},
              steps=30, seed=0, recipe=schedule.recipe["Adam"])
    assert not batchable(job)  # a recipe runs unbatched
    assert math.isfinite(run_job(job)["final_loss"])


@pytest.mark.parametrize("recipe,message", [
    ({"Adam": {"lr_schedule": {"name": "cosine", "warmup": 1.5}}},
     "s.yaml: recipe.Adam.lr_schedule.warmup: 1.5 is not allowed (must be a fraction of the run in [0, 1))"),
    ({"Adam": {"lr_schedule": {"name": "cosin"}}}, "s.yaml: recipe.Adam.lr_schedule.name: 'cosin' is not allowed"),
    ({"Adam": {"clip": 1}}, "s.yaml: recipe.Adam.clip: 'clip' is not allowed (unknown key"),
    ({"Adam": {"clip_grad_norm": -1}}, "s.yaml: recipe.Adam.clip_grad_norm: -1 is not allowed (must be a gradient norm > 0)"),
    ({"Adam": {"lr_schedule": {"name": "step"}}}, "s.yaml: recipe.Adam.lr_schedule.milestones"),
    ({"Adamm": {}}, "s.yaml: recipe.Adamm: 'Adamm' is not allowed (must be one of the optimizers"),
    ({"Adam": {"clip_grad_norm": {"default": 1, "scale": "decay"}}},
     "s.yaml: recipe.Adam.clip_grad_norm.default: 1 is not allowed"),
])
def test_bad_recipes_are_one_line_errors_naming_the_field(recipe, message):
    with pytest.raises(ScheduleError) as e:
        _schedule(recipe)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
