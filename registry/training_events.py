"""The figures of the engine's progress events that the registry records.

Structural types: ``steering_core.engine.events`` defines the events (pydantic models the training
subprocess prints as JSON lines) and satisfies these protocols without the registry importing
the ML core. Each names only the fields :mod:`registry.jobs`'s ``record_*`` functions read.
"""

from __future__ import annotations

from typing import Any, Protocol


class TrainingStarted(Protocol):
    total_steps: int
    n_epochs: int
    batch_size: int
    n_examples: int
    trainable_parameters: int
    trainable_percent: float
    resumed_from_step: int
    world_size: int
    zero_stage: int | None

    @property
    def backend(self) -> str: ...  # read-only: the event's own type is a Literal of names

    def model_dump(self, *, mode: str) -> dict[str, Any]: ...


class TrainingStep(Protocol):
    step: int
    total_steps: int
    loss: float
    mean_token_accuracy: float | None
    learning_rate: float
    tokens_per_second: float
    trained_tokens: int
    eta_seconds: float | None


class TrainingEvaluation(Protocol):
    step: int
    validation_loss: float | None
    validation_mean_token_accuracy: float | None


class TrainingCheckpoint(Protocol):
    step: int
    path: str


class TrainingLayerSelection(Protocol):
    site: str
    scores: list[float | None]
    chosen: list[int]
    probe_batches: int
    probe_tokens: int

    def model_dump(self, *, mode: str) -> dict[str, Any]: ...


class TrainingEnded(Protocol):
    step: int
    restored_step: int | None

    @property
    def status(self) -> str: ...  # read-only: the event's own type is a Literal of outcomes
