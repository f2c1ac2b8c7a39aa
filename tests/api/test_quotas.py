"""Per-tenant quotas over real HTTP: concurrent jobs (429), file size (400), both naming the
limit; nothing is stored by a refused request; admins set and clear them."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import (
    FILES,
    JOBS,
    PROMPT_COMPLETION_ROWS,
    VALID_JSONL,
    Api,
    assert_error,
    jsonl,
)

ADMIN = "adm-quota-0123456789"
ONE_ROW = jsonl(PROMPT_COMPLETION_ROWS[:1])


def _as(api: Api, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=api.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def _tenant(admin: httpx.Client, name: str, **quotas: int) -> tuple[str, str]:
    created = admin.post("/v1/admin/tenants", json={"name": name, **quotas})
    assert created.status_code == 200, created.text
    tenant = created.json()
    key = admin.post(f"/v1/admin/tenants/{tenant['id']}/api_keys", json={}).json()["key"]
    return tenant["id"], key


def _stored_files(api: Api) -> list[Path]:
    return [p for p in api.settings.files_dir.rglob("*") if p.is_file()]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_concurrent_jobs_quota_is_a_429_naming_the_limit(
    make_api: Callable[..., Api], backend: str
) -> None:
    api = make_api(backend, quota_max_concurrent_jobs=2)  # the service-wide default
    file_id = api.upload_ok()["id"]
    first, _second = api.job_ok(file_id), api.job_ok(file_id)
    refused = api.create_job({"model": "tiny-llama", "training_file": file_id})
    error = assert_error(refused, 429, code="quota_exceeded", mentions=("max_concurrent_jobs",))
    assert "2" in error["message"]
    assert len(api.get_json(JOBS)["data"]) == 2  # the refused request stored nothing
    # a finished (here: cancelled) job frees its slot
    assert api.client.post(f"{JOBS}/{first['id']}/cancel").status_code == 200
    assert api.job_ok(file_id)["status"] == "queued"


def test_racing_requests_cannot_overrun_the_quota_on_postgres(
    make_api: Callable[..., Api],
) -> None:
    api = make_api("postgres", quota_max_concurrent_jobs=3)
    file_id = api.upload_ok()["id"]

    def create(_: int) -> int:
        with httpx.Client(base_url=api.base_url, timeout=60) as client:
            body = {"model": "tiny-llama", "training_file": file_id}
            return client.post(JOBS, json=body).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        codes = list(pool.map(create, range(10)))
    assert sorted(codes) == [200] * 3 + [429] * 7, codes
    assert len(api.get_json(JOBS)["data"]) == 3


def test_tenant_quotas_apply_to_that_tenant_only(make_api: Callable[..., Api]) -> None:
    api = make_api(auth="on", admin_key=ADMIN)
    with _as(api, ADMIN) as admin:
        small_id, small_key = _tenant(admin, "small", max_file_bytes=100, max_concurrent_jobs=1)
        _, big_key = _tenant(admin, "big")
    big_file = b"".join([VALID_JSONL] * 3)
    assert len(big_file) > 100
    with _as(api, small_key) as small, _as(api, big_key) as big:
        refused = small.post(
            FILES, data={"purpose": "fine-tune"}, files={"file": ("t.jsonl", big_file)}
        )
        error = assert_error(refused, 400, code="quota_exceeded", param="file")
        assert "max_file_bytes" in error["message"] and "100 bytes" in error["message"]
        assert small.get(FILES).json()["data"] == []
        assert _stored_files(api) == []  # no spooled leftovers either

        ok = big.post(FILES, data={"purpose": "fine-tune"}, files={"file": ("t.jsonl", big_file)})
        assert ok.status_code == 200, ok.text
        big_id = ok.json()["id"]
        for _ in range(2):  # no concurrency limit for this tenant
            created = big.post(JOBS, json={"model": "tiny-llama", "training_file": big_id})
            assert created.status_code == 200

        tiny = small.post(
            FILES, data={"purpose": "fine-tune"}, files={"file": ("t.jsonl", ONE_ROW)}
        )
        assert tiny.status_code == 200, tiny.text
        body = {"model": "tiny-llama", "training_file": tiny.json()["id"]}
        assert small.post(JOBS, json=body).status_code == 200
        assert_error(small.post(JOBS, json=body), 429, code="quota_exceeded")

    with _as(api, ADMIN) as admin:  # the admin lifts one limit; the other stays
        patched = admin.patch(f"/v1/admin/tenants/{small_id}", json={"max_concurrent_jobs": None})
        assert patched.status_code == 200, patched.text
        assert patched.json()["quotas"] == {
            "max_concurrent_jobs": None,
            "max_file_bytes": 100,
            "max_training_tokens": None,
        }
        assert admin.get(f"/v1/admin/tenants/{small_id}").json()["quotas"]["max_file_bytes"] == 100
    with _as(api, small_key) as small:
        assert small.post(JOBS, json=body).status_code == 200


def test_quota_administration_rejects_bad_values(make_api: Callable[..., Api]) -> None:
    api = make_api(auth="on", admin_key=ADMIN)
    with _as(api, ADMIN) as admin:
        tenant_id, key = _tenant(admin, "t")
        for body, param in (
            ({"max_concurrent_jobs": 0}, "max_concurrent_jobs"),
            ({"max_file_bytes": -5}, "max_file_bytes"),
            ({"max_training_tokens": "lots"}, "max_training_tokens"),
            ({"max_gpus": 3}, "max_gpus"),
        ):
            assert_error(admin.patch(f"/v1/admin/tenants/{tenant_id}", json=body), 400, param=param)
        assert_error(
            admin.patch("/v1/admin/tenants/tenant-nope", json={"max_file_bytes": 5}),
            404,
            code="not_found",
        )
        unchanged = admin.get(f"/v1/admin/tenants/{tenant_id}").json()["quotas"]
        assert set(unchanged.values()) == {None}
    with _as(api, key) as tenant:
        assert_error(
            tenant.patch(f"/v1/admin/tenants/{tenant_id}", json={"max_file_bytes": 10**12}),
            403,
            code="forbidden",
        )
