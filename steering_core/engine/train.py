"""``train(spec, out_dir, reporter, should_stop)``: one spec in, one trained adapter out.

seed -> model -> attach method -> data -> optimizer/schedule -> loop -> eval -> save. The loop
is the same for plain torch and DeepSpeed (``steering_core.engine.backends``); only rank 0 writes
files and events. Progress goes to the reporter as :mod:`steering_core.engine.events`.

Several ranks (launched by torchrun, which sets ``RANK`` and ``WORLD_SIZE``) always train
through DeepSpeed. ``batch_size`` is the global batch, split evenly across the ranks
(``train_plan``). A step's loss is the mean over every labelled token of the step, across its
micro-batches and ranks: each rank knows the whole data plan, so it counts the step's labelled
tokens of every rank itself, without a collective, and weights its micro-batch's mean loss by
its share of them. One rank and several ranks so train the same objective on the same rows,
and reach the same adapter up to the order of floating-point sums. A step's mean token accuracy
is every rank's correct arg-max predictions over every rank's labelled tokens, summed in the
all-reduce that sums the loss. A stop request is agreed by all ranks at the step boundary (one
rank leaving a collective early would hang the others).

The run goes in three phases over one :class:`~steering_core.engine.run_state.RunState`:
:func:`~steering_core.engine.setup.set_up` (seed, model, method, data, optimizer and schedule,
backend, resume), :func:`~steering_core.engine.loop.run_steps` (the step loop) and
:func:`~steering_core.engine.finish.finish` (final validation, save, strength report, result).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from steering_core.engine.finish import LAYER_STATS_BATCHES, STRENGTH_REPORT_METHODS, finish
from steering_core.engine.loop import run_steps
from steering_core.engine.run_state import (
    ARTIFACT_DIR,
    NullReporter,
    Reporter,
    TrainingCancelled,
    TrainingPaused,
    TrainingResult,
)
from steering_core.engine.setup import set_up
from steering_core.engine.validation import Validation, validate
from steering_core.model.loading import load_model
from steering_core.spec.training_spec import TrainingSpec


def train(
    spec: TrainingSpec,
    out_dir: Path,
    reporter: Reporter | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    should_pause: Callable[[], bool] | None = None,
    resume: bool = False,
    cache_dir: Path | None = None,
) -> TrainingResult:
    """Train ``spec`` and save the adapter to ``out_dir/adapter``; see the module docstring.

    Both callables are asked at each step boundary: ``should_stop`` ends the run
    (:class:`TrainingCancelled`), ``should_pause`` saves a checkpoint of that step first
    (:class:`TrainingPaused`). A pause asked at the last step is moot: the run finishes."""
    state = set_up(
        spec,
        out_dir,
        reporter,
        should_stop,
        should_pause,
        resume=resume,
        cache_dir=cache_dir,
        load_model=load_model,  # looked up here, at each call: a test may replace it
    )
    run_steps(state)
    return finish(state)


__all__ = [
    "ARTIFACT_DIR",
    "LAYER_STATS_BATCHES",
    "STRENGTH_REPORT_METHODS",
    "NullReporter",
    "Reporter",
    "TrainingCancelled",
    "TrainingPaused",
    "TrainingResult",
    "Validation",
    "load_model",
    "train",
    "validate",
]
