"""``GET /metrics`` needs an admin key when ``STEER_AUTH=on`` (it shows every tenant's job
figures); with auth off it is open, like every route."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.api.helpers import Api, assert_error

ADMIN = "adm-metrics-test-0123456789"


def _get(api: Api, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{api.base_url}/metrics", headers=headers, timeout=30)


def test_metrics_need_an_admin_key_with_auth_on(make_api: Callable[..., Api]) -> None:
    api = make_api(auth="on", admin_key=ADMIN)
    assert_error(_get(api, None), 401, code="invalid_api_key")
    assert_error(_get(api, "sk-steer-wrong"), 401, code="invalid_api_key")
    with httpx.Client(
        base_url=api.base_url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
    ) as admin:
        tenant = admin.post("/v1/admin/tenants", json={"name": "t"}).json()
        key = admin.post(f"/v1/admin/tenants/{tenant['id']}/api_keys", json={}).json()["key"]
    assert_error(_get(api, key), 403, code="forbidden")
    answer = _get(api, ADMIN)
    assert answer.status_code == 200
    assert "steer_jobs" in answer.text


def test_metrics_are_open_with_auth_off(api: Api) -> None:
    answer = _get(api, None)
    assert answer.status_code == 200
    assert "steer_jobs" in answer.text
