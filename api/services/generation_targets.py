"""What a generation request runs with, resolved from its ``model`` and ``steering``.

``model`` is a base model of the configured catalogue, one of the caller's adapters (id or
``name@version``) or a job's checkpoint; ``steering`` adds more adapters of the same base model,
each at its strength. A ``full`` adapter is a whole model and can only be the ``model``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from api.completion_schemas import ChatCompletionCreate, CompletionCreate
from api.errors import ApiError
from api.services.adapters import check_stored_files
from registry import adapters as adapters_repo
from registry import checkpoints as checkpoints_repo
from registry.errors import NotFound
from registry.settings import Settings
from steering_core.errors import ConfigValidationError
from steering_core.methods.registry import method_definition


@dataclass(frozen=True)
class StoredAdapter:
    """What generation needs of an adapter row (read while the session is open)."""

    id: str
    reference: str
    param: str
    base_model: str
    method: str
    sha256: str
    directory: Path
    files: dict[str, str]

    @property
    def whole_model(self) -> bool:
        """A method that trains the base weights stores a whole model: its own copy serves it
        (an unknown method is tried as an adapter, and refused by name if it is not one)."""
        try:
            return method_definition(self.method).trains_base_weights
        except ConfigValidationError:
            return False

    def verify(self) -> None:
        """Check the stored files against their sha256 (when the adapter is first loaded)."""
        check_stored_files(self.id, self.directory, self.files)


@dataclass(frozen=True)
class Target:
    """What a request generates with: the base model, a full model copy when ``model`` is a
    ``full`` adapter, and the batched adapters with their strengths."""

    name: str
    base: str
    full: StoredAdapter | None = None
    steering: tuple[tuple[StoredAdapter, float], ...] = ()


def _not_found(reference: str, param: str) -> ApiError:
    return ApiError(
        404,
        f"The model {reference!r} does not exist: use a base model from GET /v1/models "
        "or one of your adapters (id or name@version)",
        param=param,
        code="model_not_found",
    )


def _stored(
    session: Session, settings: Settings, tenant: str, reference: str, param: str
) -> StoredAdapter:
    """An adapter by id or ``name@version``, or a job's checkpoint by its model id
    (``ftjob-…:ckpt-step-N``)."""
    if checkpoints_repo.parse_checkpoint_model_id(reference) is not None:
        stored = _checkpoint(session, tenant, reference, param)
    else:
        try:
            row = adapters_repo.get_adapter(session, reference, tenant)
        except NotFound:
            raise _not_found(reference, param) from None
        stored = StoredAdapter(
            id=row.id,
            reference=reference,
            param=param,
            base_model=row.base_model,
            method=str((row.method or {}).get("type", "")),
            sha256=row.sha256,
            directory=settings.adapters_dir / row.storage_path,
            files=dict(row.files),
        )
    if stored.base_model not in settings.models:
        raise ApiError(
            400,
            f"adapter {reference!r} was trained on {stored.base_model!r}, which this server no "
            f"longer serves (serving {settings.models})",
            param=param,
            code="model_not_found",
        )
    return stored


def _checkpoint(session: Session, tenant: str, reference: str, param: str) -> StoredAdapter:
    try:
        found = checkpoints_repo.resolve_checkpoint_model(session, reference, tenant)
    except NotFound as exc:
        raise ApiError(
            404,
            f"The model {reference!r} does not exist: {exc}",
            param=param,
            code="model_not_found",
        ) from None
    return StoredAdapter(
        id=found.id,
        reference=reference,
        param=param,
        base_model=found.base_model,
        method=found.method,
        sha256=found.sha256,
        directory=found.directory,
        files=dict(found.files),
    )


def resolve_target(
    session: Session,
    settings: Settings,
    tenant: str,
    body: ChatCompletionCreate | CompletionCreate,
) -> Target:
    """The request's target: ``model`` (a base model, an adapter or a full model) and the
    ``steering`` adapters added to it, every one on the same base model."""
    model = body.model
    steering: list[tuple[StoredAdapter, float]] = []
    full = None
    if model in settings.models:
        base = model
    else:
        named = _stored(session, settings, tenant, model, "model")
        base = named.base_model
        if named.whole_model:
            full = named
        else:
            steering.append((named, body.steering_strength))
    for index, entry in enumerate(body.steering or ()):
        param = f"steering.{index}.adapter"
        extra = _stored(session, settings, tenant, entry.adapter, param)
        if extra.whole_model:
            raise ApiError(
                400,
                f"adapter {entry.adapter!r} is a full fine-tuned model, not a steering adapter: "
                "use it as `model`",
                param=param,
            )
        if full is not None:
            raise ApiError(
                400,
                f"`steering` adds adapters to a base model; {model!r} is a full fine-tuned model",
                param=param,
            )
        if extra.base_model != base:
            raise ApiError(
                400,
                f"adapter {entry.adapter!r} was trained on {extra.base_model!r}, not on "
                f"{base!r}: the adapters of one request must share its base model",
                param=param,
            )
        steering.append((extra, entry.strength))
    return Target(model, base, full, tuple(steering))
