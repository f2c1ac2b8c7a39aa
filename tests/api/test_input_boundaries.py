"""Input the database or the tokenizer cannot take is refused at the boundary, on SQLite and on
PostgreSQL alike: NUL characters, lone surrogates, integers beyond a column's range, oversized
metadata, prompts with nothing in them. A user's mistake is a 4xx naming the field; it is never
a 500, and never a 503 (which tells clients the database is down, so they retry forever)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import running_api
from tests.api.helpers import (
    FILES,
    JOBS,
    Api,
    assert_client_error,
    assert_error,
    multipart_upload,
)

BACKENDS = ["sqlite", "postgres"]
CHAT = "/v1/chat/completions"
COMPLETE = "/v1/completions"
LONG_DIGITS = "9" * 5000  # over Python's 4300-digit limit on int(str)


@pytest.fixture(scope="module", params=BACKENDS)
def db_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    """One app per database, for this module's tests (each leaves the registry as it was, or
    adds only rows the others do not look at)."""
    root = tmp_path_factory.mktemp(f"boundaries-{request.param}")
    with running_api(root, request.param) as handle:
        yield handle


@pytest.fixture(scope="module")
def db_file(db_api: Api) -> str:
    return str(db_api.upload_ok()["id"])


def _post(api: Api, path: str, body: bytes) -> httpx.Response:
    return api.post_raw(path, body)


def _job(file_id: str, **fields: Any) -> bytes:
    return json.dumps({"model": "tiny-llama", "training_file": file_id, **fields}).encode()


def _get(api: Api, path: str, **params: Any) -> httpx.Response:
    return api.client.get(path, params=params, headers={"connection": "close"})


def _stored_files(api: Api) -> set[Path]:
    return {p for p in api.settings.files_dir.rglob("*") if p.is_file()}


# -- metadata: OpenAI's limits ---------------------------------------------------------------------


def test_metadata_at_openai_limits_is_accepted(db_api: Api, db_file: str) -> None:
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    response = _post(db_api, JOBS, _job(db_file, metadata=metadata))
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == metadata


@pytest.mark.parametrize(
    ("metadata", "mentions"),
    [
        ({f"k{i}": "v" for i in range(17)}, ("16",)),
        ({"k" * 65: "v"}, ("64",)),
        ({"k": "v" * 513}, ("512",)),
        ({"k": "v" * 4_000_000}, ("512",)),
        ({"k\u0000": "v"}, ("nul",)),
        ({"k": "v\u0000"}, ("nul",)),
    ],
    ids=["17-pairs", "long-key", "long-value", "4-mb-value", "nul-key", "nul-value"],
)
def test_metadata_beyond_openai_limits_is_refused(
    db_api: Api, db_file: str, metadata: dict[str, str], mentions: tuple[str, ...]
) -> None:
    response = _post(db_api, JOBS, _job(db_file, metadata=metadata))
    assert_error(response, 400, param="metadata", mentions=mentions)


# -- adapter references and integers beyond a column's range --------------------------------------


@pytest.mark.parametrize(
    "reference",
    [
        "x@99999999999999999999",
        "x@2147483648",
        "x@2147483647",
        f"x@{LONG_DIGITS}",
        "x@-1",
        "x@0",
    ],
    ids=["beyond-int64", "beyond-int32", "int32-max", "beyond-int-str-limit", "negative", "zero"],
)
def test_adapter_versions_out_of_range_are_not_found(db_api: Api, reference: str) -> None:
    """PostgreSQL's 32-bit column answered x@2147483648 with a data error (a 503, "database
    unavailable"); SQLite's driver raised OverflowError beyond 64 bits (a 500)."""
    for suffix in ("", "/content", "/layers"):
        assert_error(_get(db_api, f"/v1/adapters/{reference}{suffix}"), 404, code="not_found")
    response = db_api.client.delete(f"/v1/adapters/{reference}", headers={"connection": "close"})
    assert_error(response, 404, code="not_found")


