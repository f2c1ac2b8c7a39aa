"""The finish of ``train()``: the best weights restored when asked, the final validation, the
manifest (layer statistics and strength report included), the saved adapter and the result."""

from __future__ import annotations

from typing import Any

import torch

from steering_core.artifact.store import save_artifact
from steering_core.engine.collectives import barrier
from steering_core.engine.events import EndEvent
from steering_core.engine.layer_stats import layer_statistics
from steering_core.engine.manifest import build_manifest
from steering_core.engine.run_state import ARTIFACT_DIR, RunState, TrainingResult, trainable
from steering_core.engine.runtime import gathered
from steering_core.engine.validation import eval_event, validate_run
from steering_core.evaluation.greedy import read_records
from steering_core.evaluation.strength_report import MAX_ITEMS, strength_report
from steering_core.methods.base import AttachedMethod, get_method_handler
from steering_core.spec.training_spec import TrainingSpec

LAYER_STATS_BATCHES = 4  # training micro-batches the per-layer statistics are measured on

# adapters whose steering has a strength (dpo and distill train post_block or joint adapters)
STRENGTH_REPORT_METHODS = ("post_block", "joint", "dpo", "distill")


def finish(state: RunState) -> TrainingResult:
    """Save the run's adapter to ``out_dir/adapter`` with its manifest, report the end, and
    return the result."""
    run = state.run
    restored = _restore_best(state)
    _validate_saved(state, restored)
    train_seconds = state.seconds()
    artifact = run.out_dir / ARTIFACT_DIR
    manifest = _manifest(state, train_seconds)
    with gathered(run.params):
        if run.env.is_main:
            save_artifact(
                run.attached, artifact, base_model_id=run.spec.model, training_manifest=manifest
            )
    barrier()
    final_loss, restored_step = state.final_loss(), state.best_step if restored else None
    run.reporter.emit(
        EndEvent(
            status=state.status,
            step=state.step,
            final_loss=final_loss,
            artifact=str(artifact),
            train_seconds=train_seconds,
            trained_tokens=state.trained_tokens,
            restored_step=restored_step,
        )
    )
    return TrainingResult(
        status=state.status,
        step=state.step,
        total_steps=run.data.plan.total_steps,
        final_loss=final_loss,
        artifact_dir=artifact,
        train_seconds=train_seconds,
        trained_tokens=state.trained_tokens,
        losses=list(state.losses),
        validation_losses=[(int(s), float(v)) for s, v in state.validation],
        restored_step=restored_step,
    )


def _restore_best(state: RunState) -> bool:
    """Whether the best evaluated step's weights replaced the last step's: after an early stop,
    or when the validation plan keeps the best, if that was not the last step."""
    run, snapshot = state.run, state.best_snapshot
    keep_best = state.status == "early_stopped" or run.validation.keep_best
    if not keep_best or snapshot is None or state.best_step == state.step:
        return False
    with gathered(run.params, modify=True), torch.no_grad():
        for name, param in trainable(run.attached).items():
            param.copy_(snapshot[name])
    return True


def _validate_saved(state: RunState, restored: bool) -> None:
    """The saved adapter's own validation loss (the best one's, when it was restored), unless
    the last step's validation already measured it."""
    run, data = state.run, state.run.data
    last_eval_step = state.validation[-1][0] if state.validation else None
    if data.val_rows is not None and (restored or last_eval_step != state.step):
        measured = validate_run(run)
        state.validation.append([state.step, measured.loss])
        run.reporter.emit(eval_event(state.step, measured))


def _manifest(state: RunState, train_seconds: float) -> dict[str, Any]:
    """The reproducibility manifest, with the layer selection, and on rank 0 (the weights whole
    there: below ZeRO 3) the per-layer statistics and the strength report."""
    run, data = state.run, state.run.data
    manifest = build_manifest(
        run.spec,
        data.hp,
        run.attached,
        data.tokenizer,
        run.device,
        run.ds_config,
        state.checkpointed(),
        train_seconds,
        run.backend.name,
    )
    if state.layer_selection is not None:
        manifest["layer_selection"] = state.layer_selection
    if run.env.is_main and (state.zero_stage or 0) < 3:
        probe = range(min(LAYER_STATS_BATCHES, data.plan.micro_per_epoch))
        manifest["layer_stats"] = layer_statistics(
            run.attached,
            (
                run.handler.collate(
                    [data.train_rows[i] for i in data.plan.rows_for(m, 0)], data.pad_id
                )
                for m in probe
            ),
        )
        report = adapter_strength_report(
            run.spec, run.attached, data.tokenizer, budget_seconds=0.1 * train_seconds
        )
        if report is not None:
            manifest["result"]["strength_report"] = report
    return manifest


def adapter_strength_report(
    spec: TrainingSpec, attached: AttachedMethod, tokenizer: Any, *, budget_seconds: float
) -> dict[str, Any] | None:
    """The trained adapter's strength report (``steering_core.evaluation.strength_report``),
    when the run has a validation file and a steering adapter and the job did not switch it
    off."""
    hp = spec.hyperparameters
    if (
        spec.validation_file is None
        or not hp.strength_report
        or spec.method.type not in STRENGTH_REPORT_METHODS
        or attached.steering is None
    ):
        return None
    handler = get_method_handler(spec.method.type)
    records = handler.completion_records(read_records(spec.validation_file, limit=MAX_ITEMS))
    report = strength_report(
        attached, tokenizer, records, task=hp.strength_report_task, budget_seconds=budget_seconds
    )
    return report.model_dump(mode="json")
