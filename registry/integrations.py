"""Experiment trackers a job logs to: its ``integrations`` (OpenAI's shape), what each needs
installed, and which MLflow tracking URIs this server lets a job name.

``{"type": "wandb", "wandb": {"project": ..., "name": ..., "entity": ..., "tags": [...]}}``
(OpenAI's block) or ``{"type": "mlflow", "mlflow": {"tracking_uri": ..., "experiment_name":
..., "run_name": ..., "tags": {...}}}``. The API checks a job's blocks before storing it (the
package is installed, the tracking URI is allowed); the worker logs to them (``worker.trackers``)
and checks the URI again with its own settings. Both read the blocks with these models, so API
and worker agree on them without importing each other.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, unquote, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.models import Metric

TrackerType = Literal["wandb", "mlflow"]
TRACKER_TYPES: tuple[str, ...] = ("wandb", "mlflow")


def _plain_text(value: str) -> str:
    """What the registry and the trackers can store: no NUL, no lone surrogate."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"holds a lone surrogate at position {exc.start}") from None
    return value


Text = Annotated[str, AfterValidator(_plain_text)]
Name = Annotated[Text, Field(min_length=1, max_length=128)]


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WandbConfig(_Block):
    """OpenAI's W&B block. The run's id is the job's id, so a resumed job goes on in the same
    run; its display name is ``name``, else the job's id."""

    project: Name = Field(description="The W&B project the run is logged to")
    name: Name | None = Field(default=None, description="The run's display name (default: job id)")
    entity: Name | None = Field(
        default=None, description="The team or user (default: the API key's default entity)"
    )
    tags: list[Annotated[Text, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=64
    )


class MlflowConfig(_Block):
    """An MLflow run: params (the job's settings), metrics per step, tags, its final status."""

    tracking_uri: Text | None = Field(
        default=None,
        max_length=2048,
        description="http(s)://host[:port] of an MLflow server, or file:///path under the "
        "server's STEER_MLFLOW_FILE_ROOT (default: that directory itself)",
    )
    experiment_name: Name | None = Field(
        default=None, description="Created when missing (default: MLflow's 'Default')"
    )
    run_name: Name | None = Field(default=None, description="Default: the job's id")
    tags: dict[Annotated[Text, Field(min_length=1, max_length=250)], Text] | None = Field(
        default=None, max_length=64, description="Added to the run's own (steer.job_id, ...)"
    )


class IntegrationBlock(_Block):
    """One tracker: ``type`` names it, and the block under its name holds its settings."""

    type: TrackerType
    wandb: WandbConfig | None = None
    mlflow: MlflowConfig | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in TRACKER_TYPES:
            known = " and ".join(repr(t) for t in TRACKER_TYPES)
            raise ValueError(f"unknown integration type {value!r}: this server logs to {known}")
        return value

    @model_validator(mode="after")
    def _block_of_its_type(self) -> IntegrationBlock:
        # Each message starts with the block's name: the API's error mapping names that field.
        for other in TRACKER_TYPES:
            if other != self.type and getattr(self, other) is not None:
                raise ValueError(f"{other}: given, but this integration's type is {self.type!r}")
        if getattr(self, self.type) is None:
            example = '{"project": "..."}' if self.type == "wandb" else '{"tracking_uri": "..."}'
            raise ValueError(
                f"{self.type}: the {self.type!r} integration needs its block, "
                f'"{self.type}": {example}'
            )
        return self

    @property
    def config(self) -> WandbConfig | MlflowConfig:
        block = getattr(self, self.type)
        assert block is not None  # _block_of_its_type
        return block


def stored_integrations(blocks: list[IntegrationBlock]) -> list[dict[str, Any]]:
    """The blocks as the job stores and echoes them: as the request gave them."""
    return [block.model_dump(mode="json", exclude_unset=True) for block in blocks]


def integrations_of(stored: list[Any] | None) -> list[IntegrationBlock]:
    return [IntegrationBlock.model_validate(item) for item in stored or []]


# -- what each tracker needs installed --------------------------------------------------------


@dataclass(frozen=True)
class TrackerPackage:
    """The module a tracker imports, and the extra of this project that installs it."""

    module: str
    extra: str


TRACKER_PACKAGES: dict[str, TrackerPackage] = {
    "wandb": TrackerPackage(module="wandb", extra="wandb"),
    "mlflow": TrackerPackage(module="mlflow", extra="mlflow"),
}


class IntegrationRefused(ValueError):
    """A job's integration this server cannot log to; ``param`` is the field to change."""

    def __init__(self, message: str, param: str, code: str = "invalid_value"):
        super().__init__(message)
        self.param, self.code = param, code


def package_installed(module: str) -> bool:
    """Whether ``module`` can be imported here (found, not imported: importing W&B or MLflow
    costs seconds; a module hidden as ``sys.modules[name] = None`` counts as missing)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_package(
    tracker: str, param: str, packages: dict[str, TrackerPackage] = TRACKER_PACKAGES
) -> None:
    package = packages[tracker]
    if not package_installed(package.module):
        raise IntegrationRefused(
            f"integration {tracker!r} cannot be used: its package {package.module!r} is not "
            "installed on this server; install the project's extra "
            f"'steering-service[{package.extra}]' on the API and the workers",
            param=param,
            code="integration_not_installed",
        )


# -- MLflow tracking URIs this server allows -----------------------------------------------------

WEB_SCHEMES = ("http", "https")


def allowed_tracking_uri(
    uri: str | None, *, file_root: Path, allowed_hosts: list[str] | None, param: str
) -> str:
    """The tracking URI to log to, or :class:`IntegrationRefused`.

    A local store must be a directory under ``file_root`` (the operator's; a job must not make
    the server write anywhere else): ``file:`` URIs and plain paths, resolved (``..`` and
    symlinks followed) before they are compared; a relative ``file:`` path is under the root.
    None is the root itself. A server is ``http(s)://host``, from ``allowed_hosts`` (``host`` or
    ``host:port``) when the operator set them, without credentials in the URI (they would be
    stored and shown with the job). Nothing else: ``sqlite:``, ``postgresql:`` or
    ``databricks`` URIs would reach databases or credentials of the server's own.
    """
    root = file_root.resolve()
    if uri is None:
        return root.as_uri()
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("", "file"):
        return _allowed_file_uri(uri, parts, root=root, param=param)
    if scheme in WEB_SCHEMES:
        return _allowed_web_uri(uri, parts, allowed_hosts=allowed_hosts, param=param)
    raise IntegrationRefused(
        f"{param} {uri!r}: scheme {parts.scheme!r} is not allowed; use http(s)://host of an "
        f"MLflow server, or file:///path under {root}",
        param=param,
    )


def _allowed_file_uri(uri: str, parts: SplitResult, *, root: Path, param: str) -> str:
    """A ``file:`` URI or plain path: the resolved directory's URI, if it is under ``root``."""
    scheme = parts.scheme.lower()
    if parts.netloc not in ("", "localhost"):
        raise IntegrationRefused(
            f"{param} {uri!r}: a file URI names a local directory (file:///path), "
            f"not host {parts.netloc!r}",
            param=param,
        )
    path = Path(unquote(parts.path))
    if not scheme and not path.is_absolute():  # MLflow reads "databricks" as Databricks
        raise IntegrationRefused(
            f"{param} {uri!r}: not a URI; use http(s)://host of an MLflow server, or "
            f"file:///path under {root}",
            param=param,
        )
    resolved = (path if path.is_absolute() else root / path).resolve()
    if not resolved.is_relative_to(root):
        raise IntegrationRefused(
            f"{param} {uri!r}: a local MLflow store must be under {root} on this server "
            "(STEER_MLFLOW_FILE_ROOT), e.g. file://"
            f"{root / 'my-experiments'}; or name an http(s) MLflow server",
            param=param,
        )
    return resolved.as_uri()


