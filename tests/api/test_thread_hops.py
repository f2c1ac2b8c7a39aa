"""Each request runs on the thread pool at most once.

FastAPI runs a plain ``def`` route on anyio's worker threads and then its response validation
in a second hop, a plain ``def`` dependency in a hop of its own, and a sync generator dependency
in two (entry and exit). With 50 clients those hops cost more CPU than a status read's database
work (benchmarks/service), so every route is ``async def`` (blocking bodies through
``api.deps.threaded``: one hop), opens ``session_scope`` in its body, and every dependency is
``async def``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.app import create_app
from api.routes import adapters, admin, completions, dashboard, files, jobs
from registry.settings import Settings
from tests.api.helpers import Api


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
    threaded: dict[tuple[str, str], list[str]] = {}
    for route in _routes(tmp_path):
        names = sorted(
            {call.__name__ for call in _calls(route.dependant) if not _runs_on_the_event_loop(call)}
        )
        if names:
            for method in route.methods:
                threaded[(method, route.path)] = names
    assert threaded == {}


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
