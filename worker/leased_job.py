"""A claimed job as its worker reaches it: every registry access fenced by the lease token and
retried while the database is unreachable.

Fenced: each transaction first loads the job through ``registry.jobs.fenced_job``, which raises
:class:`~registry.errors.LeaseLost` once another worker holds the job (or it finished), so a
worker that lost its lease can neither read on nor write anything. Retried: a transaction that
fails because the database cannot be reached was rolled back, so it is run again from the start
(nothing half-written), for up to ``db_retry_seconds``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from registry import jobs as jobs_repo
from registry.db import read_scope, session_scope
from registry.models import Job
from registry.settings import Settings

log = logging.getLogger("steer.worker")
P = ParamSpec("P")
T = TypeVar("T")
FIRST_RETRY_DELAY = 0.25
MAX_RETRY_DELAY = 5.0


class LeasedJob:
    """Job ``job_id`` held by this worker under fencing token ``token``."""

    def __init__(self, settings: Settings, job_id: str, token: int):
        self.settings, self.job_id, self.token = settings, job_id, token
        self.url = settings.resolved_database_url

    @classmethod
    def claim(cls, settings: Settings, job_id: str, owner: str) -> LeasedJob | None:
        """Take the job's lease; None when it is held, finished or being cancelled."""
        with session_scope(settings.resolved_database_url) as session:
            token = jobs_repo.claim_job(session, job_id, owner, settings.lease_seconds)
        return None if token is None else cls(settings, job_id, token)

    def read(
        self, fn: Callable[Concatenate[Session, Job, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(session, job, ...)`` in a transaction that is rolled back, never committed."""

        def transaction() -> T:
            with read_scope(self.url) as session:
                job = jobs_repo.fenced_job(session, self.job_id, self.token)
                return fn(session, job, *args, **kwargs)

        return self._retrying(transaction)

    def write(
        self, fn: Callable[Concatenate[Session, Job, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(session, job, ...)`` in one transaction, committed if it returns."""

        def transaction() -> T:
            with session_scope(self.url) as session:
                job = jobs_repo.fenced_job(session, self.job_id, self.token, lock=True)
                return fn(session, job, *args, **kwargs)

        return self._retrying(transaction)

    def renew(self) -> jobs_repo.LeaseRenewal:
        """Extend the lease by ``lease_seconds``; LeaseLost if it is no longer this worker's."""

        def transaction() -> jobs_repo.LeaseRenewal:
            with session_scope(self.url) as session:
                return jobs_repo.renew_lease(
                    session, self.job_id, self.token, self.settings.lease_seconds
                )

        return self._retrying(transaction)

    def _retrying(self, transaction: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.settings.db_retry_seconds
        delay = FIRST_RETRY_DELAY
        while True:
            try:
                return transaction()
            except (OperationalError, InterfaceError) as exc:
                if time.monotonic() + delay > deadline:
                    log.error("job %s: the database stayed unreachable: %s", self.job_id, exc)
                    raise
                log.warning("job %s: database unreachable, retrying in %.1fs", self.job_id, delay)
                time.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)
