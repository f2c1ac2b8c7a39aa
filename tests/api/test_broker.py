"""api.broker against a real Redis: job messages are sent without building a result backend,
from as many threads at once as the API admits, without waiting for each other's connection."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.broker import _client, enqueue_job
from registry.db import POOL_SIZE
from registry.settings import Settings
from tests.service.servers import PrivateRedis, private_redis


@pytest.fixture
def broker() -> Iterator[PrivateRedis]:
    with private_redis() as server:
        yield server


def test_concurrent_sends_all_arrive_and_build_no_result_backend(
    broker: PrivateRedis, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, broker_url=broker.url)
    start = threading.Barrier(POOL_SIZE)
    sent: list[bool] = []

    def send(i: int) -> None:
        start.wait()
        sent.append(enqueue_job(settings, f"ftjob-{i}", "cpu"))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(POOL_SIZE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sent == [True] * POOL_SIZE
    assert broker.queued_messages() == POOL_SIZE
    client = _client(settings.model_dump_json())
    # Building a backend scans every installed package's entry points: ~0.1 s per racing
    # request thread, which showed in the creation benchmark's p99 (benchmarks/service).
    assert client._backend is None
    # One broker connection per admitted request: none waits on another's.
    assert client.pool.limit == POOL_SIZE
