"""Bursts of concurrent requests on PostgreSQL: no deadlock, no connection churn.

The API used to run sync routes on anyio's 40 threads over a pool of 10 connections plus 20
overflow ones, admitting every request at once: each burst opened overflow connections (a
PostgreSQL backend each) and closed them again, and past ~70 requests in flight every thread
could block in a pool checkout while the requests holding connections waited for a thread (30 s
pool timeouts, then 500s). Now at most ``POOL_SIZE`` requests are inside the app at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from sqlalchemy import event

from registry.db import POOL_SIZE, get_engine, session_factory
from tests.api.helpers import Api


def test_one_session_factory_per_database(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    assert session_factory(url) is session_factory(url)


async def _burst(base_url: str, path: str, clients: int, rounds: int) -> list[int]:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        codes: list[int] = []
        for _ in range(rounds):
            answers = await asyncio.gather(*(client.get(path) for _ in range(clients)))
            codes += [answer.status_code for answer in answers]
        return codes


def test_bursts_do_not_open_connections_beyond_the_pool(make_api: Callable[..., Api]) -> None:
    api = make_api("postgres")
    job = api.job_ok()
    engine = get_engine(api.settings.resolved_database_url)
    opened: list[object] = []

    def count(connection: object, _record: object) -> None:
        opened.append(connection)

    event.listen(engine, "connect", count)
    try:
        codes = asyncio.run(_burst(api.base_url, f"/v1/fine_tuning/jobs/{job['id']}", 60, 5))
    finally:
        event.remove(engine, "connect", count)
    assert codes == [200] * 300
    # Before: 40 threads over 10 + 20 overflow connections, overflow reopened every burst.
    assert len(opened) <= POOL_SIZE, f"{len(opened)} connections opened for 5 bursts of 60"


def test_a_burst_far_beyond_the_pool_is_answered(make_api: Callable[..., Api]) -> None:
    api = make_api("postgres")
    job = api.job_ok()
    codes = asyncio.run(_burst(api.base_url, f"/v1/fine_tuning/jobs/{job['id']}", 200, 2))
    assert codes == [200] * 400
