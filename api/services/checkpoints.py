"""Downloading a checkpoint's adapter artifact: as an adapter's, every file is checked against the
sha256 recorded with its row before any byte leaves."""

from __future__ import annotations

from fastapi.responses import Response

from api.services.adapters import StoredFiles
from registry.checkpoints import CheckpointArtifact


def stored_checkpoint(artifact: CheckpointArtifact) -> StoredFiles:
    return StoredFiles(
        what=f"checkpoint {artifact.model_id}",
        owner=artifact.model_id,
        root=artifact.directory,
        files=artifact.files,
        sha256=artifact.sha256,
        stem=f"{artifact.job_id}-ckpt-step-{artifact.step}",
    )


def content_response(artifact: CheckpointArtifact, file: str | None) -> Response:
    """The checkpoint's adapter artifact as one ``.tar.gz`` (``X-Content-SHA256``: the
    artifact's sha256, as an adapter's), or one file of it with ``file=NAME``."""
    return stored_checkpoint(artifact).response(file)
