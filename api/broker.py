"""Sending job messages: a Celery client that knows task names, not worker code."""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import Celery

from registry.db import POOL_SIZE
from registry.queueing import RUN_JOB_TASK, celery_config
from registry.settings import Settings

log = logging.getLogger("steer.api")


@lru_cache(maxsize=4)
def _client(settings_json: str) -> Celery:
    settings = Settings.model_validate_json(settings_json)
    app = Celery("steer-api")
    app.conf.update(celery_config(settings))
    # As many broker connections as requests the API admits at once (ConcurrencyLimit), so a
    # send never waits for another request's connection (kombu's default pool holds 10).
    app.conf.broker_pool_limit = POOL_SIZE
    return app


def enqueue_job(settings: Settings, job_id: str, queue: str) -> bool:
    """Send the job's message (its id only). False if the broker is unreachable: the job stays
    queued in the registry and the reconciler sends it again."""
    try:
        # ignore_result: a task sent by name does not know the worker's setting, and without it
        # Celery builds a result backend on first use, scanning every installed package's
        # entry points (~0.1 s, once per racing thread).
        _client(settings.model_dump_json()).send_task(
            RUN_JOB_TASK, args=[job_id], queue=queue, retry=False, ignore_result=True
        )
        return True
    except Exception as exc:  # kombu raises many transport-specific errors
        log.warning("could not enqueue %s: %s", job_id, exc)
        return False


def broker_ok(settings: Settings) -> bool:
    if settings.broker_url is None:
        return (settings.broker_folder / "in").is_dir()
    try:
        with _client(settings.model_dump_json()).connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False
