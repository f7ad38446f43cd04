"""The second example (issue 37): a transformer encoder on generated sequences, whose evaluate()
gives the validation metrics a schedule selects on apart from the test metrics it reports."""
import sys
from pathlib import Path

import pytest
import torch

import tasks
from tuner.trial.loop import run_trial

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def reverse(monkeypatch):
    monkeypatch.chdir(ROOT)
    yield tasks.resolve("examples/reverse/reverse.py:reverse")
    sys.modules.pop("reverse", None)


def test_the_targets_are_the_inputs_reversed_and_the_splits_fixed(reverse):
    a, b = reverse.create(seed=0), reverse.create(seed=1)
    batch = a.sample()
    length = batch.inputs.shape[1]
    assert all(batch.targets[:, i].equal(batch.inputs[:, length - 1 - i]) for i in range(length))
    assert not torch.equal(a.sample().inputs, b.sample().inputs)  # the seed draws the batches ...
    for name in ("val", "test"):  # ... not the held-out splits
        assert all(torch.equal(x, y) for x, y in zip(a.splits[name], b.splits[name]))
    assert not torch.equal(a.splits["val"][0], a.splits["test"][0])


def test_evaluate_scores_tokens_and_whole_sequences_by_hand(reverse):
    task = reverse.create(seed=0, held_out=64)
    metrics = task.evaluate()
    assert set(metrics) == {f"{s}_{m}" for s in ("val", "test") for m in ("loss", "accuracy", "sequences")}
    x, y = task.splits["val"]
    with torch.no_grad():
        task.model.eval()
        logits = task.model(x)
    right = logits.argmax(-1) == y
    assert metrics["val_accuracy"] == pytest.approx(right.sum().item() / y.numel())
    assert metrics["val_sequences"] == pytest.approx(sum(bool(r.all()) for r in right) / len(y))
    assert metrics["val_loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits.transpose(1, 2), y).item(),
                                                rel=1e-5)
    assert metrics["val_accuracy"] < 0.2  # untrained: about 1/16


def test_adam_learns_to_reverse_short_sequences(reverse):
    result = run_trial(reverse.ref, "Adam", {"lr": 1e-2}, 150, seed=0, evaluate=True,
                       task_options={"length": 4, "vocab": 6, "width": 16, "held_out": 128})
    assert result.held_out["val_accuracy"] > 0.9 and result.held_out["test_accuracy"] > 0.9