def _allowed_web_uri(
    uri: str, parts: SplitResult, *, allowed_hosts: list[str] | None, param: str
) -> str:
    """An ``http(s)://host`` URI, as given, if it has no credentials and its host is allowed."""
    host = (parts.hostname or "").lower()
    if not host:
        raise IntegrationRefused(f"{param} {uri!r}: no host", param=param)
    if parts.username is not None or parts.password is not None:
        raise IntegrationRefused(
            f"{param}: credentials in the URI would be stored and shown with the job; the "
            "workers' MLflow credentials come from their environment",
            param=param,
        )
    try:
        port = parts.port
    except ValueError:
        raise IntegrationRefused(f"{param} {uri!r}: not a valid port", param=param) from None
    if allowed_hosts is not None:
        allowed = {h.lower() for h in allowed_hosts}
        if host not in allowed and f"{host}:{port}" not in allowed:
            raise IntegrationRefused(
                f"{param} {uri!r}: host {host!r} is not one this server logs to "
                f"(STEER_MLFLOW_ALLOWED_HOSTS: {', '.join(sorted(allowed)) or 'none'})",
                param=param,
            )
    return uri


# -- what a tracker reads of a running job --------------------------------------------------------


def last_metric_id(session: Session, job_id: str) -> int:
    """The newest metric row of the job (0: none): a tracker logs the rows after it."""
    return int(session.scalar(select(func.max(Metric.id)).where(Metric.job_id == job_id)) or 0)


def metrics_after(session: Session, job_id: str, after_id: int) -> list[Metric]:
    """The job's metric rows recorded after row ``after_id``, in the order they were recorded
    (the order of the engine's events: a step's training metrics, then its validation's)."""
    return list(
        session.scalars(
            select(Metric).where(Metric.job_id == job_id, Metric.id > after_id).order_by(Metric.id)
        )
    )
