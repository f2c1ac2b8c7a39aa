"""The training loss: next-token cross-entropy on answer tokens, with the LM head run only where
a label needs it.

Training rows carry labels on the answer alone (``data.py``), yet ``model(**batch).loss`` runs
the output projection (H x vocab, about a fifth of SmolLM2's FLOPs per token; over half of
Gemma-3's, whose vocabulary has 262k entries) at every position and materialises the logits of
all of them. Here the model is asked, through transformers' ``logits_to_keep``, for the logits
of the positions that predict a labelled token (the union over the batch), and the loss is
computed on those. The mathematics is the same as transformers' causal-LM loss: the mean over
labelled tokens of the cross-entropy in fp32; the positions left out carry no label, so they
contribute neither to the loss nor to any gradient.

The same logits give OpenAI's *mean token accuracy*: the fraction of the labelled tokens whose
arg-max prediction is the label. A caller that wants it opens :func:`counting_correct_tokens`
around its forward passes; every :func:`causal_lm_loss` inside adds its batch's counts, so a
method whose own loss calls it (ReFT, a plug-in adding a penalty) is measured too, and one
whose loss never does reports none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch

from steering_core.data.batches import IGNORE_INDEX


@dataclass
class TokenCounts:
    """Labelled tokens :func:`causal_lm_loss` scored, and how many its arg-max predicted."""

    correct: int = 0
    total: int = 0

    @property
    def accuracy(self) -> float | None:
        """``correct / total``; None when no labelled token was scored."""
        return self.correct / self.total if self.total else None


_COUNTS: ContextVar[TokenCounts | None] = ContextVar("token_counts", default=None)


@contextmanager
def counting_correct_tokens() -> Iterator[TokenCounts]:
    """Count, into the object yielded, the labelled tokens of every :func:`causal_lm_loss`
    computed inside the block and the correct arg-max predictions among them."""
    counts = TokenCounts()
    token = _COUNTS.set(counts)
    try:
        yield counts
    finally:
        _COUNTS.reset(token)


def predicting_positions(labels: torch.Tensor) -> torch.Tensor:
    """Sequence positions whose logits predict a labelled token in some row of the batch.

    Position ``p`` predicts token ``p + 1``, so these are the ``p`` with a label at ``p + 1``;
    returned sorted, as a 1-D ``int64`` tensor on ``labels``' device.
    """
    return (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero().squeeze(-1)


def causal_lm_loss(forward: Callable[..., Any], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the batch's labelled tokens, through ``forward`` (a model or a
    DeepSpeed engine taking ``input_ids``, ``attention_mask`` and ``logits_to_keep``)."""
    labels = batch["labels"]
    keep = predicting_positions(labels)
    inputs = {name: value for name, value in batch.items() if name != "labels"}
    logits = forward(**inputs, logits_to_keep=keep).logits  # (batch, len(keep), vocab)
    targets = labels[:, keep + 1]
    if (counts := _COUNTS.get()) is not None:
        with torch.no_grad():
            labelled = targets != IGNORE_INDEX
            counts.correct += int(((logits.argmax(-1) == targets) & labelled).sum())
            counts.total += int(labelled.sum())
    return torch.nn.functional.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX
    )
