"""Adapters: versions count up per (tenant, name); references by id, ``name@version``, ``name``."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import event

from registry.adapters import create_adapter, get_adapter, list_adapters
from registry.db import session_factory, session_scope
from registry.errors import NotFound
from registry.models import Adapter
from tests.db_fixtures import add_file, add_job

from .helpers import new_tenant


def _adapter(url: str, tenant_id: str, name: str, **overrides: Any) -> Adapter:
    fields: dict[str, Any] = {
        "base_model": "tiny-llama",
        "method": {"type": "post_block"},
        "storage_path": f"adapters/{name}",
        "sha256": "1" * 64,
        "bytes": 123,
        "files": {"adapter_model.safetensors": "2" * 64},
    }
    fields.update(overrides)
    with session_scope(url) as session:
        return create_adapter(session, tenant_id=tenant_id, name=name, **fields)


def test_versions_count_up_per_tenant_and_name(db_url: str) -> None:
    tenant_a, tenant_b = new_tenant(), new_tenant()
    versions = [_adapter(db_url, tenant_a, "sentiment").version for _ in range(3)]
    assert versions == [1, 2, 3]
    assert _adapter(db_url, tenant_a, "toxicity").version == 1
    assert _adapter(db_url, tenant_b, "sentiment").version == 1


def test_a_deleted_version_is_never_given_again(db_url: str) -> None:
    """Deleting name@2 (the latest) and training again gives name@3: a pinned name@2 never
    points at other weights."""
    tenant = new_tenant()
    first, second = (_adapter(db_url, tenant, "pinned") for _ in range(2))
    with session_scope(db_url) as session:
        session.delete(get_adapter(session, second.id, tenant))
    assert _adapter(db_url, tenant, "pinned").version == 3
    with session_scope(db_url) as session:
        session.delete(get_adapter(session, first.id, tenant))
        session.delete(get_adapter(session, "pinned@3", tenant))
    assert _adapter(db_url, tenant, "pinned").version == 4


def test_an_adapter_keeps_its_fields_and_job(db_url: str) -> None:
    tenant = new_tenant()
    with session_scope(db_url) as session:
        job_id = add_job(session, tenant, add_file(session, tenant).id).id
    created = _adapter(
        db_url, tenant, "sentiment", job_id=job_id, trainable_parameters=4096, metrics={"acc": 1}
    )
    assert created.id.startswith("adapter-")
    with session_scope(db_url) as session:
        adapter = get_adapter(session, created.id, tenant)
        assert (adapter.name, adapter.version, adapter.job_id) == ("sentiment", 1, job_id)
        assert adapter.files == {"adapter_model.safetensors": "2" * 64}
        assert (adapter.trainable_parameters, adapter.metrics) == (4096, {"acc": 1})


def test_get_adapter_by_id_name_at_version_and_name(db_url: str) -> None:
    tenant = new_tenant()
    v1, v2, v3 = (_adapter(db_url, tenant, "sentiment") for _ in range(3))
    with session_scope(db_url) as session:
        assert get_adapter(session, v2.id).id == v2.id
        assert get_adapter(session, v2.id, tenant).id == v2.id
        assert get_adapter(session, "sentiment@1", tenant).id == v1.id
        assert get_adapter(session, "sentiment@2", tenant).id == v2.id
        assert get_adapter(session, "sentiment", tenant).id == v3.id
        assert get_adapter(session, "sentiment@3").id == v3.id


@pytest.mark.parametrize(
    "reference",
    ["sentiment@4", "sentiment@0", "sentiment@-1", "sentiment@v1", "sentiment@1.0", "other"],
)
def test_an_unknown_reference_is_not_found(db_url: str, reference: str) -> None:
    tenant = new_tenant()
    _adapter(db_url, tenant, "sentiment")
    with session_scope(db_url) as session:
        with pytest.raises(NotFound) as caught:
            get_adapter(session, reference, tenant)
        assert caught.value.identifier == reference
        with pytest.raises(NotFound):
            get_adapter(session, "adapter-doesnotexist", tenant)


def test_a_non_ascii_digit_version_is_not_found(db_url: str) -> None:
    tenant = new_tenant()
    _adapter(db_url, tenant, "sentiment")
    with session_scope(db_url) as session, pytest.raises(NotFound):
        get_adapter(session, "sentiment@²", tenant)


def test_another_tenant_cannot_see_an_adapter(db_url: str) -> None:
    owner, stranger = new_tenant(), new_tenant()
    adapter = _adapter(db_url, owner, "sentiment")
    with session_scope(db_url) as session:
        for reference in (adapter.id, "sentiment", "sentiment@1"):
            with pytest.raises(NotFound):
                get_adapter(session, reference, stranger)
        assert list_adapters(session, stranger, after=None, limit=10) == ([], False)
    theirs = _adapter(db_url, stranger, "sentiment")
    with session_scope(db_url) as session:
        assert get_adapter(session, "sentiment", stranger).id == theirs.id
        assert get_adapter(session, "sentiment", owner).id == adapter.id


def test_list_adapters_pages_newest_first(db_url: str) -> None:
    tenant = new_tenant()
    created = [_adapter(db_url, tenant, name).id for name in ("a", "b", "a", "c", "a")]
    _adapter(db_url, new_tenant(), "a")
    with session_scope(db_url) as session:
        first, has_more = list_adapters(session, tenant, after=None, limit=3)
        assert [a.id for a in first] == created[::-1][:3] and has_more is True
        rest, has_more = list_adapters(session, tenant, after=first[-1].id, limit=3)
        assert [a.id for a in rest] == created[::-1][3:] and has_more is False


def test_concurrent_creations_of_one_name_get_distinct_versions(db_url: str) -> None:
    tenant = new_tenant()
    fields: dict[str, Any] = {
        "base_model": "tiny-llama",
        "method": {"type": "post_block"},
        "storage_path": "adapters/x",
        "sha256": "1" * 64,
        "bytes": 1,
        "files": {},
    }
    inserting = threading.Event()
    outcome: list[BaseException | int] = []

    def second_writer() -> None:
        session = session_factory(db_url)()
        try:
            connection = session.connection()

            @event.listens_for(connection, "before_cursor_execute")
            def _signal(*args: Any) -> None:
                if args[2].lstrip().upper().startswith("INSERT INTO ADAPTERS"):
                    inserting.set()

            adapter = create_adapter(session, tenant_id=tenant, name="shared", **fields)
            session.commit()
            outcome.append(adapter.version)
        except BaseException as error:
            outcome.append(error)
            session.rollback()
        finally:
            inserting.set()
            session.close()

    first = session_factory(db_url)()
    try:
        assert create_adapter(first, tenant_id=tenant, name="shared", **fields).version == 1
        thread = threading.Thread(target=second_writer)
        thread.start()
        if db_url.startswith("sqlite"):
            # SQLite takes the write lock at BEGIN (registry/db.py): the second writer waits
            # there, before reading max(version), so it cannot pick a stale version at all.
            assert not inserting.wait(timeout=1.0)
        else:
            # The second writer has computed its version; it waits on our row lock until we
            # commit, then hits the unique constraint and must retry with the next version.
            assert inserting.wait(timeout=30)
        first.commit()
        thread.join(timeout=60)
    finally:
        first.close()
    (result,) = outcome
    if isinstance(result, BaseException):
        raise result
    assert result == 2
