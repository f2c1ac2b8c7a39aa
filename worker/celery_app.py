"""The Celery app of a worker process, built from settings (nothing is read at import)."""

from __future__ import annotations

import os
import socket

from celery import Celery

from registry.queueing import RUN_JOB_TASK, celery_config
from registry.settings import Settings
from worker.runner import run_job


def worker_name(node: str | None = None) -> str:
    """The lease owner: the Celery node name (``--name``) or the host, and the process id."""
    return f"{node or socket.gethostname()}:{os.getpid()}"


def make_celery(settings: Settings) -> Celery:
    app = Celery("steer-worker")
    app.conf.update(celery_config(settings))

    @app.task(name=RUN_JOB_TASK, bind=True)
    def run_job_task(task, job_id: str) -> str:  # thin: load by id, claim, run, record
        return run_job(settings, job_id, worker_name(task.request.hostname))

    return app


def enqueuer(app: Celery):
    def enqueue(job_id: str, queue: str) -> None:
        app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)

    return enqueue
