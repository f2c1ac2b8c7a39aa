"""Content-addressed storage shared by the API (uploads, deletes) and the worker (result files):
one path rule, one copy per content, one lock per content; and the adapter store's copies.

Real databases (SQLite and PostgreSQL) and real files; concurrent transactions run in threads.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from registry import storage
from registry.db import session_scope
from registry.files import get_file
from registry.models import File
from registry.storage import StoredContent
from tests.db_fixtures import add_file

from .helpers import new_tenant

DATA = b"step,name,value\r\n1,train_loss,2.5\r\n"
SHA = hashlib.sha256(DATA).hexdigest()
HELD = 0.5  # seconds a waiting transaction is seen to wait


@pytest.fixture
def files_dir(tmp_path: Path) -> Path:
    return tmp_path / "files"


def _upload(session: Session, files_dir: Path, data: bytes = DATA, suffix: str = ".csv") -> File:
    """What the API's upload does: a temp file moved into place, then its row."""
    sha = hashlib.sha256(data).hexdigest()
    temp = files_dir.parent / f"upload-{sha[:8]}.tmp"
    temp.write_bytes(data)
    path = storage.content_path(sha, suffix)
    storage.place_content(session, files_dir, temp, path)
    assert not temp.exists()
    return add_file(session, new_tenant(), storage_path=path, sha256=sha, bytes=len(data))


def _result_file(session: Session, files_dir: Path, data: bytes = DATA) -> File:
    """What the worker's result file does: bytes stored, then its row."""
    stored = storage.store_content(session, files_dir, data, ".csv")
    return add_file(session, new_tenant(), storage_path=stored.storage_path, sha256=stored.sha256)


def _stored(files_dir: Path) -> list[Path]:
    return sorted(p for p in files_dir.rglob("*") if p.is_file())


def test_the_path_is_the_content_hash_under_its_first_two_digits() -> None:
    assert storage.content_path(SHA, ".csv") == f"{SHA[:2]}/{SHA}.csv"
    assert storage.content_path(SHA, ".jsonl") == f"{SHA[:2]}/{SHA}.jsonl"


def test_an_upload_and_a_result_file_of_the_same_bytes_share_one_copy(
    db_url: str, files_dir: Path
) -> None:
    with session_scope(db_url) as session:
        upload = _upload(session, files_dir)
    with session_scope(db_url) as session:
        stored = storage.store_content(session, files_dir, DATA, ".csv")
        result = add_file(session, new_tenant(), storage_path=stored.storage_path)
    assert stored == StoredContent(storage.content_path(SHA, ".csv"), SHA, len(DATA))
    assert upload.storage_path == result.storage_path == stored.storage_path
    assert _stored(files_dir) == [files_dir / stored.storage_path]
    assert (files_dir / stored.storage_path).read_bytes() == DATA

    with session_scope(db_url) as session:  # the other row still uses the bytes: kept
        storage.delete_file_and_content(session, files_dir, get_file(session, upload.id))
    assert (files_dir / stored.storage_path).read_bytes() == DATA
    with session_scope(db_url) as session:  # the last one: removed
        storage.delete_file_and_content(session, files_dir, get_file(session, result.id))
    assert _stored(files_dir) == []


def _second_transaction(db_url: str, work: Callable[[Session], object]) -> threading.Event:
    """Run ``work`` in its own transaction, in a thread; the event is set once it committed."""
    committed = threading.Event()

    def run() -> None:
        with session_scope(db_url) as session:
            work(session)
        committed.set()

    threading.Thread(target=run, daemon=True).start()
    return committed


@pytest.mark.parametrize(
    ("first", "second"),
    [(_upload, _result_file), (_result_file, _upload)],
    ids=["upload-then-result", "result-then-upload"],
)
def test_writers_of_the_same_content_take_the_same_lock(
    db_url: str,
    files_dir: Path,
    first: Callable[[Session, Path], File],
    second: Callable[[Session, Path], File],
) -> None:
    with session_scope(db_url) as session:
        first(session, files_dir)  # holds the content lock until this block commits
        committed = _second_transaction(db_url, lambda s: second(s, files_dir))
        assert not committed.wait(HELD), "the second writer did not wait for the lock"
    assert committed.wait(30)
    assert _stored(files_dir) == [files_dir / storage.content_path(SHA, ".csv")]


def test_a_delete_waits_for_a_writer_of_the_same_bytes_and_then_keeps_them(
    db_url: str, files_dir: Path
) -> None:
    """The race the lock exists for: a delete that checked for other rows before a writer's row
    was committed would remove the bytes under that row."""
    with session_scope(db_url) as session:
        old = _upload(session, files_dir)
    with session_scope(db_url) as session:
        new = _result_file(session, files_dir)  # not committed yet: invisible to the delete
        committed = _second_transaction(
            db_url,
            lambda s: storage.delete_file_and_content(s, files_dir, get_file(s, old.id)),
        )
        assert not committed.wait(HELD), "the delete did not wait for the writer's lock"
    assert committed.wait(30)
    with session_scope(db_url) as session:
        path = files_dir / get_file(session, new.id).storage_path
    assert path.read_bytes() == DATA


def test_other_content_is_not_held_up(db_url: str, files_dir: Path) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serialises every writer with its one write lock")
    with session_scope(db_url) as session:
        _upload(session, files_dir)
        committed = _second_transaction(
            db_url, lambda s: _result_file(s, files_dir, b"other bytes")
        )
        assert committed.wait(30), "a writer of other bytes waited for this content's lock"


def test_a_failed_write_leaves_no_temp_file_behind(db_url: str, files_dir: Path) -> None:
    (files_dir / storage.content_path(SHA, ".csv")).mkdir(parents=True)  # in the way
    with session_scope(db_url) as session, pytest.raises(OSError):
        storage.store_content(session, files_dir, DATA, ".csv")
    assert _stored(files_dir) == []


# --- the adapter store ---------------------------------------------------------------------


def test_an_artifact_is_copied_with_a_sha256_per_file(tmp_path: Path) -> None:
    source = tmp_path / "artifact"
    (source / "lora").mkdir(parents=True)
    contents = {
        "steering_config.json": b"{}",
        "adapter_model.safetensors": b"\1" * 100,
        "lora/adapter_model.safetensors": b"\2" * 10,
    }
    for name, content in contents.items():
        (source / name).write_bytes(content)
    target = tmp_path / "store" / "adapter-1"
    target.parent.mkdir()

    stored = storage.store_artifact(source, target)

    digests = {name: hashlib.sha256(c).hexdigest() for name, c in sorted(contents.items())}
    assert stored.files == digests
    assert stored.bytes == 112
    lines = "".join(f"{name}:{digest}\n" for name, digest in digests.items())
    assert stored.sha256 == hashlib.sha256(lines.encode()).hexdigest()
    for name, content in contents.items():
        assert (target / name).read_bytes() == content
    assert sorted(p.name for p in target.parent.iterdir()) == ["adapter-1"]


def test_a_failed_copy_leaves_nothing_in_the_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    with pytest.raises(OSError):
        storage.store_artifact(tmp_path / "no-such-artifact", store / "adapter-1")
    assert list(store.iterdir()) == []
