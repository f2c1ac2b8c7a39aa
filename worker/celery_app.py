"""The Celery app of a worker process, built from settings (nothing is read at import)."""

from __future__ import annotations

import os
import socket

from celery import Celery

from registry.db import read_scope
from registry.models import Job
from registry.queueing import RUN_JOB_TASK, celery_config
from registry.settings import Settings
from worker.runner import allocator_for, run_job


def worker_name(node: str | None = None) -> str:
    """The lease owner: the Celery node name (``--name``) or the host, and the process id."""
    return f"{node or socket.gethostname()}:{os.getpid()}"


def make_celery(settings: Settings) -> Celery:
    app = Celery("steer-worker")
    app.conf.update(celery_config(settings))
    allocator = allocator_for(settings)

    @app.task(name=RUN_JOB_TASK, bind=True)
    def run_job_task(task, job_id: str) -> str:  # thin: load by id, claim, run, record
        outcome = run_job(settings, job_id, worker_name(task.request.hostname), allocator)
        if outcome == "deferred":  # its slots are busy here: back to the queue, for any worker
            with read_scope(settings.resolved_database_url) as session:
                job = session.get(Job, job_id)
                queue = job.queue if job is not None else None
            if queue is not None:
                app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)
        return outcome

    return app


def enqueuer(app: Celery):
    def enqueue(job_id: str, queue: str) -> None:
        app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)

    return enqueue
