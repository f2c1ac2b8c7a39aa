"""Helpers for the API tests: the running app's handle, request shortcuts, error assertions."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.services import files as files_service
from registry.adapters import create_adapter
from registry.db import session_scope
from registry.settings import Settings

PROMPT_COMPLETION_ROWS: list[dict[str, str]] = [
    {"prompt": "2 + 2 =", "completion": " 4"},
    {"prompt": "The capital of France is", "completion": " Paris"},
    {"prompt": "Say hi:", "completion": " hi"},
]

JOBS = "/v1/fine_tuning/jobs"
FILES = "/v1/files"
ERROR_TYPES = {"invalid_request_error", "server_error"}


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


VALID_JSONL = jsonl(PROMPT_COMPLETION_ROWS)


class _Missing:
    """Marks an expectation that was not given (``None`` is a valid ``param``)."""


MISSING = _Missing()


@dataclass
class Api:
    """An HTTP client on a running app, its settings, and request shortcuts."""

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
            FILES, data={"purpose": purpose}, files={"file": (filename, content)}
        )

    def upload_ok(self, content: bytes = VALID_JSONL, **kwargs: Any) -> dict[str, Any]:
        response = self.upload(content, **kwargs)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def create_job(self, body: Any) -> httpx.Response:
        return self.client.post(JOBS, json=body)

    def post_raw(self, path: str, content: bytes) -> httpx.Response:
        """POST raw bytes as JSON on a connection used for this request only: after a 500 the
        server drops the connection, which would break the next request sent on it."""
        return self.client.post(
            path,
            content=content,
            headers={"content-type": "application/json", "connection": "close"},
        )

    def job_ok(self, training_file: str | None = None, **fields: Any) -> dict[str, Any]:
        """Create a job on tiny-llama (uploading a file unless one is given); return it."""
        file_id = training_file or self.upload_ok()["id"]
        response = self.create_job({"model": "tiny-llama", "training_file": file_id, **fields})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def get_json(self, path: str, **params: Any) -> dict[str, Any]:
        response = self.client.get(path, params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def multipart_upload(
    api: Api, *, filename: bytes, purpose: bytes = b"fine-tune", content: bytes = VALID_JSONL
) -> httpx.Response:
    """An upload whose form carries ``filename`` and ``purpose`` as raw bytes (httpx would escape
    a NUL in a filename, and cannot send a lone surrogate at all), on a connection of its own."""
    boundary = b"steer-boundary-7d1f"
    body = b"".join(
        [
            b"--" + boundary + b"\r\n",
            b'Content-Disposition: form-data; name="purpose"\r\n\r\n' + purpose + b"\r\n",
            b"--" + boundary + b"\r\n",
            b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n',
            b"Content-Type: application/octet-stream\r\n\r\n",
            content,
            b"\r\n--" + boundary + b"--\r\n",
        ]
    )
    return api.client.post(
        FILES,
        content=body,
        headers={
            "content-type": f"multipart/form-data; boundary={boundary.decode()}",
            "connection": "close",
        },
    )


def assert_error(
    response: httpx.Response,
    status: int,
    *,
    param: str | _Missing | None = MISSING,
    code: str | _Missing | None = MISSING,
    mentions: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The response is the OpenAI error envelope with this status; return its ``error``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"].strip(), error
    assert error["type"] in ERROR_TYPES, error
    assert error["param"] is None or isinstance(error["param"], str), error
    if not isinstance(param, _Missing):
        assert error["param"] == param, error
    if not isinstance(code, _Missing):
        assert error["code"] == code, error
    for word in mentions:
        assert word.lower() in error["message"].lower(), (word, error["message"])
    return error


def assert_client_error(response: httpx.Response) -> dict[str, Any]:
    """Any 4xx with the envelope (never a 422: validation maps to 400)."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.status_code != 422, response.text
    return assert_error(response, response.status_code)


def register_adapter(
    api: Api,
    name: str,
    *,
    tenant: str = "default",
    files: dict[str, bytes],
    base_model: str = "tiny-llama",
    method: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write an adapter's files under the adapters directory and register it; return its row."""
    digests = {file_name: hashlib.sha256(c).hexdigest() for file_name, c in files.items()}
    with session_scope(api.settings.resolved_database_url) as session:
        row = create_adapter(
            session,
            tenant_id=tenant,
            name=name,
            base_model=base_model,
            method=method or {"type": "post_block"},
            storage_path="pending",
            sha256=hashlib.sha256(repr(sorted(digests.items())).encode()).hexdigest(),
            bytes=sum(len(c) for c in files.values()),
            files=digests,
            trainable_parameters=1234,
            metrics={"eval_loss": 0.5},
        )
        storage = row.storage_path = f"{tenant}/{name}/v{row.version}"
        for file_name, content in files.items():
            path = api.settings.adapters_dir / storage / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        return {
            "id": row.id,
            "name": row.name,
            "version": row.version,
            "sha256": row.sha256,
            "storage": storage,
        }


@dataclass
class HeldValidation:
    """Uploads that reach validation stop there until ``release`` is set; ``reached`` counts
    them in (acquire it once per upload to wait for each)."""

    reached: threading.Semaphore
    release: threading.Event


def hold_upload_validation(monkeypatch: pytest.MonkeyPatch, timeout: float = 60) -> HeldValidation:
    """Patch the upload service's validation (the real one runs once released)."""
    held = HeldValidation(threading.Semaphore(0), threading.Event())
    validate = files_service.validate_jsonl

    def gated(path: Path) -> Any:
        held.reached.release()
        held.release.wait(timeout=timeout)
        return validate(path)

    monkeypatch.setattr(files_service, "validate_jsonl", gated)
    return held
