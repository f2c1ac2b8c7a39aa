"""File uploads: streamed with a size limit, hashed, validated, stored content-addressed."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.orm import Session

from api.errors import ApiError
from registry import files as files_repo
from registry.models import File
from registry.quotas import QuotaExceeded
from registry.settings import Settings
from steering_core.data_formats import ValidationReport, validate_jsonl

PURPOSES = ("fine-tune",)
CHUNK = 1 << 20


def _spool(
    source: BinaryIO, directory: Path, limit: int, quota: str | None
) -> tuple[Path, int, str]:
    """Copy the upload to a temp file, never holding more than a chunk in memory."""
    digest, size = hashlib.sha256(), 0
    handle = tempfile.NamedTemporaryFile(dir=directory, prefix=".upload-", delete=False)  # noqa: SIM115
    try:
        with handle:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > limit and quota is not None:
                    raise QuotaExceeded(
                        quota,
                        f"quota exceeded: the file is over your {quota} quota of {limit} bytes",
                        400,
                    )
                if size > limit:
                    raise ApiError(
                        413,
                        f"file exceeds the upload limit of {limit} bytes",
                        param="file",
                        code="file_too_large",
                    )
                digest.update(chunk)
                handle.write(chunk)
    except BaseException:
        os.unlink(handle.name)
        raise
    return Path(handle.name), size, digest.hexdigest()


@dataclass(frozen=True)
class StoredUpload:
    """An upload's bytes, stored content-addressed and validated, not yet in the registry."""

    filename: str
    purpose: str
    size: int
    sha256: str
    storage_path: str
    report: ValidationReport


def check_purpose(purpose: str) -> None:
    if purpose not in PURPOSES:
        raise ApiError(
            400,
            f"purpose {purpose!r} is not supported; use one of {list(PURPOSES)}",
            param="purpose",
        )


def store_upload(
    settings: Settings,
    source: BinaryIO,
    filename: str | None,
    purpose: str,
    limit: int,
    quota: str | None,
) -> StoredUpload:
    """Copy, hash and validate an upload (``limit`` bytes at most, ``quota`` naming the tenant
    quota when that is the limit). Blocking, and it holds no database session: validating a
    large file inside a transaction held SQLite's write lock (every other request waited) and a
    PostgreSQL connection for as long."""
    check_purpose(purpose)
    settings.ensure_dirs()
    temp, size, sha = _spool(source, settings.files_dir, limit, quota)
    try:
        report = validate_jsonl(temp)
        target = settings.files_dir / sha[:2] / f"{sha}.jsonl"
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            temp.unlink()
        else:
            os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return StoredUpload(
        filename=Path(filename or "upload.jsonl").name[:512],
        purpose=purpose,
        size=size,
        sha256=sha,
        storage_path=str(target.relative_to(settings.files_dir)),
        report=report,
    )


def record_upload(session: Session, tenant: str, stored: StoredUpload) -> File:
    report = stored.report
    return files_repo.create_file(
        session,
        tenant_id=tenant,
        filename=stored.filename,
        purpose=stored.purpose,
        bytes=stored.size,
        sha256=stored.sha256,
        storage_path=stored.storage_path,
        status="processed" if report.ok else "error",
        status_details=None if report.ok else str(report.error()),
        format=report.format,
        n_examples=report.n_examples,
    )


def file_path(settings: Settings, row: File) -> Path:
    return settings.files_dir / row.storage_path


def delete_file(session: Session, settings: Settings, row: File) -> None:
    shared = files_repo.storage_is_shared(session, row)
    path = file_path(settings, row)
    files_repo.delete_file(session, row)
    session.flush()
    if not shared:
        path.unlink(missing_ok=True)
