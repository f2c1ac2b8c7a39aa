"""Each request runs on the thread pool at most once.

FastAPI runs a plain ``def`` dependency on anyio's worker threads in a hop of its own, and a
sync generator dependency in two (entry and exit), besides the hop of a ``def`` route. With 50
clients those extra hops cost a third of a status read's CPU (benchmarks/service), so routes
open ``session_scope`` in their own body and every dependency is ``async def``. The one
exception is the upload route, an ``async def`` that reads its body on the event loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.app import create_app
from api.routes import adapters, admin, completions, files, jobs
from registry.settings import Settings


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def _runs_on_the_event_loop(call: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)


def test_no_route_has_a_dependency_that_takes_a_thread_hop(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data"))
    threaded: dict[tuple[str, str], list[str]] = {}
    # the app's own routes, and those of the routers it includes (FastAPI wraps an included
    # router in an object of its own instead of copying its routes into ``app.routes``)
    routers = (
        app.router,
        adapters.router,
        admin.router,
        completions.router,
        files.router,
        jobs.router,
    )
    routes = [route for router in routers for route in router.routes if isinstance(route, APIRoute)]
    assert len(routes) > 20  # the walk saw the API, not an empty app
    for route in routes:
        names = sorted(
            {call.__name__ for call in _calls(route.dependant) if not _runs_on_the_event_loop(call)}
        )
        if names:
            for method in route.methods:
                threaded[(method, route.path)] = names
    assert threaded == {("POST", "/v1/files"): ["get_session"]}
