"""``train(spec, out_dir, reporter, should_stop)``: one spec in, one trained adapter out.

seed -> model -> attach method -> data -> optimizer/schedule -> loop -> eval -> save. The loop
is the same for plain torch and DeepSpeed (``steering_core.engine.backends``); only rank 0 writes
files
and events. Progress goes to the reporter as :mod:`steering_core.engine.events`.

Several ranks (launched by torchrun, which sets ``RANK`` and ``WORLD_SIZE``) always train
through DeepSpeed. ``batch_size`` is the global batch, split evenly across the ranks
(``train_plan``). A step's loss is the mean over every labelled token of the step, across its
micro-batches and ranks: each rank knows the whole data plan, so it counts the step's labelled
tokens of every rank itself, without a collective, and weights its micro-batch's mean loss by
its share of them. One rank and several ranks so train the same objective on the same rows,
and reach the same adapter up to the order of floating-point sums. A step's mean token accuracy
is every rank's correct arg-max predictions over every rank's labelled tokens, summed in the
all-reduce that sums the loss. A stop request is agreed by
all ranks at the step boundary (one rank leaving a collective early would hang the others).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from steering_core.artifact.accounting import count_parameters
from steering_core.artifact.store import load_artifact, save_artifact
from steering_core.data.batches import pad_token_id_for
from steering_core.data.formats import parse_jsonl
from steering_core.engine.backends import DeepSpeedBackend, TorchBackend, deepspeed_config
from steering_core.engine.checkpoint import (
    checkpoint_dir,
    latest_checkpoint,
    prune_checkpoints,
    read_checkpoint,
    restore_rng_from,
    write_checkpoint,
)
from steering_core.engine.events import (
    CheckpointEvent,
    EndEvent,
    EvalEvent,
    StartEvent,
    StepEvent,
    parse_event,
)
from steering_core.engine.layer_selection import resolve_auto_layers, selection_record
from steering_core.engine.layer_stats import layer_statistics
from steering_core.engine.manifest import build_manifest
from steering_core.engine.plan import DataPlan, lr_lambda
from steering_core.engine.runtime import (
    dist_env,
    gathered,
    resolve_precision,
    seed_everything,
    select_device,
)
from steering_core.errors import ConfigValidationError, QuotaExceededError, SteeringUserError
from steering_core.evaluation.greedy import read_records
from steering_core.evaluation.strength_report import MAX_ITEMS, strength_report
from steering_core.methods.base import (
    AttachedMethod,
    LossContext,
    MethodHandler,
    get_method_handler,
)
from steering_core.methods.loss import counting_correct_tokens
from steering_core.methods.registry import method_definition
from steering_core.model.loading import load_model, load_tokenizer
from steering_core.spec.compute import DeepSpeedSpec, resolve_zero_stage
from steering_core.spec.training_spec import TrainingSpec, resolve_hyperparameters
from steering_core.steering.attach import attach_method

ARTIFACT_DIR = "adapter"
LAYER_STATS_BATCHES = 4  # training micro-batches the per-layer statistics are measured on


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


def _trainable(attached: AttachedMethod) -> dict[str, torch.nn.Parameter]:
    return dict(attached.trainable_named_parameters())


def _load_rows(spec: TrainingSpec, tokenizer: Any, what: str) -> Any:
    """The spec's ``train_file`` or ``validation_file``, parsed, checked against the formats the
    method trains on, and tokenized by the method's handler (None when the spec names none)."""
    path = getattr(spec, what)
    if path is None:
        return None
    if not Path(path).is_file():
        raise SteeringUserError(f"{what} {path!r} does not exist")
    dataset = parse_jsonl(path)
    method_definition(spec.method.type).check_data_format(dataset.format, f"{what} {path!r}")
    handler = get_method_handler(spec.method.type)
    return handler.tokenize(dataset, tokenizer, spec.max_seq_length)


@dataclass(frozen=True)
class Validation:
    loss: float
    mean_token_accuracy: float | None  # None: the method's loss is not the answer tokens' CE


