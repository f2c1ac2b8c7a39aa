"""Request bodies on the real app over real HTTP: with ``STEER_AUTH=on`` a caller without a
valid key is refused before any byte of its body is read, and every body is limited by size as
it streams (``Content-Length`` or not): JSON at ``STEER_MAX_JSON_BODY_BYTES``, uploads at
``STEER_MAX_UPLOAD_BYTES``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.formparsers import MultiPartParser

from tests.api.helpers import FILES, JOBS, Api, assert_error
from tests.api.raw_http import RawConnection

ADMIN = "adm-body-test-0123456789"
MIB = 1 << 20
BOUNDARY = "steer-test-boundary"
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
JSON = {"Content-Type": "application/json"}
CHUNKED = {"Transfer-Encoding": "chunked"}


def _multipart_head() -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()


def _rows(total: int, piece: int = 64 * 1024) -> Iterator[bytes]:
    row = b'{"prompt": "a", "completion": "b"}\n'
    block = row * (piece // len(row))
    for _ in range(total // len(block)):
        yield block


def _leftovers(api: Api) -> list[Path]:
    """Anything an upload left in the data directory's file store (temp copies included)."""
    return [p for p in api.settings.files_dir.rglob("*") if p.is_file()]


@pytest.fixture
def parser_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the multipart parses the app starts (each spools the body's files)."""
    runs: list[int] = []
    parse = MultiPartParser.parse

    async def counted(self: MultiPartParser):  # type: ignore[no-untyped-def]
        runs.append(1)
        return await parse(self)

    monkeypatch.setattr(MultiPartParser, "parse", counted)
    return runs


def test_a_json_body_without_a_key_is_refused_before_it_is_read(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(auth="on", admin_key=ADMIN)
    for headers in ({}, {"Authorization": "Bearer sk-steer-wrong"}):
        with RawConnection(api.base_url) as connection:
            # 300 MB announced, not one byte of it sent: only an answer that needs none arrives
            connection.send_head("POST", JOBS, {**JSON, **headers, "Content-Length": "300000000"})
            assert connection.status() == 401
            assert b"invalid_api_key" in connection.read_until(b"invalid_api_key")


def test_a_chunked_upload_without_a_key_is_refused_before_it_is_read(
    make_api: Callable[..., Api], parser_runs: list[int]
) -> None:
    api = make_api(auth="on", admin_key=ADMIN)
    with RawConnection(api.base_url) as connection:
        connection.send_head("POST", FILES, {**MULTIPART, **CHUNKED})
        connection.send_chunks([_multipart_head(), *_rows(MIB)])  # a start of "hundreds of MB"
        assert connection.status() == 401
        connection.read_until(b"invalid_api_key")
        assert connection.closed_within(5)  # the rest is never waited for
    assert parser_runs == []
    assert _leftovers(api) == []
    with httpx.Client(base_url=api.base_url, timeout=30) as anonymous:
        refused = anonymous.post(FILES, data={"purpose": "fine-tune"}, files={"file": b"x"})
        assert_error(refused, 401, code="invalid_api_key")


def test_an_oversized_json_body_is_413_with_or_without_content_length(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(max_json_body_bytes=64 * 1024)
    body = b'{"model": "' + b"m" * (200 * 1024) + b'"}'
    announced = api.client.post(JOBS, content=body, headers=JSON)
    assert_error(announced, 413, code="request_too_large", param=None, mentions=("65536",))
    chunked = api.client.post(JOBS, content=iter([body[:50_000], body[50_000:]]), headers=JSON)
    assert "content-length" not in chunked.request.headers
    assert_error(chunked, 413, code="request_too_large", param=None)
    # under the limit, the same route reads and validates as before
    assert_error(api.client.post(JOBS, content=b'{"model": "m"}', headers=JSON), 400)


def test_an_oversized_chunked_json_body_is_refused_while_it_streams(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(max_json_body_bytes=64 * 1024)
    with RawConnection(api.base_url) as connection:
        connection.send_head("POST", JOBS, {**JSON, **CHUNKED})
        connection.send_chunks([b'{"model": "', *(b"m" * 64 * 1024 for _ in range(4))])
        assert connection.status() == 413  # while the rest of the body is still unsent
        connection.read_until(b"request_too_large")


def test_a_chunked_upload_over_the_limit_is_refused_while_it_streams(
    make_api: Callable[..., Api], parser_runs: list[int]
) -> None:
    api = make_api(max_upload_bytes=64 * 1024)
    with RawConnection(api.base_url) as connection:
        connection.send_head("POST", FILES, {**MULTIPART, **CHUNKED})
        connection.send_chunks([_multipart_head(), *_rows(2 * MIB)])
        assert connection.status() == 413  # while the rest of the body is still unsent
        connection.read_until(b"file_too_large")
    assert parser_runs == [1]
    assert _leftovers(api) == []
    assert api.get_json(FILES)["data"] == []
