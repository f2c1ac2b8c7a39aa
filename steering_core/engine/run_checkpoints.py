"""A run's checkpoints: saving one at a step boundary, and resuming from the latest one.

The files themselves (written atomically, read back exactly) are :mod:`.checkpoint`'s.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import torch

from steering_core.artifact.store import save_artifact
from steering_core.engine.checkpoint import (
    checkpoint_dir,
    latest_checkpoint,
    prune_checkpoints,
    read_checkpoint,
    restore_rng_from,
    write_checkpoint,
)
from steering_core.engine.collectives import barrier
from steering_core.engine.events import CheckpointEvent, parse_event
from steering_core.engine.run_state import ARTIFACT_DIR, RunState, trainable
from steering_core.engine.runtime import gathered
from steering_core.errors import ConfigValidationError


def save_checkpoint(state: RunState, step: int) -> None:
    """Save the checkpoint of ``step`` (every rank calls it; rank 0 writes the files)."""
    run = state.run
    # A resume reports again the events this checkpoint holds, for a worker that died before
    # recording them. Its recording can lag the training by more than one interval, so the
    # checkpoint holds every event since the checkpoint before the oldest one kept: a resume
    # from it repeats all that the kept checkpoints do not already account for.
    keep = run.spec.keep_checkpoints
    steps = [*state.checkpoint_steps, step][-(keep + 1) :]
    floor = steps[0] if len(steps) > keep else 0
    state.checkpoint_steps = steps
    state.events_since_checkpoint = [e for e in state.events_since_checkpoint if e["step"] > floor]
    final = checkpoint_dir(run.out_dir, step)
    partial = final.with_name(final.name + ".partial")
    if run.env.is_main:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    barrier()
    extra = run.backend.save_state(partial)
    with gathered(run.params):
        if run.env.is_main:
            write_checkpoint(
                partial,
                state={**state.checkpointed(), **extra},
                trainable=trainable(run.attached),
                optimizer=None,
            )
            if not run.definition.trains_base_weights:  # the checkpoint's weights are the model
                save_artifact(run.attached, partial / ARTIFACT_DIR, base_model_id=run.spec.model)
    if run.env.is_main:
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        prune_checkpoints(run.out_dir, keep)
        run.reporter.emit(CheckpointEvent(step=step, path=str(final)))
    barrier()


def resume_from_latest(state: RunState) -> None:
    """The trained weights, optimizer and schedule, RNG and progress of the run's latest
    checkpoint, if it has one; ``state.step`` is then that checkpoint's."""
    run = state.run
    if (ckpt := latest_checkpoint(run.out_dir)) is None:
        return
    saved, tensors = read_checkpoint(ckpt)
    with gathered(run.params, modify=True), torch.no_grad():
        for name, param in trainable(run.attached).items():
            param.copy_(tensors[name])
    layout = resume_layout(
        saved, state.world_size, state.zero_stage, run.definition.trains_base_weights
    )
    if layout == "same":
        run.backend.load_state(ckpt, saved)
    else:  # the adapter's weights are whole in the checkpoint; its optimizer moments are not
        run.backend.load_schedule(saved)
    restore_rng_from(ckpt, saved)
    state.restore(saved)


def report_resumed(state: RunState) -> None:
    """Report again what led to the resumed checkpoint (a repeated step replaces its rows),
    then the checkpoint itself: the run that wrote it may have died before they were
    recorded."""
    reporter = state.run.reporter
    for saved_event in state.events_since_checkpoint:
        if (event := parse_event(json.dumps(saved_event))) is not None:
            reporter.emit(event)
    path = checkpoint_dir(state.run.out_dir, state.start_step)
    reporter.emit(CheckpointEvent(step=state.start_step, path=str(path)))


def resume_layout(
    saved: dict[str, Any], world_size: int, zero_stage: int | None, trains_base_weights: bool
) -> str:
    """ "same" when the checkpoint's optimizer state can be loaded as saved; "weights" when only
    the trained weights and the schedule carry over (an adapter's optimizer state partitioned
    across a different number of ranks); a user error for full fine-tuning in that case."""
    saved_world = int(saved.get("world_size", 1))
    saved_stage = saved.get("zero_stage")
    if saved_world == world_size and saved_stage == zero_stage:
        return "same"
    if (
        (saved_stage or 0) == 0
        and (zero_stage or 0) == 0
        and (saved_stage is None) == (zero_stage is None)
    ):
        return "same"  # whole optimizer state on every rank: any number of ranks reads it
    if trains_base_weights:
        raise ConfigValidationError(
            f"this checkpoint was written by {saved_world} rank(s) under ZeRO {saved_stage}, "
            f"and this run has {world_size} rank(s) under ZeRO {zero_stage}: full fine-tuning "
            "resumes only on the layout that wrote its partitioned optimizer state; resume with "
            f"{saved_world} process(es) and zero_stage {saved_stage}"
        )
    return "weights"
