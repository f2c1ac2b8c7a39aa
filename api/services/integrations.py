"""A job's experiment trackers, checked before it is stored: each type at most once, its
package installed here, an MLflow tracking URI this server allows (``registry.integrations``
holds the rules, which the worker applies again)."""

from __future__ import annotations

from typing import Any

from api.errors import ApiError
from registry.integrations import (
    TRACKER_PACKAGES,
    IntegrationBlock,
    IntegrationRefused,
    MlflowConfig,
    TrackerPackage,
    allowed_tracking_uri,
    check_package,
    stored_integrations,
)
from registry.settings import Settings


def checked_integrations(
    settings: Settings,
    blocks: list[IntegrationBlock] | None,
    packages: dict[str, TrackerPackage] = TRACKER_PACKAGES,
) -> list[dict[str, Any]]:
    """The blocks as the job stores them, or a 400 naming the integration's field."""
    seen: set[str] = set()
    for index, block in enumerate(blocks or []):
        where = f"integrations.{index}"
        try:
            if block.type in seen:
                raise IntegrationRefused(
                    f"{where}.type: a second {block.type!r} integration; a job logs to each "
                    "tracker at most once",
                    param=f"{where}.type",
                )
            seen.add(block.type)
            check_package(block.type, f"{where}.type", packages)
            if isinstance(block.config, MlflowConfig):
                allowed_tracking_uri(
                    block.config.tracking_uri,
                    file_root=settings.resolved_mlflow_file_root,
                    allowed_hosts=settings.mlflow_allowed_hosts,
                    param=f"{where}.mlflow.tracking_uri",
                )
        except IntegrationRefused as exc:
            raise ApiError(400, str(exc), param=exc.param, code=exc.code) from exc
    return stored_integrations(blocks or [])
