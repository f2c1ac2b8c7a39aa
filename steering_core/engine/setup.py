"""The setup phase of ``train()``: seed, model, attached method, data, optimizer and schedule,
backend and resume, up to the start event; it hands the step loop one :class:`RunState`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from steering_core.artifact.accounting import ParameterCount, count_parameters
from steering_core.data.batches import pad_token_id_for
from steering_core.data.formats import parse_jsonl
from steering_core.engine.backends import DeepSpeedBackend, TorchBackend, deepspeed_config
from steering_core.engine.events import LayerSelectionEvent, StartEvent
from steering_core.engine.layer_selection import resolve_auto_layers, selection_record
from steering_core.engine.model_source import LoadModel, ModelSource
from steering_core.engine.plan import DataPlan, lr_lambda
from steering_core.engine.run_checkpoints import report_resumed, resume_from_latest
from steering_core.engine.run_state import (
    NullReporter,
    Reporter,
    RunData,
    RunSetup,
    RunState,
    trainable,
)
from steering_core.engine.runtime import (
    DistEnv,
    dist_env,
    resolve_precision,
    seed_everything,
    select_device,
)
from steering_core.errors import ConfigValidationError, QuotaExceededError, SteeringUserError
from steering_core.methods.base import (
    AttachedMethod,
    LossContext,
    MethodHandler,
    get_method_handler,
)
from steering_core.methods.definition import MethodDefinition
from steering_core.methods.registry import method_definition
from steering_core.model.loading import load_tokenizer
from steering_core.spec.compute import DeepSpeedSpec, resolve_zero_stage
from steering_core.spec.training_spec import TrainingSpec, resolve_hyperparameters
from steering_core.steering.attach import attach_method


def set_up(
    spec: TrainingSpec,
    out_dir: Path,
    reporter: Reporter | None,
    should_stop: Callable[[], bool] | None,
    should_pause: Callable[[], bool] | None,
    *,
    resume: bool,
    cache_dir: Path | None,
    load_model: LoadModel,
) -> RunState:
    """The run of ``spec`` built, resumed from its latest checkpoint when ``resume`` asks (and
    there is one), and its start reported; the arguments are ``train()``'s."""
    env = dist_env()
    state, counts, selection = _build(
        spec,
        Path(out_dir),
        env,
        reporter if (reporter is not None and env.is_main) else NullReporter(),
        should_stop or (lambda: False),
        should_pause or (lambda: False),
        resume=resume,
        models=ModelSource(spec, cache_dir, load_model),
    )
    if resume:
        resume_from_latest(state)
    state.start_step = state.step
    _report_start(state, counts, selection)
    return state


def _build(
    spec: TrainingSpec,
    out_dir: Path,
    env: DistEnv,
    reporter: Reporter,
    should_stop: Callable[[], bool],
    should_pause: Callable[[], bool],
    *,
    resume: bool,
    models: ModelSource,
) -> tuple[RunState, ParameterCount, LayerSelectionEvent | None]:
    """The run's state before its first step, its trainable parameter count, and the "auto"
    layer selection it made (None: none, or the one an earlier run of the job made)."""
    device, autocast_dtype = _prepare(spec, env, out_dir)
    definition, ds_spec, zero_stage = _checked_method(spec, env, device)
    handler = get_method_handler(spec.method.type)
    # One precision regime for every method: fp32 weights, bf16 autocast (backends.py).
    model = models.load()
    data = _load_data(spec, env, load_tokenizer(spec.model, cache_dir=models.cache_dir))
    attached, selection, selection_restored = _attach(
        spec, model, handler, data, device, autocast_dtype, out_dir if resume else None
    )
    counts = count_parameters(attached)
    backend, ds_config = _backend(
        spec, attached, handler, data, ds_spec, zero_stage, device, autocast_dtype, models
    )
    run = RunSetup(
        spec=spec,
        out_dir=out_dir,
        env=env,
        reporter=reporter,
        should_stop=should_stop,
        should_pause=should_pause,
        device=device,
        definition=definition,
        handler=handler,
        validation=spec.validation_plan(),
        data=data,
        attached=attached,
        backend=backend,
        ds_config=ds_config,
        params=list(trainable(attached).values()),
    )
    state = RunState(
        run,
        world_size=env.world_size,
        zero_stage=zero_stage,
        layer_selection=selection_record(selection) if selection is not None else None,
    )
    return state, counts, selection if not selection_restored else None


def _prepare(
    spec: TrainingSpec, env: DistEnv, out_dir: Path
) -> tuple[torch.device, torch.dtype | None]:
    """The output directory made (rank 0), the device and autocast dtype chosen, all seeded."""
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    device = select_device(env)
    precision = resolve_precision(spec.precision, device)
    autocast_dtype = torch.bfloat16 if precision == "bf16" else None
    seed_everything(spec.seed)
    return device, autocast_dtype