@torch.no_grad()
def validate(
    backend: Any, handler: MethodHandler, rows: Any, pad_id: int, batch_size: int, device
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
    env = dist_env()
    reporter = reporter if (reporter is not None and env.is_main) else NullReporter()
    should_stop = should_stop or (lambda: False)
    should_pause = should_pause or (lambda: False)
    out_dir = Path(out_dir)
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    device = select_device(env)
    precision = resolve_precision(spec.precision, device)
    autocast_dtype = torch.bfloat16 if precision == "bf16" else None
    seed_everything(spec.seed)
    if spec.train_file is None:
        raise SteeringUserError("the spec names no train_file")

    definition = method_definition(spec.method.type)
    definition.check_training(spec.method, spec)
    if spec.validation_file is None and (
        needing := spec.hyperparameters.fields_needing_validation()
    ):
        raise ConfigValidationError(
            f"hyperparameters.{needing[0]} needs a validation_file: without one nothing is "
            "validated; give a validation file or leave it out"
        )
    validation = spec.validation_plan()
    ds_spec = spec.deepspeed
    if ds_spec is None and env.world_size > 1:
        ds_spec = DeepSpeedSpec()  # several ranks always train through DeepSpeed
    zero_stage = None
    if ds_spec is not None:
        zero_stage = resolve_zero_stage(
            ds_spec,
            world_size=env.world_size,
            trains_base_weights=definition.trains_base_weights,
            on_gpus=device.type == "cuda",
            allowed=definition.allowed_zero_stages(spec.method),
        )
        definition.check_zero_stage(spec.method, zero_stage)
    handler = get_method_handler(spec.method.type)
    # One precision regime for every method: fp32 weights, bf16 autocast (backends.py).
    model = load_model(spec.model, cache_dir=cache_dir, dtype=torch.float32)
    tokenizer = load_tokenizer(spec.model, cache_dir=cache_dir)

    train_rows = _load_rows(spec, tokenizer, "train_file")
    val_rows = _load_rows(spec, tokenizer, "validation_file")
    pad_id = pad_token_id_for(tokenizer)
    hp = resolve_hyperparameters(
        spec.method.type,
        spec.hyperparameters,
        n_examples=len(train_rows),
        world_size=env.world_size,
    )
    if hp.batch_size % env.world_size:
        raise ConfigValidationError(
            f"batch_size {hp.batch_size} is the global batch, split across {env.world_size} "
            f"ranks: it must divide by {env.world_size}"
        )
    plan = DataPlan(
        n_rows=len(train_rows),
        batch_size=hp.batch_size,
        world_size=env.world_size,
        grad_accum=hp.gradient_accumulation_steps,
        n_epochs=hp.n_epochs,
        seed=spec.seed,
        max_steps=hp.max_steps,
        lengths=tuple(len(row.input_ids) for row in train_rows) if hp.group_by_length else None,
    )
    total = plan.total_steps
    if spec.max_training_tokens is not None:
        planned = plan.planned_tokens([len(row.input_ids) for row in train_rows])
        if planned > spec.max_training_tokens:
            raise QuotaExceededError(
                f"this job would train on {planned:,} tokens ({total} steps over "
                f"{len(train_rows)} examples), over its max_training_tokens quota of "
                f"{spec.max_training_tokens:,}; use fewer epochs or steps, or a smaller file"
            )
    # site.layers "auto": every layer scored on the first micro-batches, the best steered
    method, selection, selection_restored = resolve_auto_layers(
        spec.method,
        model,
        handler,
        train_rows,
        pad_id,
        seed=spec.seed,
        batch_rows=plan.per_rank,
        device=device,
        autocast_dtype=autocast_dtype,
        resume_from=out_dir if resume else None,
    )
    attached = attach_method(model, method)
    for param in _trainable(attached).values():
        param.data = param.data.float()
    attached.model.to(device)
    counts = count_parameters(attached)
    groups = attached.parameter_groups(
        hp.learning_rate,
        weight_decay=hp.weight_decay,
        steering_learning_rate=hp.steering_learning_rate,
    )
    objective = handler.training_loss(
        attached,
        LossContext(
            method=spec.method,
            hyperparameters=hp,
            load_base_model=lambda: _frozen_base_copy(spec, cache_dir, device),
            load_source_model=(
                (lambda: _frozen_source(spec, cache_dir, device)) if spec.source_artifact else None
            ),
        ),
    )
    optimizer = torch.optim.AdamW([{k: v for k, v in g.items() if k != "name"} for g in groups])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(hp, total))
    ds_config = None
    if ds_spec is not None and zero_stage is not None:
        ds_config = deepspeed_config(
            zero_stage=zero_stage,
            offload_optimizer=ds_spec.offload_optimizer,
            offload_param=ds_spec.offload_param,
            hp=hp,
            per_rank_batch=plan.per_rank,
            hidden_size=getattr(attached.model.config, "hidden_size", None),
        )
        backend: Any = DeepSpeedBackend(
            attached.model,
            optimizer,
            scheduler,
            hp,
            ds_config,
            loss=objective,
            autocast_dtype=autocast_dtype,
            collective_timeout_seconds=spec.collective_timeout_seconds,
        )
    else:
        backend = TorchBackend(
            attached.model, optimizer, scheduler, hp, autocast_dtype, loss=objective
        )
    params = list(_trainable(attached).values())

    state: dict[str, Any] = {
        "step": 0,
        "trained_tokens": 0,
        "losses": [],
        "validation": [],
        "best_validation": None,
        "best_step": None,
        "evals_since_best": 0,
        "world_size": env.world_size,
        "zero_stage": zero_stage,
        # The step and eval events since the previous checkpoint, saved with the next one: a run
        # killed after a checkpoint may have printed them faster than its reader recorded them.
        # the step and eval events a resume reports again: since the checkpoint before the
        # oldest one kept (see ``checkpoint``), bounded to keep_checkpoints + 1 intervals
        "events_since_checkpoint": [],
        "checkpoint_steps": [],
        "layer_selection": selection_record(selection) if selection is not None else None,
    }
    best_snapshot: dict[str, torch.Tensor] | None = None
    if resume and (ckpt := latest_checkpoint(out_dir)) is not None:
        saved, tensors = read_checkpoint(ckpt)
        with gathered(params, modify=True), torch.no_grad():
            for name, param in _trainable(attached).items():
                param.copy_(tensors[name])
        layout = _resume_layout(saved, env.world_size, zero_stage, definition.trains_base_weights)
        if layout == "same":
            backend.load_state(ckpt, saved)
        else:  # the adapter's weights are whole in the checkpoint; its optimizer moments are not
            backend.load_schedule(saved)
        restore_rng_from(ckpt, saved)
        state.update({k: saved.get(k, state[k]) for k in state if k not in _LAYOUT_KEYS})
    start_step = state["step"]

    reporter.emit(
        StartEvent(
            total_steps=total,
            n_epochs=hp.n_epochs,
            batch_size=hp.batch_size,
            n_examples=len(train_rows),
            trainable_parameters=counts.trainable,
            trainable_percent=counts.percent,
            resumed_from_step=start_step,
            backend=backend.name,
            world_size=env.world_size,
            zero_stage=zero_stage,
            truncated_rows=train_rows.stats.n_truncated,
            dropped_rows=train_rows.stats.n_dropped_all_masked,
        )
    )
    if selection is not None and not selection_restored:
        reporter.emit(selection)
    if start_step:
        # Report again what led to this checkpoint (a repeated step replaces its rows), then the
        # checkpoint itself: the run that wrote it may have died before they were recorded.
        for saved_event in state["events_since_checkpoint"]:
            if (event := parse_event(json.dumps(saved_event))) is not None:
                reporter.emit(event)
        reporter.emit(
            CheckpointEvent(step=start_step, path=str(checkpoint_dir(out_dir, start_step)))
        )

    def emit_and_keep(event: StepEvent | EvalEvent) -> None:
        state["events_since_checkpoint"].append(event.model_dump(mode="json"))
        reporter.emit(event)

    def checkpoint(step: int) -> None:
        # A resume reports again the events this checkpoint holds, for a worker that died before
        # recording them. Its recording can lag the training by more than one interval, so the
        # checkpoint holds every event since the checkpoint before the oldest one kept: a resume
        # from it repeats all that the kept checkpoints do not already account for.
        steps = [*state["checkpoint_steps"], step][-(spec.keep_checkpoints + 1) :]
        floor = steps[0] if len(steps) > spec.keep_checkpoints else 0
        state["checkpoint_steps"] = steps
        state["events_since_checkpoint"] = [
            e for e in state["events_since_checkpoint"] if e["step"] > floor
        ]
        final = checkpoint_dir(out_dir, step)
        partial = final.with_name(final.name + ".partial")
        if env.is_main:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        _barrier()
        extra = backend.save_state(partial)
        with gathered(params):
            if env.is_main:
                write_checkpoint(
                    partial,
                    state={**state, **extra},
                    trainable=_trainable(attached),
                    optimizer=None,
                )
                if not definition.trains_base_weights:  # the checkpoint's weights are the model
                    save_artifact(attached, partial / ARTIFACT_DIR, base_model_id=spec.model)
        if env.is_main:
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)
            prune_checkpoints(out_dir, spec.keep_checkpoints)
            reporter.emit(CheckpointEvent(step=step, path=str(final)))
        _barrier()

    backend.train()
    started = time.perf_counter()
    status, step = "succeeded", start_step
    try:
        for step in range(start_step + 1, total + 1):
            step_started = time.perf_counter()
            micro_batches = {
                micro: [
                    handler.collate([train_rows[i] for i in plan.rows_for(micro, rank)], pad_id)
                    for rank in range(env.world_size)
                ]
                for micro in plan.step_micro_batches(step)
            }
            labelled = max(
                1,
                sum(handler.supervised_tokens(b) for bs in micro_batches.values() for b in bs),
            )
            loss_sum, tokens = 0.0, 0
            lr = backend.learning_rate()  # the lr this step's update uses
            with counting_correct_tokens() as counts:
                for batches in micro_batches.values():
                    batch = batches[env.rank]
                    tokens += sum(int(b["attention_mask"].sum()) for b in batches)
                    share = handler.supervised_tokens(batch) / labelled
                    # DeepSpeed averages gradients over ranks: world_size x share sums them.
                    mean = backend.forward_backward(
                        {k: v.to(device) for k, v in batch.items()}, share * env.world_size
                    )
                    loss_sum += mean * share
            grad_norm = backend.step()
            # Only joint acts here, and joint's projection runs under ZeRO 0 alone, so the
            # parameters are never partitioned at this point: no gather needed.
            attached.after_optimizer_step(step)
            # The loss and the token counts of every rank, in one collective.
            loss, correct, counted = _sum_over_ranks(loss_sum, counts.correct, counts.total)
            state["step"], state["trained_tokens"] = step, state["trained_tokens"] + tokens
            state["losses"].append(loss)
            elapsed = time.perf_counter() - started
            step_event = StepEvent(
                step=step,
                total_steps=total,
                epoch=plan.epoch_of((step - 1) * plan.grad_accum),
                loss=loss,
                mean_token_accuracy=correct / counted if counted else None,
                learning_rate=lr,
                grad_norm=grad_norm,
                tokens_per_second=tokens / max(1e-9, time.perf_counter() - step_started),
                trained_tokens=state["trained_tokens"],
                eta_seconds=elapsed / (step - start_step) * (total - step),
            )
            emit_and_keep(step_event)
            every = validation.every_n_steps
            if val_rows is not None and (
                (every and step % every == 0) or (validation.each_epoch and plan.ends_epoch(step))
            ):
                measured = validate(
                    backend, handler, val_rows, pad_id, spec.eval_batch_size, device
                )
                value = measured.loss
                state["validation"].append([step, value])
                emit_and_keep(_eval_event(step, measured))
                if state["best_validation"] is None or value < state["best_validation"]:
                    state["best_validation"], state["evals_since_best"] = value, 0
                    state["best_step"] = step
                    with gathered(params):
                        best_snapshot = {
                            k: v.detach().clone() for k, v in _trainable(attached).items()
                        }
                else:
                    state["evals_since_best"] += 1
                    patience = validation.early_stopping_patience
                    if patience is not None and state["evals_since_best"] >= patience:
                        status = "early_stopped"
                        break
            saved = (
                bool(spec.checkpoint_every_n_steps) and step % spec.checkpoint_every_n_steps == 0
            )
            if saved:
                checkpoint(step)
            stop, pause = _any_rank(should_stop(), should_pause())
            if stop:
                raise TrainingCancelled(f"cancelled at step {step}")
            if pause and step < total:
                if not saved:
                    checkpoint(step)
                raise TrainingPaused(f"paused at step {step}")
    except (TrainingCancelled, TrainingPaused) as stopped:
        reporter.emit(
            EndEvent(
                status="paused" if isinstance(stopped, TrainingPaused) else "cancelled",
                step=step,
                final_loss=state["losses"][-1] if state["losses"] else None,
                artifact=None,
                train_seconds=time.perf_counter() - started,
                trained_tokens=state["trained_tokens"],
            )
        )
        raise

    keep_best = status == "early_stopped" or validation.keep_best
    restored = keep_best and best_snapshot is not None and state["best_step"] != step
    if restored:
        with gathered(params, modify=True), torch.no_grad():
            for name, param in _trainable(attached).items():
                param.copy_(best_snapshot[name])
    last_eval_step = state["validation"][-1][0] if state["validation"] else None
    if val_rows is not None and (restored or last_eval_step != step):
        # The saved adapter's own validation loss (the best one's, when it was restored).
        measured = validate(backend, handler, val_rows, pad_id, spec.eval_batch_size, device)
        state["validation"].append([step, measured.loss])
        reporter.emit(_eval_event(step, measured))
    train_seconds = time.perf_counter() - started
    artifact = out_dir / ARTIFACT_DIR
    manifest = build_manifest(
        spec, hp, attached, tokenizer, device, ds_config, state, train_seconds, backend.name
    )
    if state["layer_selection"] is not None:
        manifest["layer_selection"] = state["layer_selection"]
    if env.is_main and (zero_stage or 0) < 3:
        probe = range(min(LAYER_STATS_BATCHES, plan.micro_per_epoch))
        manifest["layer_stats"] = layer_statistics(
            attached,
            (handler.collate([train_rows[i] for i in plan.rows_for(m, 0)], pad_id) for m in probe),
        )
        report = _strength_report(spec, attached, tokenizer, budget_seconds=0.1 * train_seconds)
        if report is not None:
            manifest["result"]["strength_report"] = report
    with gathered(params):
        if env.is_main:
            save_artifact(attached, artifact, base_model_id=spec.model, training_manifest=manifest)
    _barrier()
    final_loss = state["losses"][-1] if state["losses"] else None
    reporter.emit(
        EndEvent(
            status=status,
            step=step,
            final_loss=final_loss,
            artifact=str(artifact),
            train_seconds=train_seconds,
            trained_tokens=state["trained_tokens"],
            restored_step=state["best_step"] if restored else None,
        )
    )
    return TrainingResult(
        status=status,
        step=step,
        total_steps=total,
        final_loss=final_loss,
        artifact_dir=artifact,
        train_seconds=train_seconds,
        trained_tokens=state["trained_tokens"],
        losses=list(state["losses"]),
        validation_losses=[(int(s), float(v)) for s, v in state["validation"]],
        restored_step=state["best_step"] if restored else None,
    )


