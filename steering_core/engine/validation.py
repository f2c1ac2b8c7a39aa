"""Validation: the method's loss and token accuracy over the validation rows, as an event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from steering_core.engine.backends import DeepSpeedBackend, TorchBackend
from steering_core.engine.events import EvalEvent
from steering_core.engine.run_state import RunSetup
from steering_core.methods.base import MethodHandler
from steering_core.methods.loss import counting_correct_tokens


@dataclass(frozen=True)
class Validation:
    loss: float
    mean_token_accuracy: float | None  # None: the method's loss is not the answer tokens' CE


@torch.no_grad()
def validate(
    backend: TorchBackend | DeepSpeedBackend,
    handler: MethodHandler,
    rows: Any,
    pad_id: int,
    batch_size: int,
    device: torch.device,
) -> Validation:
    """The method's loss over ``rows``, weighted by each batch's supervised tokens, and the
    fraction of those tokens whose arg-max prediction is the label. Every rank runs the whole
    set (a ZeRO-3 forward needs them all), so each holds the same figures."""
    backend.eval()
    total, count = 0.0, 0
    with counting_correct_tokens() as counts:
        for start in range(0, len(rows), batch_size):
            end = min(len(rows), start + batch_size)
            batch = handler.collate([rows[i] for i in range(start, end)], pad_id)
            n = handler.supervised_tokens(batch)
            if n == 0:
                continue
            loss = backend.forward({k: v.to(device) for k, v in batch.items()})
            total += float(loss) * n
            count += n
    backend.train()
    return Validation(loss=total / max(1, count), mean_token_accuracy=counts.accuracy)


def validate_run(run: RunSetup) -> Validation:
    """:func:`validate` over the run's validation rows (the spec must name a file of them)."""
    data = run.data
    return validate(
        run.backend, run.handler, data.val_rows, data.pad_id, run.spec.eval_batch_size, run.device
    )


def eval_event(step: int, measured: Validation) -> EvalEvent:
    return EvalEvent(
        step=step,
        validation_loss=measured.loss,
        validation_mean_token_accuracy=measured.mean_token_accuracy,
    )
