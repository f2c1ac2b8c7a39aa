"""/v1/adapters with adapters registered straight into the registry (no worker runs here)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from typing import Any

from tests.api.helpers import Api, assert_error, register_adapter

FILES_OF_AN_ADAPTER = {
    "adapter.safetensors": b"\x00\x01weights" * 10,
    "adapter_config.json": b'{"rank": 4}',
    "nested/metrics.json": b'{"loss": 1.0}',
}


def _register(api: Api, name: str, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("files", FILES_OF_AN_ADAPTER)
    return register_adapter(api, name, **kwargs)


def test_registered_adapter_is_listed_and_retrieved(api: Api) -> None:
    row = _register(api, "mine")
    listed = api.get_json("/v1/adapters")
    assert [a["id"] for a in listed["data"]] == [row["id"]]
    adapter = listed["data"][0]
    assert adapter["object"] == "adapter"
    assert adapter["name"] == "mine"
    assert adapter["version"] == 1
    assert adapter["reference"] == "mine@1"
    assert adapter["base_model"] == "tiny-llama"
    assert adapter["sha256"] == row["sha256"]
    assert set(adapter["files"]) == set(FILES_OF_AN_ADAPTER)
    assert adapter["trainable_parameters"] == 1234
    for reference in (row["id"], "mine@1", "mine"):
        assert api.get_json(f"/v1/adapters/{reference}") == adapter


def test_versions_by_name(api: Api) -> None:
    first = _register(api, "mine")
    second = _register(api, "mine")
    assert (first["version"], second["version"]) == (1, 2)
    assert api.get_json("/v1/adapters/mine")["id"] == second["id"]  # latest
    assert api.get_json("/v1/adapters/mine@1")["id"] == first["id"]
    assert_error(api.client.get("/v1/adapters/mine@3"), 404, code="not_found")

    page = api.get_json("/v1/adapters", limit=1)
    assert [a["id"] for a in page["data"]] == [second["id"]]
    assert page["has_more"] is True
    rest = api.get_json("/v1/adapters", limit=1, after=second["id"])
    assert [a["id"] for a in rest["data"]] == [first["id"]]
    assert rest["has_more"] is False


def test_adapters_are_models(api: Api) -> None:
    row = _register(api, "mine")
    models = api.get_json("/v1/models")["data"]
    adapters = [m for m in models if m["kind"] == "adapter"]
    assert [m["id"] for m in adapters] == [row["id"]]
    assert adapters[0]["owned_by"] == "default"
    assert [m["id"] for m in models if m["kind"] == "base"] == api.settings.models


def test_adapter_content_archive(api: Api) -> None:
    row = _register(api, "mine")
    response = api.client.get(f"/v1/adapters/{row['id']}/content")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    assert response.headers["x-content-sha256"] == row["sha256"]
    assert "mine-v1.tar.gz" in response.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
        members = {
            m.name: archive.extractfile(m).read()  # type: ignore[union-attr]
            for m in archive.getmembers()
            if m.isfile()
        }
    assert members == {f"mine-v1/{name}": content for name, content in FILES_OF_AN_ADAPTER.items()}


def test_adapter_single_file(api: Api) -> None:
    row = _register(api, "mine")
    for name, content in FILES_OF_AN_ADAPTER.items():
        response = api.client.get("/v1/adapters/mine@1/content", params={"file": name})
        assert response.status_code == 200, response.text
        assert response.content == content
        assert response.headers["x-content-sha256"] == hashlib.sha256(content).hexdigest()
    for name in ("missing.bin", "../registry.db", "nested"):
        error = assert_error(
            api.client.get(f"/v1/adapters/{row['id']}/content", params={"file": name}),
            404,
            param="file",
            code="not_found",
        )
        assert "adapter.safetensors" in error["message"]  # lists the files there are


def test_corrupted_artifact_is_not_served(api: Api) -> None:
    row = _register(api, "mine")
    (api.settings.adapters_dir / row["storage"] / "adapter.safetensors").write_bytes(b"evil")
    for params in ({}, {"file": "adapter.safetensors"}):
        error = assert_error(
            api.client.get(f"/v1/adapters/{row['id']}/content", params=params),
            500,
            code="artifact_corrupted",
        )
        assert error["type"] == "server_error"
    # the artifact is verified as a whole: an intact file of it is refused too
    intact = api.client.get(
        f"/v1/adapters/{row['id']}/content", params={"file": "adapter_config.json"}
    )
    assert_error(intact, 500, code="artifact_corrupted")
    # a missing file is refused the same way
    (api.settings.adapters_dir / row["storage"] / "adapter.safetensors").unlink()
    missing = api.client.get(f"/v1/adapters/{row['id']}/content")
    assert_error(missing, 500, code="artifact_corrupted")


def test_delete_adapter(api: Api) -> None:
    row = _register(api, "mine")
    directory = api.settings.adapters_dir / row["storage"]
    response = api.client.delete("/v1/adapters/mine@1")
    assert response.status_code == 200, response.text
    assert response.json() == {"id": row["id"], "object": "adapter", "deleted": True}
    assert not directory.exists()
    assert_error(api.client.get(f"/v1/adapters/{row['id']}"), 404, code="not_found")
    assert_error(api.client.delete(f"/v1/adapters/{row['id']}"), 404, code="not_found")
    assert api.get_json("/v1/adapters")["data"] == []


def test_other_tenants_adapters_are_invisible(api: Api) -> None:
    theirs = _register(api, "theirs", tenant="someone-else")
    assert api.get_json("/v1/adapters")["data"] == []
    for reference in (theirs["id"], "theirs@1", "theirs"):
        assert_error(api.client.get(f"/v1/adapters/{reference}"), 404, code="not_found")
        assert_error(api.client.get(f"/v1/adapters/{reference}/content"), 404)
        assert_error(api.client.delete(f"/v1/adapters/{reference}"), 404)
    assert [m for m in api.get_json("/v1/models")["data"] if m["kind"] == "adapter"] == []
    assert (api.settings.adapters_dir / theirs["storage"]).is_dir()