def _frozen_base_copy(spec: TrainingSpec, cache_dir: Path | None, device: Any) -> torch.nn.Module:
    """A second, frozen copy of the base model on ``device`` (dpo's ``separate_copy``)."""
    return _frozen_on(load_model(spec.model, cache_dir=cache_dir, dtype=torch.float32), device)


def _frozen_source(spec: TrainingSpec, cache_dir: Path | None, device: Any) -> torch.nn.Module:
    """The spec's ``source_artifact`` on a copy of its base model, frozen, in eval mode."""
    if not Path(str(spec.source_artifact)).is_dir():
        raise SteeringUserError(
            f"the source adapter's files are not at {spec.source_artifact}: was the adapter "
            "deleted after the job was created?"
        )
    base = load_model(spec.model, cache_dir=cache_dir, dtype=torch.float32)
    return _frozen_on(load_artifact(base, spec.source_artifact).model, device)


def _frozen_on(model: torch.nn.Module, device: Any) -> torch.nn.Module:
    """``model`` frozen, in eval mode, on ``device`` (moved after its adapter is attached)."""
    model.requires_grad_(False)
    return model.to(device).eval()


# adapters whose steering has a strength (dpo and distill train post_block or joint adapters)
STRENGTH_REPORT_METHODS = ("post_block", "joint", "dpo", "distill")


