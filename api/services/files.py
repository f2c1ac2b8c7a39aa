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
from registry import storage
from registry.models import File
from registry.quotas import QuotaExceeded
from registry.settings import Settings
from steering_core.data.formats import ValidationReport, validate_jsonl
from steering_core.data.text_checks import lone_surrogate

PURPOSES = ("fine-tune",)
CHUNK = 1 << 20
UPLOAD_SUFFIX = ".jsonl"


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
    """An upload copied to a temp file, hashed and validated; not yet stored or registered."""

    temp: Path
    filename: str
    purpose: str
    size: int
    sha256: str
    report: ValidationReport

    @property
    def storage_path(self) -> str:
        """Content-addressed: uploads of the same bytes share one file."""
        return storage.content_path(self.sha256, UPLOAD_SUFFIX)

    def discard(self) -> None:
        """Remove the temp file, if :func:`record_upload` has not moved it into place."""
        self.temp.unlink(missing_ok=True)


def check_purpose(purpose: str) -> None:
    if purpose not in PURPOSES:
        raise ApiError(
            400,
            f"purpose {purpose!r} is not supported; use one of {list(PURPOSES)}",
            param="purpose",
        )


def upload_filename(filename: str | None) -> str:
    """The name an upload is stored under (its base name, at most 512 characters); refused,
    before any byte is copied, when it holds a NUL (PostgreSQL text cannot) or a lone
    surrogate."""
    name = Path(filename or "upload.jsonl").name[:512]
    problem = lone_surrogate(name)
    if "\x00" in name:
        problem = "must not contain NUL (\\u0000) characters"
    if problem is not None:
        raise ApiError(400, f"the file name {name!r}: {problem}", param="file")
    return name


def store_upload(
    settings: Settings,
    source: BinaryIO,
    filename: str | None,
    purpose: str,
    limit: int,
    quota: str | None,
) -> StoredUpload:
    """Copy, hash and validate an upload (``limit`` bytes at most, ``quota`` naming the tenant
    quota when that is the limit) whose ``purpose`` the caller has checked; the caller records
    it, then discards the temp file. Blocking, and it holds no database session: validating a
    large file inside a transaction held SQLite's write lock (every other request waited) and a
    PostgreSQL connection for as long."""
    name = upload_filename(filename)
    settings.ensure_dirs()
    temp, size, sha = _spool(source, settings.files_dir, limit, quota)
    try:
        report = validate_jsonl(temp)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return StoredUpload(
        temp=temp,
        filename=name,
        purpose=purpose,
        size=size,
        sha256=sha,
        report=report,
    )


def record_upload(session: Session, settings: Settings, tenant: str, stored: StoredUpload) -> File:
    """Add the row, then move the bytes into place under the content lock (``registry.storage``:
    a delete of the same bytes cannot remove them between the two). The row first: a row the
    database refuses leaves no bytes behind that no row points at."""
    report = stored.report
    row = files_repo.create_file(
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
    storage.place_content(session, settings.files_dir, stored.temp, stored.storage_path)
    return row


def file_path(settings: Settings, row: File) -> Path:
    return settings.files_dir / row.storage_path


def stored_content(settings: Settings, row: File) -> Path:
    """The file's bytes on disk, checked to exist with the size recorded at upload (hashing
    each download of a large file would cost more than serving it)."""
    path = file_path(settings, row)
    if not path.is_file() or path.stat().st_size != row.bytes:
        raise ApiError(
            500,
            f"stored content of {row.id} is missing or corrupted; it will not be served",
            type="server_error",
            code="file_corrupted",
        )
    return path


def delete_file(session: Session, settings: Settings, row: File) -> None:
    storage.delete_file_and_content(session, settings.files_dir, row)
