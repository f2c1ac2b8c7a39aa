"""The typed state of one training run, and the types ``train()`` takes and hands back.

:class:`RunSetup` is what the setup phase builds once (model, data, plan, backend, ...);
:class:`RunState` carries it through the step loop and the finish, with the run's progress.
The progress fields named in :data:`CHECKPOINTED` are what a checkpoint's
``trainer_state.json`` holds, in that order; a resume restores them (but the layout's).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from steering_core.engine.backends import DeepSpeedBackend, TorchBackend
from steering_core.engine.events import EvalEvent, StepEvent
from steering_core.engine.plan import DataPlan
from steering_core.engine.runtime import DistEnv
from steering_core.methods.base import AttachedMethod, MethodHandler
from steering_core.methods.definition import MethodDefinition
from steering_core.spec.training_spec import (
    ResolvedHyperparameters,
    TrainingSpec,
    ValidationPlan,
)

ARTIFACT_DIR = "adapter"  # the adapter's directory, in the run's and in each checkpoint's

# The progress a checkpoint saves, in the order its trainer_state.json lists it.
CHECKPOINTED = (
    "step",
    "trained_tokens",
    "losses",
    "validation",
    "best_validation",
    "best_step",
    "evals_since_best",
    "world_size",
    "zero_stage",
    "events_since_checkpoint",
    "checkpoint_steps",
    "layer_selection",
)
# Saved with a checkpoint to describe the layout that wrote it; never restored from one.
LAYOUT_KEYS = ("world_size", "zero_stage")


class Reporter(Protocol):
    def emit(self, event: Any) -> None: ...


class NullReporter:
    def emit(self, event: Any) -> None:
        return None


class TrainingCancelled(Exception):
    """Raised at a step boundary when ``should_stop()`` answers True."""


class TrainingPaused(Exception):
    """Raised at a step boundary when ``should_pause()`` answers True, once the checkpoint of
    that step is saved: ``train(..., resume=True)`` continues from it."""


@dataclass
class TrainingResult:
    status: str
    step: int
    total_steps: int
    final_loss: float | None
    artifact_dir: Path | None
    train_seconds: float
    trained_tokens: int
    losses: list[float] = field(default_factory=list)
    validation_losses: list[tuple[int, float]] = field(default_factory=list)
    restored_step: int | None = None  # the earlier, best evaluated step whose adapter was saved


def trainable(attached: AttachedMethod) -> dict[str, torch.nn.Parameter]:
    return dict(attached.trainable_named_parameters())


@dataclass(frozen=True)
class RunData:
    """The tokenized rows a run trains and validates on, and the order it reads them in."""

    tokenizer: Any
    train_rows: Any  # the method handler's tokenized rows
    val_rows: Any  # None: the spec names no validation_file
    pad_id: int
    hp: ResolvedHyperparameters  # resolved for these rows and this many ranks
    plan: DataPlan


@dataclass(frozen=True)
class RunSetup:
    """What the setup phase built, read (never replaced) by the loop and the finish."""

    spec: TrainingSpec
    out_dir: Path
    env: DistEnv
    reporter: Reporter  # the caller's on rank 0, a NullReporter on the other ranks
    should_stop: Callable[[], bool]
    should_pause: Callable[[], bool]
    device: torch.device
    definition: MethodDefinition
    handler: MethodHandler
    validation: ValidationPlan
    data: RunData
    attached: AttachedMethod
    backend: TorchBackend | DeepSpeedBackend
    ds_config: dict[str, Any] | None  # None: plain torch
    params: list[torch.nn.Parameter]  # the trainable parameters (gathered under ZeRO 3)


@dataclass
class RunState:
    """One run from its setup to its result: the setup, and its progress so far."""

    run: RunSetup
    # -- checkpointed (CHECKPOINTED, in its order) --
    step: int = 0  # the last step trained
    trained_tokens: int = 0
    losses: list[float] = field(default_factory=list)
    validation: list[list[float]] = field(default_factory=list)  # [step, validation loss]
    best_validation: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    # This run's layout (LAYOUT_KEYS), saved for a resume to compare with its own.
    world_size: int = 1
    zero_stage: int | None = None  # None: plain torch, no DeepSpeed
    # The step and eval events a resume reports again (a run killed after a checkpoint may
    # have printed them faster than its reader recorded them): since the checkpoint before the
    # oldest one kept (see ``save_checkpoint``), bounded to keep_checkpoints + 1 intervals.
    events_since_checkpoint: list[dict[str, Any]] = field(default_factory=list)
    checkpoint_steps: list[int] = field(default_factory=list)  # the latest checkpoints' steps
    layer_selection: dict[str, Any] | None = None  # the "auto" layer selection's record
    # -- this process's alone --
    best_snapshot: dict[str, torch.Tensor] | None = None  # the best evaluated step's weights
    start_step: int = 0  # the step this process started after (a resumed checkpoint's)
    started: float = 0.0  # time.perf_counter() when the step loop began
    status: Literal["succeeded", "early_stopped"] = "succeeded"

    def checkpointed(self) -> dict[str, Any]:
        """The progress a checkpoint saves (the same objects, not copies)."""
        return {name: getattr(self, name) for name in CHECKPOINTED}

    def restore(self, saved: dict[str, Any]) -> None:
        """The progress of a checkpoint's ``saved`` state, but its layout's."""
        for name in CHECKPOINTED:
            if name not in LAYOUT_KEYS:
                setattr(self, name, saved.get(name, getattr(self, name)))

    def emit_and_keep(self, event: StepEvent | EvalEvent) -> None:
        """Report ``event`` and keep it for the next checkpoint."""
        self.events_since_checkpoint.append(event.model_dump(mode="json"))
        self.run.reporter.emit(event)

    def final_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None

    def seconds(self) -> float:
        """Seconds since the step loop began."""
        return time.perf_counter() - self.started
