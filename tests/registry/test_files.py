"""Files: tenant-scoped rows; a file cannot be deleted while an unfinished job needs it."""

from __future__ import annotations

import pytest

from registry.db import session_scope
from registry.errors import Conflict, NotFound
from registry.files import delete_file, get_file, list_files, storage_is_shared
from registry.jobs import claim_job, get_job, set_status
from registry.states import JobStatus
from tests.db_fixtures import add_file, add_job

from .helpers import new_tenant


def test_a_file_without_jobs_can_be_deleted(db_url: str) -> None:
    tenant = new_tenant()
    with session_scope(db_url) as session:
        file_id = add_file(session, tenant).id
    assert file_id.startswith("file-")
    with session_scope(db_url) as session:
        delete_file(session, get_file(session, file_id, tenant))
    with session_scope(db_url) as session, pytest.raises(NotFound):
        get_file(session, file_id)


@pytest.mark.parametrize("role", ["training_file", "validation_file"])
@pytest.mark.parametrize("status", ["validating_files", "queued", "running"])
def test_delete_is_refused_while_an_unfinished_job_uses_the_file(
    db_url: str, role: str, status: str
) -> None:
    tenant = new_tenant()
    with session_scope(db_url) as session:
        used = add_file(session, tenant)
        other = add_file(session, tenant)
        if role == "training_file":
            job = add_job(session, tenant, used.id, validation_file=other.id)
        else:
            job = add_job(session, tenant, other.id, validation_file=used.id)
        if status == "validating_files":
            job.status = status  # nothing in registry/ creates one in this state yet
        elif status == "running":
            assert claim_job(session, job.id, "worker-a", 60.0) == 1
        file_id, job_id = used.id, job.id
    with session_scope(db_url) as session, pytest.raises(Conflict, match=job_id):
        delete_file(session, get_file(session, file_id))
    with session_scope(db_url) as session:
        assert get_file(session, file_id).id == file_id


def test_delete_is_allowed_once_the_job_finished(db_url: str) -> None:
    tenant = new_tenant()
    with session_scope(db_url) as session:
        file_id = add_file(session, tenant).id
        job_id = add_job(session, tenant, file_id).id
    with session_scope(db_url) as session, pytest.raises(Conflict):
        delete_file(session, get_file(session, file_id))
    with session_scope(db_url) as session:
        set_status(session, get_job(session, job_id), JobStatus.CANCELLED)
    with session_scope(db_url) as session:
        delete_file(session, get_file(session, file_id))  # the check passes...
    with session_scope(db_url) as session, pytest.raises(NotFound):
        get_file(session, file_id)


def test_get_file_is_scoped_to_its_tenant(db_url: str) -> None:
    owner, stranger = new_tenant(), new_tenant()
    with session_scope(db_url) as session:
        file_id = add_file(session, owner).id
    with session_scope(db_url) as session:
        assert get_file(session, file_id, owner).id == file_id
        with pytest.raises(NotFound):
            get_file(session, file_id, stranger)
        with pytest.raises(NotFound):
            get_file(session, "file-doesnotexist")


def test_list_files_pages_newest_first_with_a_purpose_filter(db_url: str) -> None:
    tenant = new_tenant()
    purposes = ["fine-tune", "eval", "fine-tune", "fine-tune", "eval"]
    with session_scope(db_url) as session:
        created = [add_file(session, tenant, purpose=purpose).id for purpose in purposes]
        add_file(session, new_tenant())
    with session_scope(db_url) as session:
        first, has_more = list_files(session, tenant, purpose=None, after=None, limit=3)
        assert [f.id for f in first] == created[::-1][:3] and has_more is True
        rest, has_more = list_files(session, tenant, purpose=None, after=first[-1].id, limit=3)
        assert [f.id for f in rest] == created[::-1][3:] and has_more is False
        tuning, has_more = list_files(session, tenant, purpose="fine-tune", after=None, limit=9)
        expected = [i for i, p in zip(created, purposes, strict=True) if p == "fine-tune"]
        assert [f.id for f in tuning] == expected[::-1] and has_more is False


def test_storage_is_shared_between_rows_with_the_same_bytes(db_url: str) -> None:
    tenant = new_tenant()
    with session_scope(db_url) as session:
        first = add_file(session, tenant, storage_path="files/aa")
        second = add_file(session, new_tenant(), storage_path="files/aa")
        alone = add_file(session, tenant, storage_path="files/bb")
        assert storage_is_shared(session, first) and storage_is_shared(session, second)
        assert not storage_is_shared(session, alone)
