"""Rows of another tenant (written straight into the registry) are invisible over HTTP."""

from __future__ import annotations

from registry.db import session_scope
from registry.files import get_file
from registry.jobs import get_job
from tests.api.helpers import FILES, JOBS, Api, assert_error
from tests.db_fixtures import add_file, add_job

OTHER = "someone-else"


def test_other_tenants_files_and_jobs_are_invisible(api: Api) -> None:
    with session_scope(api.settings.resolved_database_url) as session:
        their_file = add_file(session, OTHER).id
        their_job = add_job(session, OTHER, their_file).id
    mine = api.job_ok()

    assert [f["id"] for f in api.get_json(FILES)["data"]] == [mine["training_file"]]
    assert [j["id"] for j in api.get_json(JOBS)["data"]] == [mine["id"]]
    for response in (
        api.client.get(f"{FILES}/{their_file}"),
        api.client.get(f"{FILES}/{their_file}/content"),
        api.client.delete(f"{FILES}/{their_file}"),
        api.client.get(FILES, params={"after": their_file}),
        api.client.get(f"{JOBS}/{their_job}"),
        api.client.post(f"{JOBS}/{their_job}/cancel"),
        api.client.post(f"{JOBS}/{their_job}/pause"),
        api.client.post(f"{JOBS}/{their_job}/resume"),
        api.client.get(f"{JOBS}/{their_job}/checkpoints/{their_job}:ckpt-step-1/content"),
        api.client.get(f"{JOBS}/{their_job}/events"),
        api.client.get(f"{JOBS}/{their_job}/events", params={"stream": "true"}),
        api.client.get(f"{JOBS}/{their_job}/checkpoints"),
        api.client.get(JOBS, params={"after": their_job}),
    ):
        assert_error(response, 404, code="not_found")

    response = api.create_job({"model": "tiny-llama", "training_file": their_file})
    assert_error(response, 400, param="training_file", code="invalid_file")

    # and nothing of theirs changed
    with session_scope(api.settings.resolved_database_url) as session:
        assert get_job(session, their_job).status == "queued"
        assert get_file(session, their_file).tenant_id == OTHER
