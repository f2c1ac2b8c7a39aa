"""The step loop of ``train()``: each optimizer step over its micro-batches and ranks, the
validations it is due, and the step boundary's checkpoint, stop and pause.

A step's loss is the mean over every labelled token of the step, across its micro-batches and
ranks (see :mod:`.train`). A stop or pause request is agreed by all ranks at the step boundary.
"""

from __future__ import annotations

import time

import torch

from steering_core.engine.collectives import any_rank, sum_over_ranks
from steering_core.engine.events import EndEvent, StepEvent
from steering_core.engine.run_checkpoints import save_checkpoint
from steering_core.engine.run_state import (
    RunSetup,
    RunState,
    TrainingCancelled,
    TrainingPaused,
    trainable,
)
from steering_core.engine.runtime import gathered
from steering_core.engine.validation import eval_event, validate_run
from steering_core.methods.loss import counting_correct_tokens


def run_steps(state: RunState) -> None:
    """Train the steps after ``state.start_step`` up to the plan's last, or to an early stop
    (``state.status`` then says so). A stop or pause reports the end and raises
    :class:`TrainingCancelled` or :class:`TrainingPaused`."""
    run = state.run
    run.backend.train()
    state.started = time.perf_counter()
    try:
        for step in range(state.start_step + 1, run.data.plan.total_steps + 1):
            _train_step(state, step)
            if _validate_if_due(state, step):
                state.status = "early_stopped"
                break
            _step_boundary(state, step)
    except (TrainingCancelled, TrainingPaused) as stopped:
        run.reporter.emit(
            EndEvent(
                status="paused" if isinstance(stopped, TrainingPaused) else "cancelled",
                step=state.step,
                final_loss=state.final_loss(),
                artifact=None,
                train_seconds=state.seconds(),
                trained_tokens=state.trained_tokens,
            )
        )
        raise


def _train_step(state: RunState, step: int) -> None:
    """Optimizer step ``step``: its micro-batches forward and backward, the update, and its
    step event (the loss and accuracy of every rank, in one collective)."""
    run, data, world_size = state.run, state.run.data, state.run.env.world_size
    step_started = time.perf_counter()
    micro_batches = _step_batches(run, step)
    labelled = max(
        1,
        sum(run.handler.supervised_tokens(b) for bs in micro_batches.values() for b in bs),
    )
    loss_sum, tokens = 0.0, 0
    lr = run.backend.learning_rate()  # the lr this step's update uses
    with counting_correct_tokens() as counts:
        for batches in micro_batches.values():
            batch = batches[run.env.rank]
            tokens += sum(int(b["attention_mask"].sum()) for b in batches)
            share = run.handler.supervised_tokens(batch) / labelled
            # DeepSpeed averages gradients over ranks: world_size x share sums them.
            mean = run.backend.forward_backward(
                {k: v.to(run.device) for k, v in batch.items()}, share * world_size
            )
            loss_sum += mean * share
    grad_norm = run.backend.step()
    # Only joint acts here, and joint's projection runs under ZeRO 0 alone, so the
    # parameters are never partitioned at this point: no gather needed.
    run.attached.after_optimizer_step(step)
    # The loss and the token counts of every rank, in one collective.
    loss, correct, counted = sum_over_ranks(loss_sum, counts.correct, counts.total)
    state.step, state.trained_tokens = step, state.trained_tokens + tokens
    state.losses.append(loss)
    elapsed = state.seconds()
    total = data.plan.total_steps
    state.emit_and_keep(
        StepEvent(
            step=step,
            total_steps=total,
            epoch=data.plan.epoch_of((step - 1) * data.plan.grad_accum),
            loss=loss,
            mean_token_accuracy=correct / counted if counted else None,
            learning_rate=lr,
            grad_norm=grad_norm,
            tokens_per_second=tokens / max(1e-9, time.perf_counter() - step_started),
            trained_tokens=state.trained_tokens,
            eta_seconds=elapsed / (step - state.start_step) * (total - step),
        )
    )


def _step_batches(run: RunSetup, step: int) -> dict[int, list[dict[str, torch.Tensor]]]:
    """Every rank's collated batch of each micro-batch that step ``step`` accumulates (each
    rank counts every rank's labelled tokens itself, without a collective)."""
    data = run.data
    return {
        micro: [
            run.handler.collate(
                [data.train_rows[i] for i in data.plan.rows_for(micro, rank)], data.pad_id
            )
            for rank in range(run.env.world_size)
        ]
        for micro in data.plan.step_micro_batches(step)
    }


def _validate_if_due(state: RunState, step: int) -> bool:
    """Validate after ``step`` when the plan says so, keeping the best weights seen; whether
    early stopping ends the run there."""
    run, data = state.run, state.run.data
    every = run.validation.every_n_steps
    due = bool(every and step % every == 0) or (
        run.validation.each_epoch and data.plan.ends_epoch(step)
    )
    if data.val_rows is None or not due:
        return False
    measured = validate_run(run)
    value = measured.loss
    state.validation.append([step, value])
    state.emit_and_keep(eval_event(step, measured))
    if state.best_validation is None or value < state.best_validation:
        state.best_validation, state.evals_since_best = value, 0
        state.best_step = step
        with gathered(run.params):
            state.best_snapshot = {
                k: v.detach().clone() for k, v in trainable(run.attached).items()
            }
        return False
    state.evals_since_best += 1
    patience = run.validation.early_stopping_patience
    return patience is not None and state.evals_since_best >= patience


def _step_boundary(state: RunState, step: int) -> None:
    """The checkpoint ``step`` is due, then the stop and pause requests of every rank: a stop
    raises :class:`TrainingCancelled`, a pause (but at the last step) :class:`TrainingPaused`
    once the checkpoint of ``step`` is saved."""
    run = state.run
    every = run.spec.checkpoint_every_n_steps
    saved = step % every == 0 if every else False
    if saved:
        save_checkpoint(state, step)
    stop, pause = any_rank(run.should_stop(), run.should_pause())
    if stop:
        raise TrainingCancelled(f"cancelled at step {step}")
    if pause and step < run.data.plan.total_steps:
        if not saved:
            save_checkpoint(state, step)
        raise TrainingPaused(f"paused at step {step}")
