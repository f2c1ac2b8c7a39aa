"""Serving adapter artifacts: verified against their stored sha256 before any byte leaves."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

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


def archive(settings: Settings, row: Adapter) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, path in sorted(verified_files(settings, row).items()):
            tar.add(path, arcname=f"{row.name}-v{row.version}/{name}")
    return buffer.getvalue()
