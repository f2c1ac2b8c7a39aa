"""Bytes on disk beside the registry's rows: content-addressed files and the adapter store.

Uploads (the API) and result files (the worker) share one rule: the bytes live at
``files/<ab>/<sha256><suffix>`` under the data directory, one copy for every row of the same
content. Putting a copy in place and removing it both happen under a lock on that content,
held until the transaction that registers (or deletes) the row ends: otherwise a delete that
found no other row using the bytes could remove them just after another writer of the same bytes
had registered its row, which would then point at nothing.

Trained adapters go to the adapter store (``adapters/<adapter id>/``) with a sha256 per file,
through a staging directory, so the store never holds a half-copied adapter.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from registry import files as files_repo
from registry.db import lock_until_commit
from registry.models import File


def content_path(sha256: str, suffix: str) -> str:
    """Where bytes of this sha256 live, relative to the files directory."""
    return f"{sha256[:2]}/{sha256}{suffix}"


def lock_content(session: Session, storage_path: str) -> None:
    """Writers and deleters of the same content, one transaction at a time."""
    lock_until_commit(session, f"content:{storage_path}")


def place_content(session: Session, files_dir: Path, source: Path, storage_path: str) -> None:
    """Move ``source`` (a temp file on the same file system) to ``storage_path``, under the
    content lock. If the bytes are there already they are the same bytes: replacing them also
    restores a copy a delete removed."""
    lock_content(session, storage_path)
    target = files_dir / storage_path
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


@dataclass(frozen=True)
class StoredContent:
    storage_path: str
    sha256: str
    bytes: int


def store_content(session: Session, files_dir: Path, data: bytes, suffix: str) -> StoredContent:
    """Store ``data`` content-addressed (written to a temp file, then moved into place under the
    content lock, so a reader never sees a partial file); the caller registers the row in the
    same transaction."""
    sha = hashlib.sha256(data).hexdigest()
    storage_path = content_path(sha, suffix)
    directory = (files_dir / storage_path).parent
    directory.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=directory, prefix=".store-", delete=False)  # noqa: SIM115
    try:
        with handle:
            handle.write(data)
        place_content(session, files_dir, Path(handle.name), storage_path)
    finally:
        Path(handle.name).unlink(missing_ok=True)  # gone once placed; left only on an error
    return StoredContent(storage_path, sha, len(data))


def delete_file_and_content(session: Session, files_dir: Path, row: File) -> None:
    """Delete the row, and its bytes when no other row uses them, under the content lock."""
    lock_content(session, row.storage_path)
    shared = files_repo.storage_is_shared(session, row)
    files_repo.delete_file(session, row)
    session.flush()
    if not shared:
        (files_dir / row.storage_path).unlink(missing_ok=True)


@dataclass(frozen=True)
class StoredArtifact:
    files: dict[str, str]  # relative path -> sha256
    sha256: str  # over the sorted "path:sha256" lines
    bytes: int


def artifact_digest(directory: Path) -> StoredArtifact:
    """The sha256 of each file under ``directory`` (by relative path), and the sha256 over them:
    what the adapter store records, and what a checkpoint's artifact is recorded with."""
    paths = [p for p in sorted(directory.rglob("*")) if p.is_file()]
    files = {str(p.relative_to(directory)): _sha256_file(p) for p in paths}
    size = sum(p.stat().st_size for p in paths)
    overall = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in files.items()).encode()).hexdigest()
    return StoredArtifact(files, overall, size)


def store_artifact(source: Path, target: Path) -> StoredArtifact:
    """Copy the artifact directory ``source`` to ``target`` in the adapter store (via a staging
    name, renamed when complete). On any error nothing is left at ``target``."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(source, staging)
        digest = artifact_digest(staging)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return digest


def _sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