def _checked_method(
    spec: TrainingSpec, env: DistEnv, device: torch.device
) -> tuple[MethodDefinition, DeepSpeedSpec | None, int | None]:
    """The method's definition, having checked the spec against it, and the DeepSpeed settings
    and ZeRO stage the run trains under (None for both: plain torch)."""
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
    return definition, ds_spec, zero_stage


def load_rows(spec: TrainingSpec, tokenizer: Any, what: str) -> Any:
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


def _load_data(spec: TrainingSpec, env: DistEnv, tokenizer: Any) -> RunData:
    """The rows, the hyperparameters resolved for them and the plan over them, checked against
    the ranks that split each batch and the job's token quota."""
    train_rows = load_rows(spec, tokenizer, "train_file")
    val_rows = load_rows(spec, tokenizer, "validation_file")
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
    if spec.max_training_tokens is not None:
        planned = plan.planned_tokens([len(row.input_ids) for row in train_rows])
        if planned > spec.max_training_tokens:
            raise QuotaExceededError(
                f"this job would train on {planned:,} tokens ({plan.total_steps} steps over "
                f"{len(train_rows)} examples), over its max_training_tokens quota of "
                f"{spec.max_training_tokens:,}; use fewer epochs or steps, or a smaller file"
            )
    return RunData(tokenizer, train_rows, val_rows, pad_id, hp, plan)


def _attach(
    spec: TrainingSpec,
    model: torch.nn.Module,
    handler: MethodHandler,
    data: RunData,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    resume_from: Path | None,
) -> tuple[AttachedMethod, LayerSelectionEvent | None, bool]:
    """The method attached to ``model`` on ``device``, its trainable weights in fp32, with the
    "auto" layer selection (and whether it was restored from ``resume_from``)."""
    # site.layers "auto": every layer scored on the first micro-batches, the best steered
    method, selection, selection_restored = resolve_auto_layers(
        spec.method,
        model,
        handler,
        data.train_rows,
        data.pad_id,
        seed=spec.seed,
        batch_rows=data.plan.per_rank,
        device=device,
        autocast_dtype=autocast_dtype,
        resume_from=resume_from,
    )
    attached = attach_method(model, method)
    for param in trainable(attached).values():
        param.data = param.data.float()
    attached.model.to(device)
    return attached, selection, selection_restored


def _backend(
    spec: TrainingSpec,
    attached: AttachedMethod,
    handler: MethodHandler,
    data: RunData,
    ds_spec: DeepSpeedSpec | None,
    zero_stage: int | None,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    models: ModelSource,
) -> tuple[TorchBackend | DeepSpeedBackend, dict[str, Any] | None]:
    """The optimizer, the schedule and the method's objective behind plain torch or DeepSpeed,
    and the DeepSpeed config (None: plain torch)."""
    hp = data.hp
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
            load_base_model=lambda: models.frozen_base(device),
            load_source_model=(
                (lambda: models.frozen_source(device)) if spec.source_artifact else None
            ),
        ),
    )
    optimizer = torch.optim.AdamW([{k: v for k, v in g.items() if k != "name"} for g in groups])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(hp, data.plan.total_steps))
    if ds_spec is None or zero_stage is None:
        plain = TorchBackend(
            attached.model, optimizer, scheduler, hp, autocast_dtype, loss=objective
        )
        return plain, None
    ds_config = deepspeed_config(
        zero_stage=zero_stage,
        offload_optimizer=ds_spec.offload_optimizer,
        offload_param=ds_spec.offload_param,
        hp=hp,
        per_rank_batch=data.plan.per_rank,
        hidden_size=getattr(attached.model.config, "hidden_size", None),
    )
    backend = DeepSpeedBackend(
        attached.model,
        optimizer,
        scheduler,
        hp,
        ds_config,
        loss=objective,
        autocast_dtype=autocast_dtype,
        collective_timeout_seconds=spec.collective_timeout_seconds,
    )
    return backend, ds_config


def _report_start(
    state: RunState, counts: ParameterCount, selection: LayerSelectionEvent | None
) -> None:
    """The start event, the layer selection made by this run (not one restored), and on a
    resume what led to its checkpoint."""
    run, data = state.run, state.run.data
    run.reporter.emit(
        StartEvent(
            total_steps=data.plan.total_steps,
            n_epochs=data.hp.n_epochs,
            batch_size=data.hp.batch_size,
            n_examples=len(data.train_rows),
            trainable_parameters=counts.trainable,
            trainable_percent=counts.percent,
            resumed_from_step=state.start_step,
            backend=run.backend.name,
            world_size=run.env.world_size,
            zero_stage=state.zero_stage,
            truncated_rows=data.train_rows.stats.n_truncated,
            dropped_rows=data.train_rows.stats.n_dropped_all_masked,
        )
    )
    if selection is not None:
        run.reporter.emit(selection)
    if state.start_step:
        report_resumed(state)
