"""Which jobs still have a message waiting in the broker (so the reconciler does not send
another: one job, at most one waiting message).

The broker's own storage is read, not consumed: Redis keeps each queue as a list (and a list per
priority step, ``<queue>\\x06\\x16<priority>``) plus the ``unacked`` hash of messages a worker
holds; the embedded filesystem broker keeps one file per message in its ``in`` folder. A Celery
message names its arguments in its ``argsrepr`` header, so a job's id appears in its message as
plain text. When the broker cannot be read, nothing is known to wait (the caller sends again:
a duplicate message is harmless, a lost one is not).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable

from registry.settings import Settings

log = logging.getLogger("steer.reconciler")
REDIS_PRIORITY_SEPARATOR = "\x06\x16"
REDIS_PRIORITY_STEPS = (3, 6, 9)  # kombu's defaults besides 0, which is the queue's own name
REDIS_UNACKED = "unacked"


def _ids_in(messages: Iterable[str | bytes], job_ids: Collection[str]) -> set[str]:
    found: set[str] = set()
    for message in messages:
        text = message.decode(errors="replace") if isinstance(message, bytes) else message
        found.update(job_id for job_id in job_ids if job_id in text)
    return found


def _filesystem_messages(settings: Settings) -> list[str]:
    folder = settings.broker_folder / "in"
    messages = []
    for path in folder.glob("*") if folder.is_dir() else []:
        try:
            messages.append(path.read_text(errors="replace"))
        except OSError:  # taken by a worker meanwhile
            continue
    return messages


def _redis_messages(settings: Settings, queues: Collection[str]) -> list[bytes]:
    import redis

    client = redis.Redis.from_url(settings.resolved_broker_url, socket_timeout=5)
    try:
        messages: list[bytes] = []
        for queue in queues:
            for key in (
                queue,
                *(f"{queue}{REDIS_PRIORITY_SEPARATOR}{p}" for p in REDIS_PRIORITY_STEPS),
            ):
                messages += client.lrange(key, 0, -1)
        messages += client.hvals(REDIS_UNACKED)
        return messages
    finally:
        client.close()


def waiting_job_ids(settings: Settings, jobs: Collection[tuple[str, str]]) -> set[str]:
    """The ids among ``jobs`` ((job id, queue) pairs) whose message is still in the broker."""
    if not jobs:
        return set()
    job_ids = {job_id for job_id, _ in jobs}
    try:
        if settings.broker_url is None:
            return _ids_in(_filesystem_messages(settings), job_ids)
        if settings.resolved_broker_url.startswith(("redis://", "rediss://")):
            return _ids_in(_redis_messages(settings, {q for _, q in jobs}), job_ids)
    except Exception as exc:  # the broker is unreachable: assume nothing waits
        log.warning("reconciler: cannot read the broker's waiting messages: %s", exc)
    return set()
