"""Jobs after creation: list, retrieve, cancel, events (list and SSE stream), checkpoints."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from tests.api.helpers import JOBS, Api, assert_error

STREAM_TIMEOUT = 20.0
# No worker runs beside these apps: every job is accepted with this warning (admission)
NO_WORKER = (
    "No worker has registered yet: the job waits in its queue until a worker with 1 CPU slot starts"
)


def _read_sse(response: httpx.Response, deadline: float) -> list[dict[str, str]]:
    """Parse a server-sent event stream until it ends; each event as {field: value}."""
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in response.iter_lines():
        assert time.monotonic() < deadline, f"stream still open; got {events}"
        if line == "":
            if current:
                events.append(current)
                current = {}
            continue
        field, _, value = line.partition(":")
        current[field] = value.removeprefix(" ")
    if current:
        events.append(current)
    return events


# -- list and retrieve ----------------------------------------------------------------------------


def test_list_jobs_newest_first_with_pagination(api: Api) -> None:
    file_id = api.upload_ok()["id"]
    ids = [api.job_ok(file_id)["id"] for _ in range(5)]
    newest_first = list(reversed(ids))

    everything = api.get_json(JOBS)
    assert everything["object"] == "list"
    assert [j["id"] for j in everything["data"]] == newest_first
    assert everything["has_more"] is False
    assert everything["data"][0] == api.get_json(f"{JOBS}/{newest_first[0]}")

    first = api.get_json(JOBS, limit=2)
    assert [j["id"] for j in first["data"]] == newest_first[:2]
    assert first["has_more"] is True
    second = api.get_json(JOBS, limit=2, after=newest_first[1])
    assert [j["id"] for j in second["data"]] == newest_first[2:4]
    assert second["has_more"] is True
    last = api.get_json(JOBS, limit=2, after=newest_first[3])
    assert [j["id"] for j in last["data"]] == newest_first[4:]
    assert last["has_more"] is False
    assert api.get_json(JOBS, after=newest_first[-1])["data"] == []


def test_list_jobs_empty(api: Api) -> None:
    assert api.get_json(JOBS) == {
        "object": "list",
        "data": [],
        "has_more": False,
        "first_id": None,
        "last_id": None,
    }


@pytest.mark.parametrize(
    ("params", "status", "param"),
    [
        ({"limit": 0}, 400, "limit"),
        ({"limit": 101}, 400, "limit"),
        ({"limit": "ten"}, 400, "limit"),
        ({"after": "ftjob-nope"}, 404, None),
    ],
    ids=["limit-0", "limit-101", "limit-text", "after-unknown"],
)
def test_list_jobs_bad_parameters(
    shared_api: Api, params: dict[str, Any], status: int, param: str | None
) -> None:
    assert_error(shared_api.client.get(JOBS, params=params), status, param=param)


def test_retrieve_unknown_job(shared_api: Api) -> None:
    error = assert_error(shared_api.client.get(f"{JOBS}/ftjob-nope"), 404, code="not_found")
    assert "ftjob-nope" in error["message"]


# -- cancel ---------------------------------------------------------------------------------------


def test_cancel_queued_job_then_again(api: Api) -> None:
    job = api.job_ok()
    response = api.client.post(f"{JOBS}/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["id"] == job["id"]
    assert cancelled["status"] == "cancelled"
    assert isinstance(cancelled["finished_at"], int)
    assert cancelled["finished_at"] >= job["created_at"]
    assert api.get_json(f"{JOBS}/{job['id']}")["status"] == "cancelled"

    again = api.client.post(f"{JOBS}/{job['id']}/cancel")
    # 400, not 409: the status will not change, and OpenAI's SDK retries a 409 with backoff.
    error = assert_error(again, 400, code="invalid_job_status", mentions=("cancelled",))
    assert error["type"] == "invalid_request_error"
    assert job["id"] in error["message"]
    assert api.get_json(f"{JOBS}/{job['id']}")["status"] == "cancelled"


def test_cancel_unknown_job(shared_api: Api) -> None:
    assert_error(shared_api.client.post(f"{JOBS}/ftjob-nope/cancel"), 404, code="not_found")


# -- events ---------------------------------------------------------------------------------------


def test_events_newest_first_with_pagination(api: Api) -> None:
    job = api.job_ok()
    created = api.get_json(f"{JOBS}/{job['id']}/events")
    assert created["object"] == "list"
    assert [e["message"] for e in created["data"]] == [
        NO_WORKER,
        f"Created fine-tuning job: {job['id']}",
    ]
    assert [e["level"] for e in created["data"]] == ["warning", "info"]
    assert created["has_more"] is False
    event = created["data"][-1]
    assert event["object"] == "fine_tuning.job.event"
    assert event["id"].startswith("ftevent-")
    assert event["type"] == "message"
    assert isinstance(event["created_at"], int)

    api.client.post(f"{JOBS}/{job['id']}/cancel")
    events = api.get_json(f"{JOBS}/{job['id']}/events")["data"]
    assert [e["message"] for e in events] == [
        "The job was cancelled",
        NO_WORKER,
        f"Created fine-tuning job: {job['id']}",
    ]
    assert events[0]["data"] == {"status": "cancelled"}

    newest = api.get_json(f"{JOBS}/{job['id']}/events", limit=1)
    assert [e["id"] for e in newest["data"]] == [events[0]["id"]]
    assert newest["has_more"] is True
    older = api.get_json(f"{JOBS}/{job['id']}/events", limit=2, after=events[0]["id"])
    assert [e["id"] for e in older["data"]] == [events[1]["id"], events[2]["id"]]
    assert older["has_more"] is False


def test_events_errors(api: Api) -> None:
    job = api.job_ok()
    assert_error(api.client.get(f"{JOBS}/ftjob-nope/events"), 404, code="not_found")
    assert_error(
        api.client.get(f"{JOBS}/ftjob-nope/events", params={"stream": "true"}),
        404,
        code="not_found",
    )
    assert_error(
        api.client.get(f"{JOBS}/{job['id']}/events", params={"after": "ftevent-nope"}),
        404,
        code="not_found",
    )
    assert_error(
        api.client.get(f"{JOBS}/{job['id']}/events", params={"limit": 0}), 400, param="limit"
    )
    # an event id of another job is no anchor for this one
    other = api.job_ok()
    other_event = api.get_json(f"{JOBS}/{other['id']}/events")["data"][0]["id"]
    assert_error(api.client.get(f"{JOBS}/{job['id']}/events", params={"after": other_event}), 404)


def test_event_stream_of_a_finished_job(api: Api) -> None:
    job = api.job_ok()
    api.client.post(f"{JOBS}/{job['id']}/cancel")
    expected = list(reversed(api.get_json(f"{JOBS}/{job['id']}/events")["data"]))

    deadline = time.monotonic() + STREAM_TIMEOUT
    with api.client.stream(
        "GET", f"{JOBS}/{job['id']}/events", params={"stream": "true"}, timeout=STREAM_TIMEOUT
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _read_sse(response, deadline)

    *data_events, done = events
    assert [e["id"] for e in data_events] == [e["id"] for e in expected]  # oldest first
    assert [json.loads(e["data"]) for e in data_events] == expected
    assert done["event"] == "done"
    assert json.loads(done["data"]) == {"job_id": job["id"]}


def test_event_stream_follows_a_live_job_until_it_finishes(api: Api) -> None:
    """The stream of a queued job stays open, delivers the cancel event, then ends."""
    job = api.job_ok()
    lines: list[str] = []
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            with (
                httpx.Client(base_url=api.base_url, timeout=STREAM_TIMEOUT) as client,
                client.stream(
                    "GET", f"{JOBS}/{job['id']}/events", params={"stream": "true"}
                ) as response,
            ):
                for line in response.iter_lines():
                    lines.append(line)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    deadline = time.monotonic() + STREAM_TIMEOUT
    while not any("Created fine-tuning job" in line for line in lines):
        assert time.monotonic() < deadline and not errors, (lines, errors)
        time.sleep(0.05)
    time.sleep(0.3)
    assert reader.is_alive(), f"the stream of a queued job ended early: {lines}"
    assert "event: done" not in lines

    # other requests are served while the stream is open (it holds no database lock)
    started = time.monotonic()
    cancel = api.client.post(f"{JOBS}/{job['id']}/cancel")
    assert cancel.status_code == 200, cancel.text
    assert time.monotonic() - started < 5

    reader.join(timeout=STREAM_TIMEOUT)
    assert not reader.is_alive(), f"the stream did not end after the job finished: {lines}"
    assert not errors, errors
    messages = [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]
    assert [m.get("message") for m in messages[:3]] == [
        f"Created fine-tuning job: {job['id']}",
        NO_WORKER,
        "The job was cancelled",
    ]
    assert "event: done" in lines
    assert messages[-1] == {"job_id": job["id"]}


# -- checkpoints ----------------------------------------------------------------------------------


def test_checkpoints_of_a_new_job(api: Api) -> None:
    job = api.job_ok()
    assert api.get_json(f"{JOBS}/{job['id']}/checkpoints") == {
        "object": "list",
        "data": [],
        "has_more": False,
        "first_id": None,
        "last_id": None,
    }


def test_checkpoints_errors(api: Api) -> None:
    job = api.job_ok()
    assert_error(api.client.get(f"{JOBS}/ftjob-nope/checkpoints"), 404, code="not_found")
    assert_error(
        api.client.get(f"{JOBS}/{job['id']}/checkpoints", params={"after": "ftckpt-nope"}),
        404,
        code="not_found",
    )
    assert_error(
        api.client.get(f"{JOBS}/{job['id']}/checkpoints", params={"limit": 101}),
        400,
        param="limit",
    )
