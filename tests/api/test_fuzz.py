"""Cheap fuzzing of POST /v1/fine_tuning/jobs: hand-made malformed bodies, and every field of a
full valid body replaced by values of the wrong kind; then NUL characters and lone surrogates in
every string field of every request and in every path id, on SQLite and PostgreSQL. Each answer
must be a 200 or a 4xx with the error envelope; never a 5xx, never a 422."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
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

FILE = "$FILE"


def _deep_object(depth: int) -> bytes:
    return b'{"a":' * depth + b"{}" + b"}" * depth


def _deep_array(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _raw(fields: bytes | str) -> bytes:
    """A body with a valid model and training file plus ``fields`` (raw JSON text)."""
    if isinstance(fields, str):
        fields = fields.encode()
    return b'{"model": "tiny-llama", "training_file": "$FILE", ' + fields + b"}"


def _block(inner: bytes | str) -> bytes:
    """A body whose post_block method block is ``inner`` (raw JSON text)."""
    if isinstance(inner, str):
        inner = inner.encode()
    return _raw(b'"method": {"type": "post_block", "post_block": ' + inner + b"}")


BIG = "1" + "0" * 400

MALFORMED: list[tuple[str, bytes]] = [
    ("null-everything", b'{"model": null, "training_file": null, "method": null}'),
    ("nested-nulls", _block('{"site": {"name": null}}')),
    ("null-layers-item", _block('{"site": {"layers": [null]}}')),
    ("rank-float", _block('{"adapter": {"rank": 4.5}}')),
    ("rank-bool", _block('{"adapter": {"rank": true}}')),
    ("rank-huge", _block('{"adapter": {"rank": ' + BIG + "}}")),
    ("layers-huge", _block('{"site": {"layers": [' + BIG + "]}}")),
    ("seed-huge", _raw('"seed": 1' + "0" * 4000)),
    ("seed-float-overflow", _raw('"seed": 1e999')),
    ("seed-nan", _raw('"seed": NaN')),
    ("lr-infinity", _block('{"hyperparameters": {"learning_rate": Infinity}}')),
    ("lr-string", _block('{"hyperparameters": {"learning_rate": "1e-3x"}}')),
    ("warmup-below-zero", _block('{"hyperparameters": {"warmup_ratio": -1e-300}}')),
    ("unicode-model", '{"model": "tïny-llämä☃", "training_file": "$FILE"}'.encode()),
    ("nul-in-model", b'{"model": "tiny-llama\\u0000", "training_file": "$FILE"}'),
    ("lone-surrogate", b'{"model": "\\ud800", "training_file": "$FILE"}'),
    ("raw-surrogate-bytes", b'{"model": "\xed\xa0\x80", "training_file": "$FILE"}'),
    ("latin1-bytes", _raw(b'"suffix": "\xe9"')),
    ("rtl-suffix", _raw('"suffix": "\u202eevil"')),
    ("emoji-metadata-key", _raw('"metadata": {"\U0001f600": 1}')),
    ("unicode-method-type", _raw('"method": {"type": "p\u043est_block"}')),
    ("deep-metadata", _raw(b'"metadata": ' + _deep_object(3000))),
    ("deep-block", _block(_deep_object(3000))),
    ("deep-site", _block(b'{"site": ' + _deep_object(3000) + b"}")),
    ("deep-hyperparameters", _raw(b'"hyperparameters": ' + _deep_object(3000))),
    ("deep-integrations", _raw(b'"integrations": ' + _deep_array(5000))),
    ("deep-array-body", _deep_array(100_000)),
    ("moderately-deep-site", _block(b'{"site": ' + _deep_object(50) + b"}")),
    ("moderately-deep-metadata", _raw(b'"metadata": ' + _deep_object(50))),
    ("method-array", _raw('"method": [{"type": "post_block"}]')),
    ("hyperparameters-array", _raw('"hyperparameters": [{"n_epochs": 1}]')),
    ("metadata-array", _raw('"metadata": [["k", "v"]]')),
    ("block-array", _raw('"method": {"type": "joint", "joint": [1, 2]}')),
    ("lora-null", _raw('"method": {"type": "joint", "joint": {"lora": null}}')),
    ("orthogonality-string", _raw('"method": {"type": "joint", "joint": {"orthogonality": "on"}}')),
    (
        "target-modules-numbers",
        _raw('"method": {"type": "lora", "lora": {"lora": {"target_modules": [1]}}}'),
    ),
    (
        "duplicate-keys",
        b'{"model": "x", "model": "tiny-llama", "training_file": "$FILE", "seed": -5}',
    ),
    ("trailing-garbage", _raw('"seed": 1') + b" garbage"),
    ("two-documents", _raw('"seed": 1') + _raw('"seed": 2')),
    ("bom", b"\xef\xbb\xbf" + _raw('"seed": "x"')),
    ("big-string-model", b'{"model": "' + b"m" * 1_000_000 + b'", "training_file": "$FILE"}'),
]
KNOWN: dict[str, pytest.MarkDecorator] = {}  # case -> a mark (xfail) for a known bug


@pytest.mark.parametrize(
    "content", [pytest.param(c, id=case, marks=KNOWN.get(case, ())) for case, c in MALFORMED]
)
def test_malformed_body_is_a_4xx_envelope(
    shared_api: Api, shared_file: str, content: bytes
) -> None:
    response = shared_api.post_raw(JOBS, content.replace(b"$FILE", shared_file.encode()))
    assert_client_error(response)


# -- every field of a valid body, replaced by something of the wrong kind -------------------------

VALID_BODY: dict[str, Any] = {
    "model": "tiny-llama",
    "training_file": FILE,
    "validation_file": FILE,
    "suffix": "fuzz",
    "seed": 1,
    "metadata": {"k": "v"},
    "gpus": 0,
    "integrations": [],
    "hyperparameters": {"n_epochs": 1, "batch_size": "auto"},
    "method": {
        "type": "joint",
        "joint": {
            "hyperparameters": {
                "learning_rate": 1e-4,
                "n_epochs": 1,
                "batch_size": 2,
                "warmup_ratio": 0.1,
                "lr_scheduler": "cosine",
                "steering_learning_rate": 1e-3,
                "max_steps": 3,
                "group_by_length": True,
            },
            "site": {"name": "block_output", "layers": [0, 1]},
            "adapter": {"kind": "linear", "rank": 4, "activation": "relu", "init_scale": 0.01},
            "lora": {"rank": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj"]},
            "orthogonality": {"every_n_steps": 5, "side": "output"},
        },
    },
}

WRONG_VALUES: list[tuple[str, Any]] = [
    ("null", None),
    ("empty-list", []),
    ("list", [1, "a", None]),
    ("empty-object", {}),
    ("object", {"x": {"y": [1]}}),
    ("empty-string", ""),
    ("unicode", "\u2603\u0000\U0001f600"),
    ("negative", -1),
    ("huge-int", 10**40),
    ("huge-float", 1.7e308),
    ("tiny-float", 5e-324),
    ("true", True),
    ("false", False),
    ("nested", [[[[[]]]]]),
]

# Known bug (see test_jobs_create.py): a method block's "hyperparameters" that is not an object.
KNOWN_500_PATH = ("method", "joint", "hyperparameters")


def _paths(value: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if prefix:
        yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))


def _replace(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    mutated = copy.deepcopy(body)
    target = mutated
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return mutated


def _with_file(body: dict[str, Any], file_id: str) -> bytes:
    return json.dumps(body).replace(f'"{FILE}"', json.dumps(file_id)).encode()


def _is_known_500(path: tuple[str, ...], value: Any) -> bool:
    return path == KNOWN_500_PATH and not isinstance(value, dict) and bool(value)


FIELD_PATHS = list(_paths(VALID_BODY))


def test_the_valid_body_is_valid(shared_api: Api, shared_file: str) -> None:
    response = shared_api.post_raw(JOBS, _with_file(VALID_BODY, shared_file))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", FIELD_PATHS, ids=[".".join(p) for p in FIELD_PATHS])
def test_every_field_with_wrong_values(
    shared_api: Api, shared_file: str, path: tuple[str, ...]
) -> None:
    failures: list[str] = []
    for name, value in WRONG_VALUES:
        if _is_known_500(path, value):
            continue
        response = shared_api.post_raw(
            JOBS, _with_file(_replace(VALID_BODY, path, value), shared_file)
        )
        if response.status_code == 200:
            continue
        try:
            assert_client_error(response)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("path", FIELD_PATHS, ids=[".".join(p) for p in FIELD_PATHS])
def test_every_field_removed(shared_api: Api, shared_file: str, path: tuple[str, ...]) -> None:
    mutated = copy.deepcopy(VALID_BODY)
    target = mutated
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    response = shared_api.post_raw(JOBS, _with_file(mutated, shared_file))
    if response.status_code != 200:
        assert_client_error(response)
    if path in (("model",), ("training_file",), ("method", "type")):
        assert response.status_code == 400, response.text


def test_fuzz_block_hyperparameters(shared_api: Api, shared_file: str) -> None:
    statuses = {
        name: shared_api.post_raw(
            JOBS, _with_file(_replace(VALID_BODY, KNOWN_500_PATH, value), shared_file)
        ).status_code
        for name, value in WRONG_VALUES
        if _is_known_500(KNOWN_500_PATH, value)
    }
    assert all(400 <= s < 500 for s in statuses.values()), statuses


# -- NUL and lone surrogates in every string field and path id, on both databases ---------------
# PostgreSQL text cannot hold a NUL (the driver refused it and the API answered 503, "database
# unavailable"); a lone surrogate cannot be encoded at all (tokenizer, driver and JSON response
# failed with a 500).

BAD_TEXT: list[tuple[str, str]] = [("nul", "a\u0000b"), ("lone-surrogate", "a\ud800b")]
BAD_PATH_TEXT: list[tuple[str, str]] = [("nul", "a%00b"), ("surrogate-bytes", "a%ED%A0%80b")]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def db_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Api]:
    with running_api(tmp_path_factory.mktemp(f"fuzz-{request.param}"), request.param) as handle:
        yield handle


@pytest.fixture(scope="module")
def db_file(db_api: Api) -> str:
    return str(db_api.upload_ok()["id"])


def _no_server_error(response: httpx.Response, what: str) -> str | None:
    """None when the answer is a 200 or a 4xx envelope; else what went wrong."""
    if response.status_code == 200:
        return None
    try:
        assert_client_error(response)
    except AssertionError as exc:
        return f"{what}: {exc}"
    return None


def _string_paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths to every string in ``value`` (dict keys as ``("key", k)``, list items by index)."""
    if isinstance(value, str):
        yield prefix
    elif isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, ("key", key))
            yield from _string_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _string_paths(child, (*prefix, index))


