"""A client that got a 200 for a write must see that write in its next request.

The request session was a FastAPI dependency with ``yield`` (``api.deps.get_session``). With the
default (request) scope its cleanup, and so its ``session.commit()``, runs after the response
has been sent: on SQLite the next request then waits for that commit (``BEGIN IMMEDIATE``), but
on PostgreSQL it does not, and read the state from before the write (GET of a just-uploaded
file was 404; GET of a job right after a 200 cancel said ``queued``). The routes then declared
the session with ``scope="function"``; now they open ``session_scope`` in their own body, so
the commit happens before the route returns.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.api.helpers import FILES, JOBS, Api

ROUNDS = 150


def _stale_reads(api: Api, rounds: int) -> list[str]:
    """Upload-then-get and cancel-then-get, until the first stale read (or ``rounds``)."""
    training = api.upload_ok()["id"]
    stale: list[str] = []
    for _ in range(rounds):
        uploaded = api.upload_ok()
        got = api.client.get(f"{FILES}/{uploaded['id']}")
        if got.status_code != 200:
            stale.append(f"GET file after its upload: {got.status_code} {got.text}")
        job = api.job_ok(training)
        cancel = api.client.post(f"{JOBS}/{job['id']}/cancel")
        assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled", cancel.text
        status = api.get_json(f"{JOBS}/{job['id']}")["status"]
        if status != "cancelled":
            stale.append(f"GET job after a 200 cancel: status {status}")
        deleted = api.client.delete(f"{FILES}/{uploaded['id']}")
        assert deleted.status_code == 200, deleted.text
        gone = api.client.get(f"{FILES}/{uploaded['id']}")
        if gone.status_code != 404:
            stale.append(f"GET file after a 200 delete: {gone.status_code}")
        if stale:
            break
    return stale


def test_sqlite_reads_its_writes(api: Api) -> None:
    assert _stale_reads(api, 20) == []


def test_postgres_reads_its_writes(make_api: Callable[..., Api]) -> None:
    api = make_api("postgres")
    assert _stale_reads(api, ROUNDS) == []
