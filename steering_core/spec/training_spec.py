"""The training spec: everything a training run needs, as one pydantic document. Torch-free.

The worker writes a spec as ``spec.json`` and the training subprocess reads it; nothing in
``steering_core`` reads the environment. Hyperparameters that are left out (or ``"auto"``) take
the method's defaults (METHOD.md section 3-4, in each method's definition), resolved by
:func:`resolve_hyperparameters`; ``"auto"`` epochs and batch size are chosen from the number of
training examples once the engine has tokenized the file (:func:`auto_n_epochs`,
:func:`auto_batch_size`).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import Field, field_validator

from steering_core.errors import ConfigValidationError
from steering_core.methods.definition import Scheduler
from steering_core.methods.post_block.config import PostBlockMethod
from steering_core.methods.registry import MethodConfig, method_definition, method_definitions
from steering_core.spec.compute import DeepSpeedSpec
from steering_core.spec.method_config import StrictModel
from steering_core.tasks.definitions import TASK_NAMES

# "auto" n_epochs and batch_size, from the number of training examples (the rows left once the
# file is tokenized: a row that truncation leaves without a supervised token does not count).
# Epochs as OpenAI's published guidance chooses them: three passes, more for a small file so
# that training sees enough examples, fewer for a large one so that it does not see too many.
AUTO_EPOCHS = 3
AUTO_MIN_EXAMPLES_SEEN = 100
AUTO_MAX_EXAMPLES_SEEN = 25_000
AUTO_MAX_EPOCHS = 25
# The batch grows with the file (about 0.2% of it, as a power of two) between the steering
# default of METHOD.md (8) and 64, so that a large file still takes many optimizer steps.
AUTO_BATCH_FRACTION = 0.002
AUTO_MIN_BATCH = 8
AUTO_MAX_BATCH = 64
DEFAULT_DPO_BETA = 0.1  # OpenAI's and the DPO paper's


def auto_n_epochs(n_examples: int) -> int:
    """``n_epochs: "auto"``: 3, raised to see at least 100 examples in all (at most 25
    epochs), lowered to see at most 25,000 (at least 1)."""
    n = max(1, n_examples)
    if n * AUTO_EPOCHS < AUTO_MIN_EXAMPLES_SEEN:
        return min(AUTO_MAX_EPOCHS, math.ceil(AUTO_MIN_EXAMPLES_SEEN / n))
    if n * AUTO_EPOCHS > AUTO_MAX_EXAMPLES_SEEN:
        return max(1, AUTO_MAX_EXAMPLES_SEEN // n)
    return AUTO_EPOCHS


def auto_batch_size(n_examples: int, world_size: int = 1) -> int:
    """``batch_size: "auto"``: the power of two nearest 0.2% of the examples, within [8, 64],
    no more than the examples, rounded up to a multiple of the ranks that split it."""
    n = max(1, n_examples)
    nearest = 2 ** round(math.log2(max(1.0, n * AUTO_BATCH_FRACTION)))
    batch = min(n, max(AUTO_MIN_BATCH, min(AUTO_MAX_BATCH, nearest)))
    return math.ceil(batch / world_size) * world_size


class Hyperparameters(StrictModel):
    """OpenAI's names where they exist (each accepting ``"auto"``), plus ours."""

    n_epochs: Annotated[int, Field(ge=1, le=1000)] | Literal["auto"] = Field(
        default="auto",
        description="auto: chosen from the training examples when the job starts: 3 epochs, "
        f"more for a small file (at least {AUTO_MIN_EXAMPLES_SEEN} examples seen, at most "
        f"{AUTO_MAX_EPOCHS} epochs), fewer for a large one (at most {AUTO_MAX_EXAMPLES_SEEN:,} "
        "examples seen, at least 1 epoch)",
    )
    batch_size: Annotated[int, Field(ge=1, le=4096)] | Literal["auto"] = Field(
        default="auto",
        description="auto: chosen from the training examples when the job starts: about "
        f"{AUTO_BATCH_FRACTION:.1%} of them as a power of two, between {AUTO_MIN_BATCH} and "
        f"{AUTO_MAX_BATCH}, at most the number of examples, and a multiple of the processes",
    )
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=1000)] | Literal["auto"] = Field(
        default="auto", description="Multiplies the method's default learning rate."
    )
    learning_rate: float | None = Field(default=None, gt=0, le=1.0)
    steering_learning_rate: float | None = Field(
        default=None, gt=0, le=1.0, description="joint only: lr of the steering adapters."
    )
    beta: Annotated[float, Field(gt=0, le=100)] | Literal["auto"] | None = Field(
        default=None,
        description=f"dpo only: how far the policy may move from the reference (auto: "
        f"{DEFAULT_DPO_BETA}); larger keeps it closer.",
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
    # Validation (each needs a validation file): besides the end of every epoch and of training.
    eval_every_n_steps: int | None = Field(
        default=None,
        ge=1,
        description="Validate every N steps, besides the end of every epoch (default: the "
        "service's interval). Needs a validation file.",
    )
    early_stopping_patience: int | None = Field(
        default=None,
        ge=1,
        description="Stop after this many validations without a lower validation loss, keeping "
        "the adapter of the best one. Needs a validation file.",
    )
    keep_best_validation: bool = Field(
        default=False,
        description="Keep the adapter of the lowest validation loss seen instead of the last "
        "one (early stopping always does). Needs a validation file.",
    )
    strength_report: bool = Field(
        default=True,
        description="After training, score the steering at strengths 0 to 1.5 on up to 64 "
        "validation items and measure its off-task KL (within 10% of the training time); a "
        "post_block or joint adapter with a validation file. false: skip it.",
    )
    strength_report_task: str | None = Field(
        default=None,
        description="The built-in task whose scorer the strength report uses (listops, "
        "arithmetic, ...); default: exact match of the completion.",
    )

    @field_validator("strength_report_task")
    @classmethod
    def _known_task(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in TASK_NAMES:
            raise ValueError(f"unknown task {value!r}; known tasks: {', '.join(TASK_NAMES)}")
        return value

    def fields_needing_validation(self) -> list[str]:
        """The validation settings given here, which a run without a validation file could not
        honour."""
        return [name for name in VALIDATION_FIELDS if getattr(self, name)]


VALIDATION_FIELDS = ("eval_every_n_steps", "early_stopping_patience", "keep_best_validation")


# The hyperparameters only some methods take, each checked against the method's definition.
METHOD_SPECIFIC = ("beta",)


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
    eval_every_n_steps: int | None
    early_stopping_patience: int | None
    keep_best_validation: bool
    strength_report: bool = True
    strength_report_task: str | None = None
    beta: float | None = None  # dpo's


class MethodHyperparameterError(ConfigValidationError):
    """A method-specific hyperparameter given to a method that does not take it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def check_method_hyperparameters(method_type: str, hp: Hyperparameters) -> None:
    """Refuse a method-specific hyperparameter (``METHOD_SPECIFIC``) given to a method whose
    definition does not take it, naming it and the methods that do."""
    definition = method_definition(method_type)
    for name in METHOD_SPECIFIC:
        if getattr(hp, name) is not None and name not in definition.hyperparameters:
            takers = [d.name for d in method_definitions() if name in d.hyperparameters]
            raise MethodHyperparameterError(
                name,
                f"hyperparameters.{name} applies to the {' and '.join(takers)} method only, "
                f"not {method_type}; leave it out",
            )


def _method_specific(method_type: str, hp: Hyperparameters) -> dict[str, Any]:
    """The method-specific hyperparameters, filled for a method that takes them."""
    check_method_hyperparameters(method_type, hp)
    definition = method_definition(method_type)
    if "beta" not in definition.hyperparameters:
        return {}
    return {"beta": DEFAULT_DPO_BETA if hp.beta in (None, "auto") else hp.beta}


def _method_filled(method_type: str, hp: Hyperparameters) -> dict[str, Any]:
    """Every hyperparameter but the data-sized two, unset ones from the method's defaults."""
    defaults = method_definition(method_type).defaults
    multiplier = 1.0 if hp.learning_rate_multiplier == "auto" else hp.learning_rate_multiplier
    return {
        "learning_rate": (hp.learning_rate or defaults.learning_rate) * multiplier,
        "steering_learning_rate": hp.steering_learning_rate,
        "gradient_accumulation_steps": hp.gradient_accumulation_steps,
        "warmup_ratio": defaults.warmup_ratio if hp.warmup_ratio is None else hp.warmup_ratio,
        "lr_scheduler": hp.lr_scheduler or defaults.lr_scheduler,
        "weight_decay": hp.weight_decay,
        "max_grad_norm": hp.max_grad_norm,
        "max_steps": hp.max_steps,
        "group_by_length": hp.group_by_length,
        **{name: getattr(hp, name) for name in VALIDATION_FIELDS},
        "strength_report": hp.strength_report,
        "strength_report_task": hp.strength_report_task,
        **_method_specific(method_type, hp),
    }


def resolve_hyperparameters(
    method_type: str, hp: Hyperparameters, *, n_examples: int, world_size: int = 1
) -> ResolvedHyperparameters:
    """Fill ``auto`` and unset values: the method's defaults (its definition's), and epochs and
    batch size from the ``n_examples`` training examples split across ``world_size`` ranks."""
    return ResolvedHyperparameters(
        n_epochs=auto_n_epochs(n_examples) if hp.n_epochs == "auto" else hp.n_epochs,
        batch_size=(
            auto_batch_size(n_examples, world_size) if hp.batch_size == "auto" else hp.batch_size
        ),
        **_method_filled(method_type, hp),
    )


def shown_hyperparameters(method_type: str, hp: Hyperparameters) -> dict[str, Any]:
    """What a job shows before its training starts: the method's defaults filled in, epochs and
    batch size as given (``"auto"`` until the engine has counted the examples)."""
    return {"n_epochs": hp.n_epochs, "batch_size": hp.batch_size, **_method_filled(method_type, hp)}


class ValidationPlan(NamedTuple):
    """When a run with a validation file validates, and what it does with the losses."""

    every_n_steps: int | None  # besides each epoch's end (when each_epoch) and the last step
    each_epoch: bool
    early_stopping_patience: int | None  # validations without a lower loss before stopping
    keep_best: bool  # save the best validation's adapter (early stopping always does)


class TrainingSpec(StrictModel):
    """One training run: base model, method, data and hyperparameters."""

    model: str = Field(description="Catalogue name (smollm2-135m-instruct, tiny-llama) or path.")
    method: MethodConfig = PostBlockMethod()  # type: ignore[valid-type]
    hyperparameters: Hyperparameters = Hyperparameters()
    train_file: str | None = None
    validation_file: str | None = None
    source_artifact: str | None = Field(
        default=None,
        description="distill: the directory of the source adapter's artifact (on the same "
        "base model); the service sets it from method.distill.source.",
    )
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
    eval_every_n_steps: int | None = Field(
        default=None,
        ge=1,
        description="Validate every N steps (the hyperparameter of the same name wins).",
    )
    eval_each_epoch: bool = Field(
        default=False, description="Validate at the end of every epoch too."
    )
    checkpoint_every_n_steps: int | None = Field(default=None, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1, le=1000)
    early_stopping_patience: int | None = Field(
        default=None,
        ge=1,
        description="Stop after this many validations without a lower loss (the "
        "hyperparameter of the same name wins).",
    )
    keep_best_validation: bool = Field(
        default=False,
        description="Save the adapter of the lowest validation loss seen (validated as "
        "validation_plan() says, since the last resume) instead of the last one; early "
        "stopping always does. The hyperparameter of the same name turns it on too.",
    )
    eval_batch_size: int = Field(default=16, ge=1, le=4096)

    def validation_plan(self) -> ValidationPlan:
        """The validation settings: the hyperparameters' where given (a job's own), else the
        spec's (the service's interval, or a library caller's)."""
        hp = self.hyperparameters
        return ValidationPlan(
            every_n_steps=hp.eval_every_n_steps or self.eval_every_n_steps,
            each_epoch=self.eval_each_epoch,
            early_stopping_patience=hp.early_stopping_patience or self.early_stopping_patience,
            keep_best=hp.keep_best_validation or self.keep_best_validation,
        )
