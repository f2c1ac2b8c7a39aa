"""Request and response bodies: the OpenAI fine-tuning shapes, plus the steering method block."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, field_validator

from registry.integrations import TRACKER_TYPES, IntegrationBlock
from steering_core.methods.definition import MethodDefinition
from steering_core.methods.registry import method_definitions
from steering_core.spec.compute import ComputeRequest
from steering_core.spec.method_config import InputModel
from steering_core.spec.training_spec import Hyperparameters


class Strict(InputModel):
    """Base of the request bodies: unknown fields are errors, booleans are not numbers, and
    strings must be valid Unicode (:class:`steering_core.spec.method_config.InputModel`)."""

    model_config = ConfigDict(extra="forbid")


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(
            f"must not contain NUL (\\u0000) characters (one at position {value.index(chr(0))})"
        )
    return value


# Text the registry stores or looks up: PostgreSQL text cannot hold NUL.
StoredText = Annotated[str, AfterValidator(_no_nul)]

# OpenAI's limits on a job's metadata.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
# Adapter ids start so (registry.ids); a name starting so would read as an id (name@version).
ADAPTER_ID_PREFIX = "adapter-"


class FileObject(BaseModel):
    object: Literal["file"] = "file"
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    status_details: str | None = None
    format: str | None = None
    n_examples: int | None = None


class ListObject(BaseModel):
    object: Literal["list"] = "list"
    data: list[Any]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None

    @classmethod
    def page(cls, data: list[Any], has_more: bool) -> ListObject:
        """A page of objects with ``id``s, naming its first and last (the next page's cursor)."""
        return cls(
            data=data,
            has_more=has_more,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
        )


def _method_block(definition: MethodDefinition) -> type[BaseModel]:
    """``method.<name>``: the method's config fields (all defaulted) and its hyperparameters."""
    fields: dict[str, Any] = {
        name: (field.annotation, field)
        for name, field in definition.config.model_fields.items()
        if name != "type"
    }
    fields["hyperparameters"] = (Hyperparameters | None, None)
    camel = "".join(part.capitalize() for part in definition.name.split("_"))
    return create_model(f"{camel}Block", __base__=Strict, __doc__=definition.description, **fields)


def _method_block_union() -> type[BaseModel]:
    """``{"type": "post_block", "post_block": {"hyperparameters": {...}, "site": {...}, ...}}``,
    with one optional block per registered method (the method registry decides which)."""
    definitions = method_definitions()
    names = tuple(d.name for d in definitions)
    fields: dict[str, Any] = {"type": (Literal[names], ...)}
    for definition in definitions:
        fields[definition.name] = (_method_block(definition) | None, None)
    return create_model(
        "MethodBlock",
        __base__=Strict,
        __doc__="The method: ``type`` names it, and the block under its name holds its "
        "``hyperparameters`` and its own fields; every field has a default, so "
        '``{"type": "post_block"}`` alone is valid.',
        **fields,
    )


MethodBlock = _method_block_union()


class JobCreate(Strict):
    model: StoredText = Field(min_length=1, max_length=256)
    training_file: StoredText = Field(min_length=1, max_length=64)
    validation_file: StoredText | None = Field(default=None, max_length=64)
    method: MethodBlock = MethodBlock(type="post_block")  # type: ignore[valid-type]
    hyperparameters: Hyperparameters | None = Field(
        default=None, description="Deprecated by OpenAI in favour of method.*.hyperparameters"
    )
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    suffix: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="The trained adapter's name (default: <model>-<method>); not 'adapter-...'",
    )
    metadata: dict[str, str] | None = Field(
        default=None,
        description=f"At most {MAX_METADATA_PAIRS} pairs; keys at most {MAX_METADATA_KEY} "
        f"characters, values at most {MAX_METADATA_VALUE} (as OpenAI)",
    )
    integrations: list[IntegrationBlock] | None = Field(
        default=None,
        max_length=len(TRACKER_TYPES),
        description="Experiment trackers the job logs its settings, metrics and outcome to, at "
        'most one of each: {"type": "wandb", "wandb": {"project": ...}} or {"type": "mlflow", '
        '"mlflow": {"tracking_uri": ..., "experiment_name": ...}}',
    )
    gpus: int = Field(
        default=0, ge=0, le=64, description="GPUs the job needs (0: a CPU job); = compute.gpus"
    )
    compute: ComputeRequest | None = Field(
        default=None,
        description="What the job runs on: GPUs, processes (ranks; method.*.hyperparameters."
        "batch_size is the global batch, split across them) and DeepSpeed settings",
    )

    @field_validator("suffix")
    @classmethod
    def _suffix_is_not_an_id(cls, suffix: str | None) -> str | None:
        if suffix is not None and suffix.startswith(ADAPTER_ID_PREFIX):
            raise ValueError(
                f"must not start with {ADAPTER_ID_PREFIX!r}: the suffix names the trained adapter, "
                f"and a reference starting with {ADAPTER_ID_PREFIX!r} is read as an adapter id, "
                "so its name@version would not find it"
            )
        return suffix

    @field_validator("metadata")
    @classmethod
    def _metadata_within_limits(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        if metadata is None:
            return None
        # Each message starts with a number or a quote, never a word: a word that is also a key
        # would be taken for the field to blame (api.errors.error_param).
        if len(metadata) > MAX_METADATA_PAIRS:
            raise ValueError(f"{MAX_METADATA_PAIRS} key-value pairs at most, got {len(metadata)}")
        for key, value in metadata.items():
            if len(key) > MAX_METADATA_KEY:
                raise ValueError(
                    f"{MAX_METADATA_KEY} characters at most in a key; {key[:16]!r}... has "
                    f"{len(key)}"
                )
            if len(value) > MAX_METADATA_VALUE:
                raise ValueError(
                    f"{MAX_METADATA_VALUE} characters at most in a value; the value of "
                    f"{key[:16]!r} has {len(value)}"
                )
            if "\x00" in key or "\x00" in value:
                raise ValueError(f"{key!r}: keys and values must not contain NUL (\\u0000)")
        return metadata


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class JobObject(BaseModel):
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    id: str
    model: str
    created_at: int
    finished_at: int | None
    fine_tuned_model: str | None
    organization_id: str
    result_files: list[str]
    status: str
    validation_file: str | None
    training_file: str
    hyperparameters: dict[str, Any]
    trained_tokens: int | None
    error: JobError | None
    seed: int
    estimated_finish: int | None
    integrations: list[Any] = Field(
        default_factory=list, description="The job's experiment trackers, as it was created with"
    )
    metadata: dict[str, str] | None
    method: dict[str, Any]
    user_provided_suffix: str | None = None
    progress: dict[str, Any]
    compute: dict[str, Any] | None = Field(
        default=None,
        description="The stored compute block; once running, also the worker, devices and CPU "
        "slots it got, and the world_size, backend and zero_stage the engine reported",
    )


class EventObject(BaseModel):
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    id: str
    created_at: int
    level: str
    message: str
    data: dict[str, Any] | None
    type: str


class CheckpointMetrics(BaseModel):
    """OpenAI's checkpoint metrics: the job's training and validation loss and mean token
    accuracy at the checkpoint's step (``valid_*`` only when a validation ran at that step);
    ``full_valid_*`` are not measured (every validation covers the whole file)."""

    step: int
    train_loss: float | None = None
    valid_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_mean_token_accuracy: float | None = None
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None


class CheckpointObject(BaseModel):
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    id: str
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int


class AdapterObject(BaseModel):
    object: Literal["adapter"] = "adapter"
    id: str
    name: str
    version: int
    reference: str
    created_at: int
    base_model: str
    method: dict[str, Any]
    job_id: str | None
    sha256: str
    bytes: int
    files: dict[str, str]
    trainable_parameters: int | None
    metrics: dict[str, Any] | None
    strength_report: dict[str, Any] | None = Field(
        default=None,
        description="score and off-task KL at strengths 0 to 1.5, and the recommended strength "
        "(steering_core.evaluation.strength_report); None when the job measured none",
    )
    trained_by: dict[str, Any] | None = Field(
        default=None,
        description='how it was trained: {"method": the job\'s method} (dpo and distill train '
        'a post_block or joint adapter), with "source", the adapter distilled, for distill',
    )


class ModelObject(BaseModel):
    """A model ``model`` can name in completions: a base model of the catalogue, an adapter (by
    its id; ``name`` is its ``name@version``) or a checkpoint of a job."""

    object: Literal["model"] = "model"
    id: str
    created: int
    owned_by: str
    kind: Literal["base", "adapter", "checkpoint"]
    name: str | None = None  # an adapter's name@version
    base_model: str | None = None  # what an adapter or a checkpoint steers
    method: str | None = None


class MethodObject(BaseModel):
    """A registered training method, as ``GET /v1/methods`` lists it."""

    object: Literal["method"] = "method"
    id: str
    description: str
    data_formats: list[str]
    defaults: dict[str, Any]
    config_schema: dict[str, Any]