def _with_text(body: Any, path: tuple[Any, ...], text: str) -> Any:
    mutated = copy.deepcopy(body)
    *parents, last = path
    target = mutated
    for key in parents:
        target = target[key]
    if isinstance(last, tuple):  # a dict key
        target[text] = target.pop(last[1])
    else:
        target[last] = text
    return mutated


def _post_json(api: Api, path: str, body: Any) -> httpx.Response:
    return api.post_raw(path, json.dumps(body).encode())


def _strings_of(body: Any) -> list[tuple[Any, ...]]:
    return list(_string_paths(body))


JOB_TEXT_PATHS = _strings_of(VALID_BODY)


@pytest.mark.parametrize(
    "path", JOB_TEXT_PATHS, ids=[".".join(map(str, p)) for p in JOB_TEXT_PATHS]
)
def test_bad_text_in_every_job_string(db_api: Api, db_file: str, path: tuple[Any, ...]) -> None:
    failures = []
    for name, text in BAD_TEXT:
        body = json.loads(_with_file(_with_text(VALID_BODY, path, text), db_file))
        failures.append(_no_server_error(_post_json(db_api, JOBS, body), name))
    assert not any(failures), failures


GENERATION_BODIES: list[tuple[str, dict[str, Any]]] = [
    (
        "/v1/completions",
        {"model": "tiny-llama", "prompt": "hi", "max_tokens": 1, "stop": ["x"], "user": "u"},
    ),
    (
        "/v1/chat/completions",
        {
            "model": "tiny-llama",
            "max_tokens": 1,
            "stop": "x",
            "user": "u",
            "messages": [
                {"role": "system", "content": "be brief", "name": "n"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ],
        },
    ),
]
GENERATION_CASES = [
    (route, body, path) for route, body in GENERATION_BODIES for path in _strings_of(body)
]


@pytest.mark.parametrize(
    ("route", "body", "path"),
    GENERATION_CASES,
    ids=[f"{r.removeprefix('/v1/')}:{'.'.join(map(str, p))}" for r, _, p in GENERATION_CASES],
)
def test_bad_text_in_every_generation_string(
    db_api: Api, route: str, body: dict[str, Any], path: tuple[Any, ...]
) -> None:
    failures = [
        _no_server_error(_post_json(db_api, route, _with_text(body, path, text)), name)
        for name, text in BAD_TEXT
    ]
    assert not any(failures), failures


def test_bad_text_in_admin_bodies(db_api: Api) -> None:
    tenant = _post_json(db_api, "/v1/admin/tenants", {"name": "fuzz"}).json()["id"]
    failures = []
    for name, text in BAD_TEXT:
        failures += [
            _no_server_error(_post_json(db_api, "/v1/admin/tenants", {"name": text}), name),
            _no_server_error(
                _post_json(db_api, f"/v1/admin/tenants/{tenant}/api_keys", {"name": text}), name
            ),
        ]
    assert not any(failures), failures


RAW_BAD_TEXT: list[tuple[str, bytes]] = [("nul", b"a\x00b"), ("surrogate-bytes", b"a\xed\xa0\x80b")]


def test_bad_text_in_every_upload_field(db_api: Api) -> None:
    failures = []
    for name, raw in RAW_BAD_TEXT:
        for what, response in [
            ("purpose", multipart_upload(db_api, filename=b"f.jsonl", purpose=raw)),
            ("filename", multipart_upload(db_api, filename=raw)),
        ]:
            failures.append(_no_server_error(response, f"{name} {what}"))
    for name, text in BAD_TEXT:
        line = json.dumps({"prompt": text, "completion": text}).encode() + b"\n"
        chat = {
            "messages": [{"role": text, "content": text}, {"role": "assistant", "content": text}]
        }
        for what, response in [
            ("content", db_api.upload(line)),
            ("chat", db_api.upload(json.dumps(chat).encode())),
            ("key", db_api.upload(json.dumps({text: "x"}).encode())),
        ]:
            failures.append(_no_server_error(response, f"{name} {what}"))
    assert not any(failures), failures


PATH_ROUTES: list[tuple[str, str]] = [
    ("GET", "/v1/fine_tuning/jobs/{id}"),
    ("POST", "/v1/fine_tuning/jobs/{id}/cancel"),
    ("POST", "/v1/fine_tuning/jobs/{id}/pause"),
    ("POST", "/v1/fine_tuning/jobs/{id}/resume"),
    ("GET", "/v1/fine_tuning/jobs/{id}/checkpoints/{id}:ckpt-step-1/content"),
    ("GET", "/v1/fine_tuning/jobs/{id}/events"),
    ("GET", "/v1/fine_tuning/jobs/{id}/checkpoints"),
    ("GET", "/v1/fine_tuning/jobs/{id}/metrics"),
    ("GET", "/v1/files/{id}"),
    ("GET", "/v1/files/{id}/content"),
    ("DELETE", "/v1/files/{id}"),
    ("GET", "/v1/adapters/{id}"),
    ("GET", "/v1/adapters/{id}/content"),
    ("GET", "/v1/adapters/{id}/layers"),
    ("GET", "/v1/adapters/{id}/export?format=layer_tensors"),
    ("DELETE", "/v1/adapters/{id}"),
    ("GET", "/v1/admin/tenants/{id}"),
    ("PATCH", "/v1/admin/tenants/{id}"),
    ("POST", "/v1/admin/tenants/{id}/api_keys"),
    ("DELETE", "/v1/admin/api_keys/{id}"),
    ("GET", "/v1/fine_tuning/jobs?after={id}"),
    ("GET", "/v1/files?after={id}"),
    ("GET", "/v1/files?purpose={id}"),
    ("GET", "/v1/adapters?after={id}"),
    ("GET", "/v1/adapters/x@1/content?file={id}"),
    ("GET", "/v1/adapters/x/export?format={id}"),
]
PREFIXES = ["ftjob-", "file-", "adapter-", "name@", "tenant-", "key-", ""]


@pytest.mark.parametrize(("method", "route"), PATH_ROUTES, ids=[f"{m} {r}" for m, r in PATH_ROUTES])
def test_bad_text_in_every_path_id(db_api: Api, method: str, route: str) -> None:
    failures = []
    body = {} if method in ("PATCH", "POST") else None
    for name, text in BAD_PATH_TEXT:
        for prefix in PREFIXES:
            url = route.replace("{id}", prefix + text)
            response = db_api.client.request(
                method, url, json=body, headers={"connection": "close"}
            )
            failures.append(_no_server_error(response, f"{name} {url}"))
    assert not any(failures), [f for f in failures if f]


# -- oversized and unauthenticated bodies: refused before they are read, never a 5xx --------------

MIB = 1 << 20
OVERSIZED_JSON = b'{"model": "' + b"m" * (5 * MIB) + b'"}'  # past STEER_MAX_JSON_BODY_BYTES (4 MiB)
JSON_BODY_ROUTES = [
    JOBS,
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/admin/tenants",
]
ADMIN_KEY = "adm-fuzz-0123456789"


def _sent(content: bytes, chunked: bool) -> bytes | Iterator[bytes]:
    if not chunked:
        return content
    return iter([content[i : i + MIB] for i in range(0, len(content), MIB)])


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", JSON_BODY_ROUTES)
def test_an_oversized_json_body_is_a_413(shared_api: Api, path: str, chunked: bool) -> None:
    response = shared_api.client.post(
        path,
        content=_sent(OVERSIZED_JSON, chunked),
        headers={"content-type": "application/json", "connection": "close"},
    )
    assert response.status_code == 413, response.text
    assert_client_error(response)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_upload_is_a_413(make_api: Callable[..., Api], chunked: bool) -> None:
    api = make_api(max_upload_bytes=1024)
    boundary = "fuzz-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n'
    ).encode() + b'{"prompt": "a", "completion": "b"}\n' * 10_000
    response = api.client.post(
        FILES,
        content=_sent(body + f"\r\n--{boundary}--\r\n".encode(), chunked),
        headers={
            "content-type": f"multipart/form-data; boundary={boundary}",
            "connection": "close",
        },
    )
    assert response.status_code == 413, response.text
    assert_client_error(response)


