"""Idempotency-Key on POST /v1/files and POST /v1/fine_tuning/jobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from registry.db import session_scope
from registry.models import IdempotencyKey
from tests.api.helpers import FILES, JOBS, VALID_JSONL, Api, assert_error
from worker.reconciler import reconcile_once


def _upload(api: Api, key: str | None, content: bytes = VALID_JSONL):
    headers = {"Idempotency-Key": key} if key else {}
    return api.client.post(
        FILES,
        data={"purpose": "fine-tune"},
        files={"file": ("train.jsonl", content)},
        headers=headers,
    )


def test_a_retried_upload_returns_the_first_file(api: Api) -> None:
    first = _upload(api, "upload-1")
    again = _upload(api, "upload-1")
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert [f["id"] for f in api.get_json(FILES)["data"]] == [first.json()["id"]]
    other = _upload(api, "upload-1", VALID_JSONL + VALID_JSONL)
    assert_error(other, 409, param="Idempotency-Key", code="idempotency_key_reused")
    assert _upload(api, None).json()["id"] != first.json()["id"]


def test_a_retried_job_creation_returns_the_first_job(api: Api) -> None:
    file_id = api.upload_ok()["id"]
    body = {"model": "tiny-llama", "training_file": file_id}
    first = api.client.post(JOBS, json=body, headers={"Idempotency-Key": "job-1"})
    again = api.client.post(JOBS, json=body, headers={"Idempotency-Key": "job-1"})
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert len(api.get_json(JOBS)["data"]) == 1
    changed = api.client.post(JOBS, json={**body, "seed": 7}, headers={"Idempotency-Key": "job-1"})
    assert_error(changed, 409, param="Idempotency-Key")
    # a rejected request stores nothing under its key: the key stays usable
    bad = api.client.post(
        JOBS, json={"model": "nope", "training_file": file_id}, headers={"Idempotency-Key": "job-2"}
    )
    assert_error(bad, 400, param="model")
    ok = api.client.post(JOBS, json=body, headers={"Idempotency-Key": "job-2"})
    assert ok.status_code == 200 and ok.json()["id"] != first.json()["id"]


def test_keys_are_validated(api: Api) -> None:
    assert_error(_upload(api, "k" * 300), 400, param="Idempotency-Key")


def _age_keys(api: Api, hours: float) -> None:
    with session_scope(api.settings.resolved_database_url) as session:
        for row in session.scalars(select(IdempotencyKey)):
            row.created_at = datetime.now(UTC) - timedelta(hours=hours)


def test_a_key_expires_after_24_hours(api: Api) -> None:
    file_id = api.upload_ok()["id"]
    body = {"model": "tiny-llama", "training_file": file_id}
    first = api.client.post(JOBS, json=body, headers={"Idempotency-Key": "daily"})
    _age_keys(api, 23)
    replayed = api.client.post(JOBS, json=body, headers={"Idempotency-Key": "daily"})
    assert replayed.json()["id"] == first.json()["id"]
    _age_keys(api, 25)
    fresh = api.client.post(JOBS, json={**body, "seed": 3}, headers={"Idempotency-Key": "daily"})
    assert fresh.status_code == 200 and fresh.json()["id"] != first.json()["id"]


def test_the_reconciler_purges_expired_keys(api: Api) -> None:
    _upload(api, "old")
    _upload(api, "new")
    with session_scope(api.settings.resolved_database_url) as session:
        session.get(IdempotencyKey, ("default", "old")).created_at = datetime.now(UTC) - timedelta(
            hours=30
        )
    reconcile_once(api.settings, lambda job_id, queue: None)
    with session_scope(api.settings.resolved_database_url) as session:
        assert [row.key for row in session.scalars(select(IdempotencyKey))] == ["new"]