@pytest.mark.parametrize("path", [COMPLETE, CHAT])
@pytest.mark.parametrize(
    "model", ["x@99999999999999999999", "x@2147483648", f"x@{LONG_DIGITS}", "x\u0000@1"]
)
def test_generation_with_an_out_of_range_adapter_version_is_model_not_found(
    db_api: Api, path: str, model: str
) -> None:
    body: dict[str, Any] = {"model": model, "max_tokens": 2}
    if path == CHAT:
        body["messages"] = [{"role": "user", "content": "hi"}]
    else:
        body["prompt"] = "hi"
    response = _post(db_api, path, json.dumps(body).encode())
    if len(model) > 256:  # over the field's length: refused before any lookup
        assert_error(response, 400, param="model")
    else:
        assert_error(response, 404, param="model", code="model_not_found")


def test_upload_with_an_integer_beyond_the_digit_limit_names_its_line(db_api: Api) -> None:
    content = b'{"prompt": "a", "completion": "b"}\n{"prompt": "a", "n": ' + LONG_DIGITS.encode()
    response = db_api.upload(content + b', "completion": "b"}\n')
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "error", body
    assert "line 2" in body["status_details"] and "digits" in body["status_details"], body


# -- generation inputs -------------------------------------------------------------------------


def test_an_empty_prompt_is_refused_naming_it(db_api: Api) -> None:
    body = {"model": "tiny-llama", "prompt": "", "max_tokens": 2}
    assert_error(_post(db_api, COMPLETE, json.dumps(body).encode()), 400, param="prompt")
    body["prompt"] = [""]
    assert_error(_post(db_api, COMPLETE, json.dumps(body).encode()), 400, param="prompt")


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (COMPLETE, {"prompt": "\ud800"}, "prompt"),
        (COMPLETE, {"prompt": ["a\udfffb"]}, "prompt"),
        (CHAT, {"messages": [{"role": "user", "content": "\ud800"}]}, "messages.0.content"),
        (
            CHAT,
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]},
            "messages.0.content",  # the first member of its union (str) names it so
        ),
        (
            CHAT,
            {"messages": [{"role": "user", "content": "a", "name": "\ud800"}]},
            "messages.0.name",
        ),
        (COMPLETE, {"prompt": "a", "stop": "\ud800"}, "stop"),
        (COMPLETE, {"prompt": "a", "user": "\ud800"}, "user"),
    ],
    ids=["prompt", "prompt-list", "chat-content", "chat-part", "chat-name", "stop", "user"],
)
def test_lone_surrogates_in_generation_requests_are_refused_naming_the_field(
    db_api: Api, path: str, body: dict[str, Any], param: str
) -> None:
    # json.dumps writes a lone surrogate as the escape \ud800, as any client would send it. A
    # field with a length bound is refused by pydantic's own check ("unable to parse raw data as
    # a unicode string"), the others by the request models' (a "lone surrogate ... not valid
    # Unicode text"): either way a 400 naming the field.
    content = json.dumps({"model": "tiny-llama", "max_tokens": 2, **body}).encode()
    assert_error(_post(db_api, path, content), 400, param=param, mentions=("unicode",))


# -- NUL characters and ids the database cannot hold ----------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/fine_tuning/jobs/ftjob-a%00b",
        "/v1/fine_tuning/jobs/ftjob-a%00b/events",
        "/v1/fine_tuning/jobs/ftjob-a%00b/checkpoints",
        "/v1/fine_tuning/jobs/ftjob-a%00b/metrics",
        "/v1/files/file-a%00b",
        "/v1/files/file-a%00b/content",
        "/v1/adapters/adapter-a%00b",
        "/v1/adapters/name%00@1",
        "/v1/admin/tenants/tenant-a%00b",
    ],
)
def test_a_nul_in_a_path_id_is_a_client_error(db_api: Api, path: str) -> None:
    error = assert_client_error(_get(db_api, path))
    assert error["code"] in ("not_found", "invalid_value"), error


@pytest.mark.parametrize(
    "path",
    ["/v1/fine_tuning/jobs", "/v1/files", "/v1/adapters", "/v1/fine_tuning/jobs/{job}/events"],
)
def test_a_nul_in_a_cursor_is_a_client_error(db_api: Api, db_file: str, path: str) -> None:
    if "{job}" in path:
        job = _post(db_api, JOBS, _job(db_file)).json()["id"]
        path = path.format(job=job)
    assert_client_error(_get(db_api, path, after="ftjob-a\u0000b"))


