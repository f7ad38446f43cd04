"""The objective is the user's (issue 37): a schedule's `objective` selects on a metric of the
task's `evaluate()` (min or max) instead of the training loss; SupervisedTask's validation split
is what it sees, the test split is only reported."""
import math
import sys
import uuid

import pytest
import torch
import torch.nn.functional as F

import lodo
import tasks
from tasks.supervised import SupervisedTask
from tuner.report.results import collect, table1_header, table1_rows
from tuner.driver.rundir import RunDir
from tuner.driver.schedule import Objective, Schedule, ScheduleError
from tuner.driver.session import Session

from conftest import drive_session

# Training loss and "validation accuracy" disagree: the loss wants w at 1, the metric at 0.5 (as
# early stopping would). SGD from w = 0 on (w − 1)² has w_T = 1 − (1 − 2·lr)^T: a closed form.
EARLY_STOP = '''
import torch
from tasks import Task

class EarlyStop(Task):
    name = "early_stop"

    def __init__(self, seed=0, device="cpu"):
        super().__init__(seed=seed, device=device)
        self.w = torch.zeros((), dtype=torch.float64, requires_grad=True)

    def parameters(self):
        return [self.w]

    def sample(self):
        return None

    def loss(self, batch):
        return (self.w - 1) ** 2

    def evaluate(self):
        return {"val_accuracy": 1 - abs(float(self.w.detach()) - 0.5)}

    def state_dict(self):
        return {"w": self.w.detach().clone()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.w.copy_(state["w"])
'''
STEPS = 20


def w_after(lr: float, steps: int = STEPS) -> float:
    return 1 - (1 - 2 * lr) ** steps


@pytest.fixture
def early_stop(tmp_path):
    name = f"early_stop_{uuid.uuid4().hex[:8]}"  # a module name of its own per test
    path = tmp_path / f"{name}.py"
    path.write_text(EARLY_STOP)
    spec = lodo.register(name="PlainSGD", optimizer=torch.optim.SGD,
                         hyperparameters={"lr": {"default": 0.01, "scale": "log"}})
    yield tasks.resolve(f"{path}:EarlyStop")
    lodo.unregister(spec.name)
    sys.modules.pop(name, None)


def _tune(task, path, objective=None):
    schedule = Schedule.from_dict({"population": 8, "generations": [{"noise": 1.5, "steps": STEPS}] * 4,
                                   "optimizers": ["PlainSGD"], "lr_scale": 1.0, "noise_check": False,
                                   "full_run": {"steps": STEPS, "seeds": 1, "time_milestone_s": None},
                                   **({"objective": objective} if objective else {})}, task_names=[task.name])
    rd = RunDir.create(path, task=task.name, schedule=schedule.to_dict(), seed=0, optimizers=["PlainSGD"])
    session = Session(rd, schedule, 0, full_runs=True, task=task.ref)
    drive_session(session, session.start(["PlainSGD"]))
    return session


def test_a_maximised_validation_metric_picks_other_values_than_the_training_loss(early_stop, tmp_path):
    by_loss = _tune(early_stop, tmp_path / "loss")
    by_metric = _tune(early_stop, tmp_path / "metric", {"metric": "val_accuracy", "mode": "max"})
    lr_loss, lr_metric = by_loss.hyperparameters["PlainSGD"]["lr"], by_metric.hyperparameters["PlainSGD"]["lr"]
    assert lr_loss != lr_metric
    # each objective's pick is the better one by that objective, in closed form
    assert (w_after(lr_loss) - 1) ** 2 < (w_after(lr_metric) - 1) ** 2
    assert abs(w_after(lr_metric) - 0.5) < abs(w_after(lr_loss) - 0.5)

    for record in by_metric.rd.individuals("PlainSGD"):  # fitness = −metric (max), the metric as the task says
        lr = record["hparams"]["lr"]
        if abs(1 - 2 * lr) < 1:
            assert record["objective"] == pytest.approx(1 - abs(w_after(lr) - 0.5), rel=1e-9)
            assert record["fitness"] == -record["objective"]
    assert all("objective" not in r for r in by_loss.rd.individuals("PlainSGD"))  # the default records as before

    data = collect(by_metric.rd.path)
    assert data["objective"] == {"metric": "val_accuracy", "mode": "max"}
    assert table1_header(data)[:3] == ["Optimizer", f"{STEPS} steps", "objective val_accuracy (max)"]
    [row] = table1_rows(data)
    assert row[2].startswith(f"{1 - abs(w_after(lr_metric) - 0.5):.4g}")
    assert "objective" not in "".join(table1_header(collect(by_loss.rd.path)))


def test_a_metric_the_task_does_not_return_is_an_error_naming_the_field(early_stop, tmp_path):
    session = _tune(early_stop, tmp_path / "run", {"metric": "val_acc", "mode": "max"})
    assert session.failed["PlainSGD"]["error"] == (
        "ValueError: Invalid objective.metric: 'val_acc' is not a metric of the task's evaluate() "
        "(it returned: val_accuracy)")


