"""Downloading a checkpoint's adapter artifact: as an adapter's, every file is checked against the
sha256 recorded with its row before any byte leaves."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from fastapi.responses import FileResponse, Response

from api.errors import ApiError
from api.services.adapters import check_stored_files
from registry.checkpoints import CheckpointArtifact


def verified_files(artifact: CheckpointArtifact) -> dict[str, Path]:
    return check_stored_files(artifact.model_id, artifact.directory, artifact.files)


def archive_name(artifact: CheckpointArtifact) -> str:
    return f"{artifact.job_id}-ckpt-step-{artifact.step}"


def archive(artifact: CheckpointArtifact) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, path in sorted(verified_files(artifact).items()):
            tar.add(path, arcname=f"{archive_name(artifact)}/{name}")
    return buffer.getvalue()


def content_response(artifact: CheckpointArtifact, file: str | None) -> Response:
    """The artifact as one ``.tar.gz`` (``X-Content-SHA256``: the artifact's sha256, as an
    adapter's), or one file of it with ``file=NAME`` (that file's sha256)."""
    if file is None:
        return Response(
            archive(artifact),
            media_type="application/gzip",
            headers={
                "Content-Disposition": f'attachment; filename="{archive_name(artifact)}.tar.gz"',
                "X-Content-SHA256": artifact.sha256,
            },
        )
    if file not in artifact.files:
        raise ApiError(
            404,
            f"checkpoint {artifact.model_id} has no file {file!r}; files: {sorted(artifact.files)}",
            param="file",
            code="not_found",
        )
    path = verified_files(artifact)[file]
    return FileResponse(
        path, filename=file.replace("/", "_"), headers={"X-Content-SHA256": artifact.files[file]}
    )
