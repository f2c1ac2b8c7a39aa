"""The training spec: everything a training run needs, as one pydantic document. Torch-free.

The worker writes a spec as ``spec.json`` and the training subprocess reads it; nothing in
``steering_core`` reads the environment. Hyperparameters that are left out (or ``"auto"``) take
the method's defaults (METHOD.md section 3-4, in each method's definition), resolved by
:func:`resolve_hyperparameters`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from steering_core.compute import DeepSpeedSpec
from steering_core.config import StrictModel
from steering_core.methods.definition import Scheduler
from steering_core.methods.post_block.config import PostBlockMethod
from steering_core.methods.registry import MethodConfig, method_definition


class Hyperparameters(StrictModel):
    """OpenAI's names where they exist (each accepting ``"auto"``), plus ours."""

    n_epochs: Annotated[int, Field(ge=1, le=1000)] | Literal["auto"] = Field(
        default="auto", description="auto: 1 epoch"
    )
    batch_size: Annotated[int, Field(ge=1, le=4096)] | Literal["auto"] = Field(
        default="auto", description="auto: 8"
    )
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=1000)] | Literal["auto"] = Field(
        default="auto", description="Multiplies the method's default learning rate."
    )
    learning_rate: float | None = Field(default=None, gt=0, le=1.0)
    steering_learning_rate: float | None = Field(
        default=None, gt=0, le=1.0, description="joint only: lr of the steering adapters."
    )
    gradient_accumulation_steps: int = Field(default=2, ge=1, le=1024)
    warmup_ratio: float | None = Field(default=None, ge=0.0, le=1.0)
    lr_scheduler: Scheduler | None = None
    weight_decay: float = Field(default=0.0, ge=0.0, le=10.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0, le=1e6)
    max_steps: int | None = Field(default=None, ge=1, le=10_000_000)
    group_by_length: bool = Field(
        default=False,
        description="Batch rows of similar length together (sorted by length within random "
        "groups of 50 batches, then the batches shuffled): less padding, faster training on "
        "mixed-length data.",
    )


class ResolvedHyperparameters(StrictModel):
    n_epochs: int
    batch_size: int
    learning_rate: float
    steering_learning_rate: float | None
    gradient_accumulation_steps: int
    warmup_ratio: float
    lr_scheduler: Scheduler
    weight_decay: float
    max_grad_norm: float
    max_steps: int | None
    group_by_length: bool


def resolve_hyperparameters(method_type: str, hp: Hyperparameters) -> ResolvedHyperparameters:
    """Fill ``auto`` and unset values from the method's defaults (its definition's)."""
    defaults = method_definition(method_type).defaults
    multiplier = 1.0 if hp.learning_rate_multiplier == "auto" else hp.learning_rate_multiplier
    return ResolvedHyperparameters(
        n_epochs=1 if hp.n_epochs == "auto" else hp.n_epochs,
        batch_size=8 if hp.batch_size == "auto" else hp.batch_size,
        learning_rate=(hp.learning_rate or defaults.learning_rate) * multiplier,
        steering_learning_rate=hp.steering_learning_rate,
        gradient_accumulation_steps=hp.gradient_accumulation_steps,
        warmup_ratio=defaults.warmup_ratio if hp.warmup_ratio is None else hp.warmup_ratio,
        lr_scheduler=hp.lr_scheduler or defaults.lr_scheduler,
        weight_decay=hp.weight_decay,
        max_grad_norm=hp.max_grad_norm,
        max_steps=hp.max_steps,
        group_by_length=hp.group_by_length,
    )


class TrainingSpec(StrictModel):
    """One training run: base model, method, data and hyperparameters."""

    model: str = Field(description="Catalogue name (smollm2-135m-instruct, tiny-llama) or path.")
    method: MethodConfig = PostBlockMethod()  # type: ignore[valid-type]
    hyperparameters: Hyperparameters = Hyperparameters()
    train_file: str | None = None
    validation_file: str | None = None
    seed: int = Field(default=42, ge=0, le=2**32 - 1)
    max_seq_length: int = Field(default=512, ge=8, le=131072)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto", description="auto: bf16 where the device supports it, else fp32."
    )
    deepspeed: DeepSpeedSpec | None = Field(
        default=None,
        description="Train through DeepSpeed (always, when launched with several ranks).",
    )
    collective_timeout_seconds: float = Field(
        default=600.0,
        gt=0,
        le=86400,
        description="How long a rank waits in a collective for the others before failing (a "
        "rank that died must not leave the others hanging).",
    )
    max_training_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Refuse to start when the run would feed more tokens than this through the "
        "model (a tenant's quota); checked exactly, after tokenizing, before step 1.",
    )
    eval_every_n_steps: int | None = Field(default=None, ge=1)
    checkpoint_every_n_steps: int | None = Field(default=None, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1, le=1000)
    early_stopping_patience: int | None = Field(
        default=None, ge=1, description="Stop after this many evaluations without improvement."
    )
    keep_best_validation: bool = Field(
        default=False,
        description="Save the adapter of the lowest validation loss seen (evaluated every "
        "eval_every_n_steps, since the last resume) instead of the last one; early stopping "
        "always does.",
    )
    eval_batch_size: int = Field(default=16, ge=1, le=4096)