@pytest.mark.parametrize("objective, field", [
    ({"metric": "val_accuracy"}, "objective.mode: missing"),
    ({"metric": "val_accuracy", "mode": "maximum"}, "objective.mode: 'maximum' is not allowed"),
    ({"metric": "", "mode": "max"}, "objective.metric: '' is not allowed"),
    ({"metric": "train_loss", "mode": "max"}, "objective.mode: 'max' is not allowed"),
    ("val_loss", "objective: 'val_loss' is not allowed"),
    ({"metric": "a", "mode": "min", "goal": 1}, "objective.goal: unknown key"),
])
def test_bad_objectives_are_one_line_errors(objective, field):
    with pytest.raises(ScheduleError, match=f"^<dict>: {field}") as e:
        Schedule.from_dict({"population": 2, "generations": [{"noise": 1, "steps": 5}], "optimizers": ["Adam"],
                            "lr_scale": 1, "full_run": {"steps": 5, "seeds": 1, "time_milestone_s": None},
                            "objective": objective})
    assert "\n" not in str(e.value)


def test_the_default_objective_leaves_the_schedule_and_manifest_as_they_were():
    base = {"population": 2, "generations": [{"noise": 1, "steps": 5}], "optimizers": ["Adam"], "lr_scale": 1,
            "full_run": {"steps": 5, "seeds": 1, "time_milestone_s": None}}
    for given in ({}, {"objective": "train_loss"}, {"objective": None}):
        schedule = Schedule.from_dict({**base, **given})
        assert schedule.objective == Objective("train_loss", "min")
        assert "objective" not in schedule.to_dict() and "noise_check" not in schedule.to_dict()
    chosen = Schedule.from_dict({**base, "objective": {"metric": "val_loss", "mode": "min"}})
    assert Schedule.from_dict(chosen.to_dict()).objective == Objective("val_loss", "min")


def test_supervised_validation_and_test_splits_are_reported_apart():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 5, generator=g), torch.randint(0, 3, (64,), generator=g)
    vx, vy, tx, ty = torch.randn(10, 5, generator=g), torch.randint(0, 3, (10,), generator=g), \
        torch.randn(7, 5, generator=g), torch.randint(0, 3, (7,), generator=g)
    task = SupervisedTask(lambda: torch.nn.Linear(5, 3), F.cross_entropy, (x, y), batch_size=8,
                          validation=(vx, vy), held_out=(tx, ty), eval_batch_size=4)
    metrics = task.evaluate()
    assert list(metrics) == ["val_loss", "val_accuracy", "test_loss", "test_accuracy"]
    with torch.no_grad():  # by hand, over the whole split at once
        for prefix, (a, b) in (("val", (vx, vy)), ("test", (tx, ty))):
            out = task.model(a)
            assert metrics[f"{prefix}_loss"] == pytest.approx(float(F.cross_entropy(out, b)), rel=1e-6)
            assert metrics[f"{prefix}_accuracy"] == pytest.approx(float((out.argmax(1) == b).double().mean()))
    assert list(SupervisedTask(lambda: torch.nn.Linear(5, 3), F.cross_entropy, (x, y), batch_size=8,
                               held_out=(tx, ty)).evaluate()) == ["test_loss", "test_accuracy"]
    with pytest.raises(ValueError, match="^Invalid validation"):
        SupervisedTask(lambda: torch.nn.Linear(5, 3), F.cross_entropy, (x, y), batch_size=8, validation=(vx,))


def test_the_ray_tune_searcher_selects_on_the_schedules_objective():
    pytest.importorskip("ray.tune")
    from tuner.search.tune import GASearcher

    schedule = Schedule.from_dict({"population": 4, "generations": [{"noise": 1, "steps": 5}] * 2,
                                   "optimizers": ["Adam"], "lr_scale": 1, "objective": {"metric": "val_accuracy", "mode": "max"},
                                   "full_run": {"steps": 5, "seeds": 1, "time_milestone_s": None}})
    searcher = GASearcher.from_schedule(schedule, "Adam")
    assert (searcher.metric, searcher.mode) == ("val_accuracy", "max")
    configs = [searcher.suggest(f"t{i}") for i in range(4)]
    accuracy = [0.5, 0.9, 0.7, None]
    for i, value in enumerate(accuracy):
        searcher.on_trial_complete(f"t{i}", None if value is None else {"val_accuracy": value}, error=value is None)
    told = searcher.ga.history[0]
    assert [i["fitness"] for i in told["individuals"]] == [-0.5, -0.9, -0.7, math.inf]
    assert told["selected"] == [1, 2] and searcher.errors == 1
    assert [i["hparams"] for i in told["individuals"]] == [{k: c[k] for k in ("lr", "beta1", "beta2")} for c in configs]
    assert GASearcher.from_schedule(Schedule.from_dict({**schedule.to_dict(), "objective": "train_loss"}), "Adam").metric \
        == "train_loss"