UNAUTHENTICATED: dict[str, dict[str, str | bytes]] = {
    "no-header": {},
    "wrong-key": {"authorization": "Bearer sk-steer-wrong"},
    "bearer-without-key": {"authorization": "Bearer"},
    "basic": {"authorization": "Basic YWRtaW46YWRtaW4="},
    "non-ascii": {"authorization": "Bearer \u2603".encode() * 50},
}
BODIES = {
    "valid": b'{"model": "tiny-llama", "training_file": "file-x", "name": "t"}',
    "garbage": b"\x00\xff{not json",
    "oversized": OVERSIZED_JSON,
}


def _unauthenticated_cases() -> Iterator[tuple[str, str, dict[str, str | bytes], bytes, bool]]:
    routes = [("POST", path) for path in (*JSON_BODY_ROUTES, FILES, f"{JOBS}/ftjob-x/cancel")]
    routes += [("PATCH", "/v1/admin/tenants/tenant-x"), ("DELETE", f"{FILES}/file-x")]
    for method, path in routes:
        for auth in UNAUTHENTICATED.values():
            yield method, path, auth, BODIES["valid"], False
            yield method, path, auth, BODIES["garbage"], True
        for chunked in (False, True):  # refused (401) before its size is known (413)
            yield method, path, {}, BODIES["oversized"], chunked


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_unauthenticated_bodies_are_401s(make_api: Callable[..., Api], backend: str) -> None:
    api = make_api(backend, auth="on", admin_key=ADMIN_KEY)
    failures: list[str] = []
    with httpx.Client(base_url=api.base_url, timeout=30) as client:
        for method, path, auth, body, chunked in _unauthenticated_cases():
            headers = {"content-type": "application/json", "connection": "close", **auth}
            try:
                response = client.request(
                    method, path, content=_sent(body, chunked), headers=headers
                )
                assert_error(response, 401, code="invalid_api_key")
            except (AssertionError, httpx.TransportError) as exc:
                case = f"{method} {path} {auth} {body[:20]!r} chunked={chunked}"
                failures.append(f"{case}: {exc!r}"[:500])
    assert not failures, "\n".join(failures)