def test_nul_in_a_path_id_of_a_write_is_a_client_error(db_api: Api) -> None:
    for response in (
        db_api.client.post("/v1/fine_tuning/jobs/ftjob-a%00b/cancel"),
        db_api.client.delete("/v1/files/file-a%00b"),
        db_api.client.delete("/v1/adapters/adapter-a%00b"),
        db_api.client.delete("/v1/admin/api_keys/key-a%00b"),
        db_api.client.patch("/v1/admin/tenants/t%00", json={"max_concurrent_jobs": 2}),
        db_api.client.post("/v1/admin/tenants/t%00/api_keys", json={}),
    ):
        assert_client_error(response)


@pytest.mark.parametrize(
    ("field", "param"),
    [("training_file", "training_file"), ("validation_file", "validation_file")],
)
def test_nul_in_a_file_id_of_a_job_is_refused_naming_it(
    db_api: Api, db_file: str, field: str, param: str
) -> None:
    body = {"model": "tiny-llama", "training_file": db_file, field: "file-a\u0000b"}
    assert_error(_post(db_api, JOBS, json.dumps(body).encode()), 400, param=param)


def test_nul_in_admin_names_is_refused_naming_it(db_api: Api) -> None:
    response = _post(db_api, "/v1/admin/tenants", json.dumps({"name": "a\u0000b"}).encode())
    assert_error(response, 400, param="name")
    tenant = _post(db_api, "/v1/admin/tenants", json.dumps({"name": "ok"}).encode()).json()
    response = _post(
        db_api,
        f"/v1/admin/tenants/{tenant['id']}/api_keys",
        json.dumps({"name": "k\u0000"}).encode(),
    )
    assert_error(response, 400, param="name")


def test_an_upload_named_with_a_nul_is_refused_and_leaves_no_bytes(db_api: Api) -> None:
    before, rows = _stored_files(db_api), db_api.get_json(FILES, limit=10000)["data"]
    response = multipart_upload(
        db_api, filename=b"a\x00b.jsonl", content=b'{"prompt": "nul", "completion": "x"}\n'
    )
    assert_error(response, 400, param="file", mentions=("nul",))
    assert _stored_files(db_api) == before  # no blob without a row, no temp file left
    assert db_api.get_json(FILES, limit=10000)["data"] == rows


# -- training data -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "where"),
    [
        (b'{"prompt": "\\ud800", "completion": "x"}', "line 1: prompt:"),
        (b'{"prompt": "x", "completion": "a\\udc00"}', "line 1: completion:"),
        (
            b'{"messages": [{"role": "user", "content": "hi"}, '
            b'{"role": "assistant", "content": "\\ud83d"}]}',
            "line 1: messages[1].content:",
        ),
        (b'{"instruction": "x", "input": "\\udfff", "output": "y"}', "line 1: input:"),
    ],
    ids=["prompt", "completion", "chat", "alpaca-input"],
)
def test_an_upload_with_a_lone_surrogate_names_its_line_and_field(
    db_api: Api, line: bytes, where: str
) -> None:
    body = db_api.upload_ok(line + b"\n")
    assert body["status"] == "error", body
    assert where in body["status_details"] and "surrogate" in body["status_details"], body


def test_an_upload_with_unprintable_keys_is_stored_with_its_error(db_api: Api) -> None:
    """The problem message quotes the line's keys; a NUL or a lone surrogate among them must not
    make the row itself unstorable (PostgreSQL text holds no NUL) or unanswerable (JSON)."""
    body = db_api.upload_ok(b'{"a\\u0000": 1, "b\\ud800": 2}\n')
    assert body["status"] == "error", body
    assert "line 1" in body["status_details"], body


# -- adapter names ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["adapter-x", "adapter-0123456789abcdef01234567"])
def test_a_suffix_that_reads_as_an_adapter_id_is_refused(
    db_api: Api, db_file: str, suffix: str
) -> None:
    response = _post(db_api, JOBS, _job(db_file, suffix=suffix))
    assert_error(response, 400, param="suffix", mentions=("adapter-",))


def test_a_suffix_like_adapter_without_the_dash_is_accepted(db_api: Api, db_file: str) -> None:
    response = _post(db_api, JOBS, _job(db_file, suffix="adapters"))
    assert response.status_code == 200, response.text
