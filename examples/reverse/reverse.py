"""A small sequence model for the tuner: a transformer encoder (torch.nn) learning to reverse sequences.

    lodo-tune --task examples/reverse/reverse.py:reverse --schedule examples/reverse/schedule.yaml

Each step draws a fresh batch of random token sequences from the task's generator (the data are
generated: nothing to download); the target of position i is the token at position length-1-i.
The validation and test sets are fixed draws of their own (the same for every seed), so seeds differ
only in the initialisation and the batches. `evaluate()` reports the token accuracy and loss of
both (`val_*` is what the schedule's objective selects on, `test_*` is reported) and the share
of sequences reversed without a mistake.
"""
import torch
from torch import nn
from torch.nn import functional as F

from tasks.supervised import SupervisedTask

VAL_SEED, TEST_SEED = 1, 2


class Reverser(nn.Module):
    """Token and position embeddings, a transformer encoder, a linear read-out per position."""

    def __init__(self, vocab: int, length: int, width: int, heads: int, layers: int):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab, width), nn.Parameter(torch.randn(length, width) * 0.1)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(width, vocab)

    def forward(self, x):  # (batch, length) tokens -> (batch, length, vocab) logits
        return self.out(self.encoder(self.tokens(x) + self.positions))


def _sequences(generator: torch.Generator, n: int, vocab: int, length: int):
    x = torch.randint(vocab, (n, length), generator=generator)
    return x, x.flip(1)


def _loss(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


class ReverseTask(SupervisedTask):
    """SupervisedTask with sequence metrics on a validation and a test split."""

    def __init__(self, splits: dict, **kwargs):
        super().__init__(**kwargs)
        self.splits = {name: tuple(t.to(self.device) for t in split) for name, split in splits.items()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        try:
            metrics = {}
            for name, (x, y) in self.splits.items():
                logits = self.model(x)
                right = logits.argmax(-1) == y
                metrics[f"{name}_loss"] = float(_loss(logits, y))
                metrics[f"{name}_accuracy"] = float(right.float().mean())
                metrics[f"{name}_sequences"] = float(right.all(1).float().mean())
            return metrics
        finally:
            self.model.train(was_training)


def reverse(seed=0, device="cpu", vocab=16, length=12, width=32, heads=2, layers=1, batch_size=32, held_out=512):
    """Reverse `length` tokens of `vocab` symbols; fresh batches of `batch_size`, `held_out` sequences per split."""
    splits = {name: _sequences(torch.Generator().manual_seed(s), held_out, vocab, length)
              for name, s in (("val", VAL_SEED), ("test", TEST_SEED))}
    return ReverseTask(
        splits,
        model=lambda: Reverser(vocab, length, width, heads, layers),
        loss=_loss,
        sample=lambda generator: _sequences(generator, batch_size, vocab, length),
        seed=seed, device=device, name="reverse")
