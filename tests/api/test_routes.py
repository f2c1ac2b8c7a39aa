"""Adapters, models, health, documentation, and requests for routes that do not exist."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.api.helpers import Api, assert_error

# -- adapters -------------------------------------------------------------------------------------


def test_no_adapters_yet(shared_api: Api) -> None:
    body = shared_api.get_json("/v1/adapters")
    assert body["object"] == "list"
    assert body["data"] == []
    assert body["has_more"] is False


@pytest.mark.parametrize(
    "reference",
    ["adapter-nope", "name@1", "name", "name@x", "name@", "name@-1", "%E2%98%83@1"],
)
def test_unknown_adapter_is_404_everywhere(shared_api: Api, reference: str) -> None:
    client = shared_api.client
    for response in (
        client.get(f"/v1/adapters/{reference}"),
        client.get(f"/v1/adapters/{reference}/content"),
        client.get(f"/v1/adapters/{reference}/content", params={"file": "adapter.safetensors"}),
        client.delete(f"/v1/adapters/{reference}"),
    ):
        assert_error(response, 404, code="not_found", mentions=("adapter",))


@pytest.mark.parametrize(
    ("params", "status", "param"),
    [({"limit": 0}, 400, "limit"), ({"limit": 101}, 400, "limit"), ({"after": "x@1"}, 404, None)],
    ids=["limit-0", "limit-101", "after-unknown"],
)
def test_list_adapters_bad_parameters(
    shared_api: Api, params: dict[str, str | int], status: int, param: str | None
) -> None:
    assert_error(shared_api.client.get("/v1/adapters", params=params), status, param=param)


# -- models ---------------------------------------------------------------------------------------


def test_models_lists_the_configured_base_models(shared_api: Api) -> None:
    body = shared_api.get_json("/v1/models")
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == shared_api.settings.models
    for model in body["data"]:
        assert model == {
            "object": "model",
            "id": model["id"],
            "created": 0,
            "owned_by": "system",
            "kind": "base",
            "name": None,
            "base_model": None,
            "method": None,
        }
    assert "tiny-llama" in [m["id"] for m in body["data"]]


def test_models_follow_the_settings(make_api: Callable[..., Api]) -> None:
    custom = make_api(models=["tiny-llama"])
    assert [m["id"] for m in custom.get_json("/v1/models")["data"]] == ["tiny-llama"]
    file_id = custom.upload_ok()["id"]
    response = custom.create_job({"model": "tiny-gemma3_text", "training_file": file_id})
    assert_error(response, 400, param="model", code="model_not_found")


# -- operations -----------------------------------------------------------------------------------


def test_health(shared_api: Api) -> None:
    response = shared_api.client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_docs_and_openapi(shared_api: Api) -> None:
    docs = shared_api.client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    spec = shared_api.client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    for path in (
        "/v1/files",
        "/v1/files/{file_id}",
        "/v1/files/{file_id}/content",
        "/v1/fine_tuning/jobs",
        "/v1/fine_tuning/jobs/{job_id}",
        "/v1/fine_tuning/jobs/{job_id}/cancel",
        "/v1/fine_tuning/jobs/{job_id}/pause",
        "/v1/fine_tuning/jobs/{job_id}/resume",
        "/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint}/content",
        "/v1/fine_tuning/jobs/{job_id}/events",
        "/v1/fine_tuning/jobs/{job_id}/checkpoints",
        "/v1/adapters",
        "/v1/models",
        "/health",
    ):
        assert path in paths, path


@pytest.mark.parametrize("path", ["/nope", "/v1", "/v1/fine_tuning", "/v1/files/a/b/c"])
def test_unknown_path_is_404_envelope(shared_api: Api, path: str) -> None:
    assert_error(shared_api.client.get(path), 404, code="not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/files"),
        ("POST", "/v1/models"),
        ("DELETE", "/v1/fine_tuning/jobs"),
        ("GET", "/v1/fine_tuning/jobs/ftjob-x/cancel"),
        ("PATCH", "/v1/adapters/adapter-x"),
    ],
)
def test_wrong_method_is_405_envelope(shared_api: Api, method: str, path: str) -> None:
    assert_error(shared_api.client.request(method, path), 405)
