"""API keys and tenants (STEER_AUTH=on): 401 without a key, admin-only routes, isolation."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import httpx

from tests.api.helpers import FILES, JOBS, VALID_JSONL, Api, assert_error
from tests.service.harness import ROOT

ADMIN = "adm-test-0123456789"


def _as(api: Api, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=api.base_url, headers=headers, timeout=30)


def _tenant_key(admin: httpx.Client, name: str) -> str:
    tenant = admin.post("/v1/admin/tenants", json={"name": name}).json()
    created = admin.post(f"/v1/admin/tenants/{tenant['id']}/api_keys", json={"name": "k"})
    assert created.status_code == 200, created.text
    return created.json()["key"]


def test_requests_need_a_valid_key(make_api: Callable[..., Api]) -> None:
    api = make_api(auth="on", admin_key=ADMIN)
    with _as(api, None) as anonymous, _as(api, "sk-steer-wrong") as wrong:
        assert_error(anonymous.get(FILES), 401, code="invalid_api_key")
        assert_error(wrong.get(JOBS), 401, code="invalid_api_key")
        assert anonymous.get("/health").status_code == 200  # probes need no key
    with _as(api, ADMIN) as admin:
        assert admin.get(FILES).status_code == 200


def test_admin_creates_tenants_and_keys_others_cannot(make_api: Callable[..., Api]) -> None:
    api = make_api(auth="on", admin_key=ADMIN)
    with _as(api, ADMIN) as admin:
        key = _tenant_key(admin, "acme")
        assert key.startswith("sk-steer-")
    with _as(api, key) as tenant:
        assert tenant.get(FILES).json()["data"] == []
        assert_error(tenant.post("/v1/admin/tenants", json={"name": "x"}), 403, code="forbidden")


def test_a_tenant_sees_only_its_own_data(make_api: Callable[..., Api]) -> None:
    api = make_api(auth="on", admin_key=ADMIN)
    with _as(api, ADMIN) as admin:
        key_a, key_b = _tenant_key(admin, "a"), _tenant_key(admin, "b")
    with _as(api, key_a) as a, _as(api, key_b) as b:
        file = a.post(
            FILES, data={"purpose": "fine-tune"}, files={"file": ("t.jsonl", VALID_JSONL)}
        ).json()
        job = a.post(JOBS, json={"model": "tiny-llama", "training_file": file["id"]}).json()
        for path in (
            f"{FILES}/{file['id']}",
            f"{FILES}/{file['id']}/content",
            f"{JOBS}/{job['id']}",
            f"{JOBS}/{job['id']}/events",
            f"{JOBS}/{job['id']}/checkpoints",
        ):
            assert_error(b.get(path), 404, code="not_found")
            assert a.get(path).status_code == 200, path
        assert_error(b.post(f"{JOBS}/{job['id']}/cancel"), 404, code="not_found")
        assert_error(b.delete(f"{FILES}/{file['id']}"), 404, code="not_found")
        stolen = b.post(JOBS, json={"model": "tiny-llama", "training_file": file["id"]})
        assert_error(stolen, 400, param="training_file")
        assert b.get(FILES).json()["data"] == [] and b.get(JOBS).json()["data"] == []
        assert [f["id"] for f in a.get(FILES).json()["data"]] == [file["id"]]


def test_revoked_key_stops_working(make_api: Callable[..., Api]) -> None:
    api = make_api(auth="on", admin_key=ADMIN)
    with _as(api, ADMIN) as admin:
        tenant = admin.post("/v1/admin/tenants", json={"name": "t"}).json()
        created = admin.post(f"/v1/admin/tenants/{tenant['id']}/api_keys", json={}).json()
        with _as(api, created["key"]) as client:
            assert client.get(FILES).status_code == 200
            assert admin.delete(f"/v1/admin/api_keys/{created['id']}").status_code == 200
            assert_error(client.get(FILES), 401, code="invalid_api_key")


def test_keys_are_stored_hashed(make_api: Callable[..., Api]) -> None:
    api = make_api(auth="on", admin_key=ADMIN)
    with _as(api, ADMIN) as admin:
        key = _tenant_key(admin, "hashed")
    database = api.settings.resolved_database_url.removeprefix("sqlite:///")
    assert key.encode() not in open(database, "rb").read()  # noqa: SIM115


def test_steer_api_refuses_a_public_address_without_auth(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "steer.cli", "api", "--host", "0.0.0.0", "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "STEER_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert result.returncode != 0
    assert "refusing to listen on 0.0.0.0 with STEER_AUTH=off" in result.stderr
