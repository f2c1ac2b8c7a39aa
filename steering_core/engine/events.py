"""Progress events the training subprocess prints as JSON lines (rank 0 only). Torch-free.

The worker parses each stdout line with :func:`parse_event`; a line that is not an event is
ordinary log output. Every event carries ``event`` (its kind) and ``time`` (unix seconds).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    time: float = Field(default_factory=time.time)


class StartEvent(_Event):
    event: Literal["start"] = "start"
    total_steps: int
    n_epochs: int  # resolved: an "auto" one chosen from n_examples
    batch_size: int  # likewise
    n_examples: int
    trainable_parameters: int
    trainable_percent: float
    resumed_from_step: int = 0
    backend: Literal["torch", "deepspeed"]
    world_size: int = 1
    zero_stage: int | None = None  # DeepSpeed's ZeRO stage (None: plain torch)
    truncated_rows: int = 0
    dropped_rows: int = 0


class StepEvent(_Event):
    event: Literal["step"] = "step"
    step: int
    total_steps: int
    epoch: int
    loss: float
    # of the step's labelled tokens (all ranks), those whose arg-max prediction is the label;
    # None for a method whose loss is not the answer tokens' cross-entropy
    mean_token_accuracy: float | None = None
    learning_rate: float
    grad_norm: float | None
    tokens_per_second: float
    trained_tokens: int
    eta_seconds: float | None


class LayerSelectionEvent(_Event):
    """``site.layers: "auto"``: every decoder layer's score and the layers chosen (before step
    1; :mod:`steering_core.engine.layer_selection` says what the score is)."""

    event: Literal["layer_selection"] = "layer_selection"
    site: str
    score: str  # the name of the score (its formula is in steering_core.engine.layer_selection)
    scores: list[float | None]  # one per decoder layer, by index (None: not finite)
    chosen: list[int]
    max_layers: int | None = None
    max_parameters: int | None = None
    probe_batches: int
    probe_tokens: int
    seconds: float


class EvalEvent(_Event):
    event: Literal["eval"] = "eval"
    step: int
    validation_loss: float | None = None
    validation_mean_token_accuracy: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict)


class CheckpointEvent(_Event):
    event: Literal["checkpoint"] = "checkpoint"
    step: int
    path: str


class EndEvent(_Event):
    event: Literal["end"] = "end"
    status: Literal["succeeded", "cancelled", "early_stopped", "paused"]
    step: int
    final_loss: float | None
    artifact: str | None
    train_seconds: float
    trained_tokens: int
    # the earlier step of the best validation loss, whose adapter was saved instead of the last
    restored_step: int | None = None


class ErrorEvent(_Event):
    event: Literal["error"] = "error"
    error_type: Literal["user_error", "out_of_memory", "cancelled", "internal_error"]
    message: str
    code: str | None = None  # a finer reason for user errors (quota_exceeded, ...)


TrainingEvent = Annotated[
    StartEvent
    | StepEvent
    | EvalEvent
    | CheckpointEvent
    | EndEvent
    | ErrorEvent
    | LayerSelectionEvent,
    Field(discriminator="event"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(TrainingEvent)


def parse_event(line: str) -> TrainingEvent | None:
    """The event on a stdout line, or None for ordinary output."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        return _ADAPTER.validate_python(json.loads(line))
    except (json.JSONDecodeError, ValidationError):
        return None
