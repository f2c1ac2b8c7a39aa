"""Each request runs on the thread pool at most once.

FastAPI runs a plain ``def`` route on anyio's worker threads and then its response validation
in a second hop, a plain ``def`` dependency in a hop of its own, and a sync generator dependency
in two (entry and exit). Each hop wakes a thread and hands the GIL over
(benchmarks/service/before_after.md measures what three of them cost), so every route is
``async def`` (blocking bodies through
``api.deps.threaded``: one hop), opens ``session_scope`` in its body, and every dependency is
``async def``.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.app import create_app
from api.deps import SHORT_WORK_THREADS
from api.routes import adapters, admin, completions, dashboard, files, jobs
from registry import jobs as jobs_repo
from registry.settings import Settings
from tests.api.helpers import VALID_JSONL, Api, hold_upload_validation


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def _runs_on_the_event_loop(call: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)


def _routes(tmp_path: Path) -> list[APIRoute]:
    app = create_app(Settings(data_dir=tmp_path / "data"))
    # the app's own routes, and those of the routers it includes (FastAPI wraps an included
    # router in an object of its own instead of copying its routes into ``app.routes``)
    routers = (
        app.router,
        adapters.router,
        admin.router,
        completions.router,
        dashboard.router,
        files.router,
        jobs.router,
    )
    routes = [route for router in routers for route in router.routes if isinstance(route, APIRoute)]
    assert len(routes) > 20  # the walk saw the API, not an empty app
    return routes


def test_every_route_is_async(tmp_path: Path) -> None:
    sync = [
        route.path for route in _routes(tmp_path) if not _runs_on_the_event_loop(route.endpoint)
    ]
    assert sync == []


def test_no_route_has_a_dependency_that_takes_a_thread_hop(tmp_path: Path) -> None:
    threaded = [
        (route.path, call.__name__)
        for route in _routes(tmp_path)
        for call in _calls(route.dependant)
        if not _runs_on_the_event_loop(call)
    ]
    assert threaded == []


def test_a_request_takes_one_thread_hop(
    make_api: Callable[..., Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted on the real app over HTTP: every worker-thread call goes through
    ``anyio.to_thread.run_sync`` (Starlette's ``run_in_threadpool`` included)."""
    api = make_api("postgres")
    file_id = api.upload_ok()["id"]
    job_id = api.job_ok()["id"]
    calls: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counted(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(function, "__name__", repr(function)))
        return await run_sync(function, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    body = {"model": "tiny-llama", "training_file": file_id, "method": {"type": "post_block"}}
    for method, path, payload in [
        ("GET", f"/v1/fine_tuning/jobs/{job_id}", None),
        ("POST", "/v1/fine_tuning/jobs", body),
        ("GET", "/v1/fine_tuning/jobs", None),
        ("GET", f"/v1/files/{file_id}", None),
    ]:
        calls.clear()
        answer = api.client.request(method, path, json=payload)
        assert answer.status_code == 200, answer.text
        assert len(calls) == 1, f"{method} {path}: {calls}"
    calls.clear()
    assert api.upload_ok()["status"] == "processed"
    assert len(calls) == 1, f"upload: {calls}"


def _in_parallel(calls: list[Callable[[], Any]]) -> list[threading.Thread]:
    threads = [threading.Thread(target=call) for call in calls]
    for thread in threads:
        thread.start()
    return threads


def test_at_most_short_work_threads_route_bodies_run_at_once(
    make_api: Callable[..., Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    api = make_api("postgres")
    job_id = api.job_ok()["id"]
    inside, most, lock, release = 0, 0, threading.Lock(), threading.Event()
    get_job = jobs_repo.get_job

    def held(*args: Any, **kwargs: Any) -> Any:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        release.wait(timeout=30)
        with lock:
            inside -= 1
        return get_job(*args, **kwargs)

    monkeypatch.setattr(jobs_repo, "get_job", held)
    url = f"{api.base_url}/v1/fine_tuning/jobs/{job_id}"
    codes: list[int] = []
    readers = _in_parallel([lambda: codes.append(httpx.get(url, timeout=60).status_code)] * 12)
    try:
        deadline = time.monotonic() + 30
        while most < SHORT_WORK_THREADS and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)  # room for a seventh body to start, were there no limit
        assert most == SHORT_WORK_THREADS
    finally:
        release.set()
        for reader in readers:
            reader.join(timeout=60)
    assert codes == [200] * 12


def test_slow_bodies_never_hold_up_the_short_ones(
    make_api: Callable[..., Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    """More uploads than short-work threads, all stuck in validation: status reads still
    answer, because uploads run on the other pool (``threaded_slow``)."""
    api = make_api("postgres")
    job_id = api.job_ok()["id"]
    held = hold_upload_validation(monkeypatch)
    uploads = SHORT_WORK_THREADS + 2
    answers: list[int] = []
    uploaders = _in_parallel(
        [
            lambda: answers.append(
                httpx.post(
                    f"{api.base_url}/v1/files",
                    data={"purpose": "fine-tune"},
                    files={"file": ("t.jsonl", VALID_JSONL)},
                    timeout=90,
                ).status_code
            )
        ]
        * uploads
    )
    try:
        for _ in range(uploads):
            assert held.reached.acquire(timeout=30), "an upload never reached validation"
        read = httpx.get(f"{api.base_url}/v1/fine_tuning/jobs/{job_id}", timeout=10)
        assert read.status_code == 200
    finally:
        held.release.set()
        for uploader in uploaders:
            uploader.join(timeout=90)
    assert answers == [200] * uploads
