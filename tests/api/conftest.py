"""The real API app over real HTTP: ``create_app(settings)`` under uvicorn in a thread.

Each app gets a fresh data directory and a migrated registry (SQLite unless a test asks for
PostgreSQL). No worker runs: jobs stay ``queued`` (the filesystem broker only stores their
messages).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from api.app import create_app
from registry.settings import Settings
from tests.api.helpers import Api
from tests.db_fixtures import dispose_engine, fresh_postgres_database, migrated, sqlite_url

STARTUP_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """Serve ``create_app(settings)`` with uvicorn in a background thread; yield its base URL."""
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if not thread.is_alive():
                raise RuntimeError("uvicorn exited during startup")
            try:
                if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not answer /health within {STARTUP_TIMEOUT}s")
            time.sleep(0.05)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=SHUTDOWN_TIMEOUT)
        assert not thread.is_alive(), "uvicorn did not shut down"


@contextmanager
def running_api(root: Path, backend: str = "sqlite", **overrides: Any) -> Iterator[Api]:
    """A migrated registry under ``root``, the app serving it, and a client."""
    with ExitStack() as stack:
        if backend == "sqlite":
            url = sqlite_url(root)
        elif backend == "postgres":
            url = stack.enter_context(fresh_postgres_database())
        else:
            raise ValueError(f"unknown backend {backend!r}")
        stack.callback(dispose_engine, url)  # runs after the server has stopped
        settings = Settings(data_dir=root / "data", database_url=migrated(url), **overrides)
        base_url = stack.enter_context(serve(settings))
        client = stack.enter_context(httpx.Client(base_url=base_url, timeout=30))
        yield Api(client=client, settings=settings, base_url=base_url)


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """Start another app: ``make_api(max_upload_bytes=100)``, ``make_api("postgres")``.

    Each gets its own data directory and registry; all are stopped at teardown."""
    with ExitStack() as stack:
        count = 0

        def start(backend: str = "sqlite", **overrides: Any) -> Api:
            nonlocal count
            count += 1
            root = tmp_path / f"api{count}"
            root.mkdir()
            return stack.enter_context(running_api(root, backend, **overrides))

        yield start


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """The app with default settings on a fresh SQLite registry, for this test alone."""
    with running_api(tmp_path) as handle:
        yield handle


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One app for a module's tests that only read, or only send requests that must fail."""
    with running_api(tmp_path_factory.mktemp("shared_api")) as handle:
        yield handle


@pytest.fixture(scope="module")
def shared_file(shared_api: Api) -> str:
    """A processed training file on ``shared_api``."""
    return str(shared_api.upload_ok()["id"])
