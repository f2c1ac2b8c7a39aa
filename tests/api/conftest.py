"""The real API app over real HTTP: ``create_app(settings)`` under uvicorn in a thread.

Every test gets a fresh data directory and a migrated SQLite registry. No worker runs: jobs stay
``queued`` (the filesystem broker only stores their messages).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from api.app import create_app
from registry.settings import Settings
from tests.db_fixtures import migrated, sqlite_url

STARTUP_TIMEOUT = 30.0

PROMPT_COMPLETION_ROWS: list[dict[str, str]] = [
    {"prompt": "2 + 2 =", "completion": " 4"},
    {"prompt": "The capital of France is", "completion": " Paris"},
    {"prompt": "Say hi:", "completion": " hi"},
]


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


VALID_JSONL = jsonl(PROMPT_COMPLETION_ROWS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Api:
    """An HTTP client on a running app, its settings, and a few request helpers."""

    client: httpx.Client
    settings: Settings
    base_url: str

    def upload(
        self,
        content: bytes = VALID_JSONL,
        *,
        filename: str = "train.jsonl",
        purpose: str = "fine-tune",
    ) -> httpx.Response:
        return self.client.post(
            "/v1/files", data={"purpose": purpose}, files={"file": (filename, content)}
        )

    def upload_ok(self, content: bytes = VALID_JSONL, **kwargs: Any) -> dict[str, Any]:
        response = self.upload(content, **kwargs)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def create_job(self, body: Any) -> httpx.Response:
        return self.client.post("/v1/fine_tuning/jobs", json=body)

    def job_ok(self, training_file: str | None = None, **fields: Any) -> dict[str, Any]:
        """Create a job on tiny-llama (uploading a file unless one is given); return it."""
        file_id = training_file or self.upload_ok()["id"]
        response = self.create_job({"model": "tiny-llama", "training_file": file_id, **fields})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@dataclass
class _Running:
    server: uvicorn.Server
    thread: threading.Thread


def _serve(settings: Settings) -> tuple[_Running, str]:
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("uvicorn exited during startup")
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return _Running(server, thread), base_url
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.should_exit = True
    thread.join(timeout=10)
    raise RuntimeError(f"API did not answer /health within {STARTUP_TIMEOUT}s")


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """Start an app with ``Settings`` overrides (e.g. ``max_upload_bytes=100``); each call gets
    its own data directory and registry. Everything started is stopped at teardown."""
    running: list[tuple[_Running, httpx.Client]] = []

    def start(**overrides: Any) -> Api:
        root = tmp_path / f"api{len(running)}"
        root.mkdir()
        settings = Settings(
            data_dir=root / "data", database_url=migrated(sqlite_url(root)), **overrides
        )
        handle, base_url = _serve(settings)
        client = httpx.Client(base_url=base_url, timeout=30)
        running.append((handle, client))
        return Api(client=client, settings=settings, base_url=base_url)

    yield start
    for handle, client in running:
        client.close()
        handle.server.should_exit = True
    for handle, _ in running:
        handle.thread.join(timeout=15)
        assert not handle.thread.is_alive(), "uvicorn did not shut down"


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    """The app with default settings."""
    return make_api()
