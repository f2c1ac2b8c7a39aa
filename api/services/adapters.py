"""Serving adapter artifacts: verified against their stored sha256 before any byte leaves."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from fastapi.responses import FileResponse, Response

from api.errors import ApiError
from registry.models import Adapter
from registry.settings import Settings
from steering_core.hashing import sha256_file


def adapter_dir(settings: Settings, row: Adapter) -> Path:
    return settings.adapters_dir / row.storage_path


def check_stored_files(adapter_id: str, root: Path, files: dict[str, str]) -> dict[str, Path]:
    """Each stored file of an adapter, checked against its recorded sha256."""
    paths = {}
    for name, expected in files.items():
        path = root / name
        if not path.is_file() or sha256_file(path) != expected:
            raise ApiError(
                500,
                f"stored artifact of {adapter_id} is missing or corrupted ({name}); "
                "it will not be served",
                type="server_error",
                code="artifact_corrupted",
            )
        paths[name] = path
    return paths


def verified_files(settings: Settings, row: Adapter) -> dict[str, Path]:
    return check_stored_files(row.id, adapter_dir(settings, row), row.files)


@dataclass(frozen=True)
class StoredFiles:
    """A stored artifact as a download serves it: an adapter's or a checkpoint's."""

    what: str  # how errors name it: "adapter adapter-…", "checkpoint ftjob-…:ckpt-step-50"
    owner: str  # the id the integrity error names
    root: Path
    files: dict[str, str]  # relative path -> sha256
    sha256: str  # of the whole artifact
    stem: str  # the archive's file name and top folder

    def verified(self) -> dict[str, Path]:
        return check_stored_files(self.owner, self.root, self.files)

    def archive(self) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name, path in sorted(self.verified().items()):
                tar.add(path, arcname=f"{self.stem}/{name}")
        return buffer.getvalue()

    def response(self, file: str | None) -> Response:
        """The artifact as one ``.tar.gz`` (``X-Content-SHA256``: the artifact's sha256), or one
        file of it with ``file=NAME`` (that file's sha256); every file checked first."""
        if file is None:
            return Response(
                self.archive(),
                media_type="application/gzip",
                headers={
                    "Content-Disposition": f'attachment; filename="{self.stem}.tar.gz"',
                    "X-Content-SHA256": self.sha256,
                },
            )
        if file not in self.files:
            raise ApiError(
                404,
                f"{self.what} has no file {file!r}; files: {sorted(self.files)}",
                param="file",
                code="not_found",
            )
        return FileResponse(
            self.verified()[file],
            filename=file.replace("/", "_"),
            headers={"X-Content-SHA256": self.files[file]},
        )


def stored_adapter(settings: Settings, row: Adapter) -> StoredFiles:
    return StoredFiles(
        what=f"adapter {row.id}",
        owner=row.id,
        root=adapter_dir(settings, row),
        files=row.files,
        sha256=row.sha256,
        stem=f"{row.name}-v{row.version}",
    )
