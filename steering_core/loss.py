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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from steering_core.data import IGNORE_INDEX


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
    return torch.nn.functional.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX
    )
