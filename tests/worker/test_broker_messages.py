"""A queued job that nothing consumes keeps one message in the broker, not one more per
reconciler round; a message the broker lost is sent again. Real brokers: the embedded
filesystem one and Redis."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from registry.db import session_scope
from registry.jobs import get_job
from registry.settings import Settings
from tests.worker.helpers import queued_job
from worker.broker_messages import REDIS_UNACKED, waiting_job_ids
from worker.celery_app import enqueuer, make_celery
from worker.reconciler import reconcile_once

QUEUE = "gpu2"  # no worker here consumes it


@pytest.fixture(params=["filesystem", "redis"])
def settings(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> Iterator[Settings]:
    fields = {"data_dir": tmp_path, "database_url": db_url, "requeue_stale_after_seconds": 60.0}
    if request.param == "redis":
        db = random.randint(1, 15)
        client = redis.Redis(host="127.0.0.1", port=6379, db=db)
        client.flushdb()
        fields["broker_url"] = f"redis://127.0.0.1:6379/{db}"
        yield Settings(**fields)
        client.flushdb()
        client.close()
    else:
        settings = Settings(**fields)
        settings.ensure_dirs()
        yield settings


def _messages_of(settings: Settings, job_id: str) -> int:
    if settings.broker_url is None:
        folder = settings.broker_folder / "in"
        return sum(job_id in path.read_text(errors="replace") for path in folder.glob("*"))
    client = redis.Redis.from_url(settings.broker_url)
    found = sum(job_id.encode() in m for m in client.lrange(QUEUE, 0, -1))
    return found + sum(job_id.encode() in m for m in client.hvals(REDIS_UNACKED))


def _lose_messages(settings: Settings) -> None:
    if settings.broker_url is None:
        for path in (settings.broker_folder / "in").glob("*"):
            path.unlink()
    else:
        redis.Redis.from_url(settings.broker_url).flushdb()


def _go_stale(settings: Settings, job_id: str) -> None:
    with session_scope(settings.resolved_database_url) as session:
        get_job(session, job_id).enqueued_at = datetime.now(UTC) - timedelta(hours=1)


def test_one_message_waits_per_job_and_a_lost_one_is_sent_again(settings: Settings) -> None:
    url = settings.resolved_database_url
    job_id = queued_job(url, queue=QUEUE)
    enqueue = enqueuer(make_celery(settings))

    def waiting(jobs: list[tuple[str, str]]) -> set[str]:
        return waiting_job_ids(settings, jobs)

    _go_stale(settings, job_id)
    assert reconcile_once(settings, enqueue, waiting)["resent"] == [job_id]
    assert _messages_of(settings, job_id) == 1
    for _ in range(3):  # rounds while the message waits: nothing more is sent
        _go_stale(settings, job_id)
        assert reconcile_once(settings, enqueue, waiting)["resent"] == []
        assert _messages_of(settings, job_id) == 1

    _lose_messages(settings)  # a broker restart without persistence
    _go_stale(settings, job_id)
    assert reconcile_once(settings, enqueue, waiting)["resent"] == [job_id]
    assert _messages_of(settings, job_id) == 1
