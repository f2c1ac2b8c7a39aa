"""``GET …/events?stream=true`` on the real app over real HTTP: idle streams hold no thread, a
tenant's open streams are capped, a closed stream frees its slot, a revoked key ends its
stream, an idle stream sends keep-alive comments, and ``after`` is honoured."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pytest

from registry import jobs as repo
from registry.db import session_scope
from steer.client import SteerAPIError, SteerClient
from tests.api.helpers import FILES, JOBS, VALID_JSONL, Api, assert_error
from tests.api.raw_http import RawConnection, open_stream

ADMIN = "adm-stream-test-0123456789"
# More than anyio's 40 default worker threads and the API's short-work threads together.
IDLE_STREAMS = 45
# A hang test, not a timing test: each request gets this long.
PROMPT = 15.0


def _stream_path(job_id: str, **params: str) -> str:
    query = "&".join(f"{name}={value}" for name, value in {"stream": "true", **params}.items())
    return f"{JOBS}/{job_id}/events?{query}"


def _tenant_key(admin: httpx.Client, name: str) -> str:
    tenant = admin.post("/v1/admin/tenants", json={"name": name}).json()
    created = admin.post(f"/v1/admin/tenants/{tenant['id']}/api_keys", json={"name": "k"})
    assert created.status_code == 200, created.text
    return str(created.json()["key"])


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_idle_streams_leave_the_api_answering(make_api: Callable[..., Api]) -> None:
    api = make_api(max_streams_per_tenant=IDLE_STREAMS + 5)
    file = api.upload_ok()
    job = api.job_ok(file["id"])  # queued, and no worker: its stream stays idle
    streams: list[RawConnection] = []
    try:
        for _ in range(IDLE_STREAMS):
            streams.append(open_stream(api.base_url, _stream_path(job["id"])))
        assert [s.status() for s in streams] == [200] * IDLE_STREAMS
        time.sleep(1.0)  # every stream is past its first poll, idle
        with httpx.Client(base_url=api.base_url, timeout=PROMPT) as other:
            started = time.monotonic()
            download = other.get(f"{FILES}/{file['id']}/content")
            assert download.status_code == 200 and download.content == VALID_JSONL
            upload = other.post(
                FILES, data={"purpose": "fine-tune"}, files={"file": ("t.jsonl", VALID_JSONL)}
            )
            assert upload.status_code == 200, upload.text
            assert other.get(f"{JOBS}/{job['id']}").status_code == 200
            assert other.get(f"{JOBS}/{job['id']}/events").status_code == 200
            assert other.get("/health").status_code == 200
            assert time.monotonic() - started < 3 * PROMPT
    finally:
        for stream in streams:
            stream.close()


def test_streams_past_a_tenants_cap_are_429(make_api: Callable[..., Api]) -> None:
    api = make_api(auth="on", admin_key=ADMIN, max_streams_per_tenant=2)
    with httpx.Client(base_url=api.base_url, headers=_bearer(ADMIN), timeout=30) as admin:
        key_a, key_b = _tenant_key(admin, "a"), _tenant_key(admin, "b")
    with (
        httpx.Client(base_url=api.base_url, headers=_bearer(key_a), timeout=10) as a,
        httpx.Client(base_url=api.base_url, headers=_bearer(key_b), timeout=10) as b,
    ):
        file_a = a.post(FILES, data={"purpose": "fine-tune"}, files={"file": ("t", VALID_JSONL)})
        job_a = a.post(JOBS, json={"model": "tiny-llama", "training_file": file_a.json()["id"]})
        file_b = b.post(FILES, data={"purpose": "fine-tune"}, files={"file": ("t", VALID_JSONL)})
        job_b = b.post(JOBS, json={"model": "tiny-llama", "training_file": file_b.json()["id"]})
        path_a, path_b = _stream_path(job_a.json()["id"]), _stream_path(job_b.json()["id"])
        streams = [open_stream(api.base_url, path_a, _bearer(key_a)) for _ in range(2)]
        try:
            assert [s.status() for s in streams] == [200, 200]
            refused = a.get(path_a)
            assert_error(refused, 429, code="too_many_streams", param=None, mentions=("2",))
            # the cap is per tenant: another tenant's stream opens
            with open_stream(api.base_url, path_b, _bearer(key_b)) as other:
                assert other.status() == 200
            # and it never counted plain reads
            assert a.get(f"{JOBS}/{job_a.json()['id']}/events").status_code == 200
        finally:
            for stream in streams:
                stream.close()


def test_a_closed_stream_frees_its_slot(make_api: Callable[..., Api]) -> None:
    api = make_api(max_streams_per_tenant=2)
    path = _stream_path(api.job_ok()["id"])
    for _ in range(2):  # twice over: every slot comes back each time
        streams = [open_stream(api.base_url, path) for _ in range(2)]
        try:
            assert [s.status() for s in streams] == [200, 200]
            with open_stream(api.base_url, path) as refused:
                assert refused.status() == 429
        finally:
            for stream in streams:
                stream.close()
        deadline = time.monotonic() + 5  # the server notices the disconnects within seconds
        while True:
            with open_stream(api.base_url, path) as again:
                if again.status() == 200:
                    break
            assert time.monotonic() < deadline, "closed streams still hold their slots"
            time.sleep(0.2)
        time.sleep(0.5)  # ``again`` closed: its slot too must come back


def test_a_revoked_key_ends_its_stream(make_api: Callable[..., Api]) -> None:
    api = make_api(auth="on", admin_key=ADMIN, stream_auth_recheck_seconds=0.5)
    with httpx.Client(base_url=api.base_url, headers=_bearer(ADMIN), timeout=30) as admin:
        tenant = admin.post("/v1/admin/tenants", json={"name": "t"}).json()
        created = admin.post(f"/v1/admin/tenants/{tenant['id']}/api_keys", json={}).json()
        headers = _bearer(created["key"])
        with httpx.Client(base_url=api.base_url, headers=headers, timeout=30) as client:
            file = client.post(
                FILES, data={"purpose": "fine-tune"}, files={"file": ("t", VALID_JSONL)}
            )
            job = client.post(
                JOBS, json={"model": "tiny-llama", "training_file": file.json()["id"]}
            )
        with open_stream(api.base_url, _stream_path(job.json()["id"]), headers) as stream:
            assert stream.status() == 200
            time.sleep(1.0)
            assert not stream.closed_within(0.1)  # a live key keeps it open
            assert admin.delete(f"/v1/admin/api_keys/{created['id']}").status_code == 200
            stream.read_until(b"invalid_api_key", timeout=10)
            assert stream.closed_within(5), stream.received[-300:]
            assert b"event: error" in stream.received
        # the Python client raises it
        second = admin.post(f"/v1/admin/tenants/{tenant['id']}/api_keys", json={}).json()
        timer = threading.Timer(1.0, lambda: admin.delete(f"/v1/admin/api_keys/{second['id']}"))
        client = SteerClient(api.base_url, api_key=second["key"])
        timer.start()
        try:
            with pytest.raises(SteerAPIError) as raised:
                list(client.stream_events(job.json()["id"]))
            assert (raised.value.status, raised.value.code) == (401, "invalid_api_key")
        finally:
            timer.join()
            client.close()


def test_an_idle_stream_sends_keep_alive_comments(make_api: Callable[..., Api]) -> None:
    api = make_api(stream_keepalive_seconds=0.5)
    with open_stream(api.base_url, _stream_path(api.job_ok()["id"])) as stream:
        assert stream.status() == 200
        stream.read_until(b"\n: keep-alive\n\n", timeout=10)


def test_a_stream_starts_after_the_given_event(make_api: Callable[..., Api]) -> None:
    api = make_api()
    job = api.job_ok()
    with session_scope(api.settings.resolved_database_url) as session:
        repo.add_event(session, job["id"], "marker-one")
        repo.add_event(session, job["id"], "marker-two")
    listed = api.get_json(f"{JOBS}/{job['id']}/events", limit=100)["data"]
    one = next(e for e in listed if e["message"] == "marker-one")
    assert api.client.post(f"{JOBS}/{job['id']}/cancel").status_code == 200
    answer = api.client.get(f"{JOBS}/{job['id']}/events", params={"stream": "true"})
    assert "marker-one" in answer.text and "marker-two" in answer.text
    after = api.client.get(
        f"{JOBS}/{job['id']}/events", params={"stream": "true", "after": one["id"]}
    )
    assert after.status_code == 200
    assert "marker-one" not in after.text and "marker-two" in after.text
    assert after.text.rstrip().endswith(f'data: {{"job_id": "{job["id"]}"}}')
    assert_error(
        api.client.get(f"{JOBS}/{job['id']}/events", params={"stream": "true", "after": "nope"}),
        404,
        code="not_found",
    )