def _strength_report(
    spec: TrainingSpec, attached: Any, tokenizer: Any, *, budget_seconds: float
) -> dict[str, Any] | None:
    """The trained adapter's strength report (``steering_core.evaluation.strength_report``), when
    the run
    has a validation file and a steering adapter and the job did not switch it off."""
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


_LAYOUT_KEYS = ("world_size", "zero_stage")


def _eval_event(step: int, measured: Validation) -> EvalEvent:
    return EvalEvent(
        step=step,
        validation_loss=measured.loss,
        validation_mean_token_accuracy=measured.mean_token_accuracy,
    )


def _resume_layout(
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


def _sum_over_ranks(*values: float) -> tuple[float, ...]:
    """Each value summed over the ranks, in one all-reduce (float64: token counts stay exact)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    return tuple(float(value) for value in tensor.tolist())


def _any_rank(*flags: bool) -> tuple[bool, ...]:
    """Each flag, True on every rank when any rank's is set (stop and pause decisions are
    collective), in one all-reduce."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flags
    tensor = torch.tensor([1 if flag else 0 for flag in flags], dtype=torch.int32)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return tuple(bool(value) for value in tensor.tolist())


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


__all__ = [
    "NullReporter",
    "Reporter",
    "TrainingCancelled",
    "TrainingPaused",
    "TrainingResult",
    "train",
]
