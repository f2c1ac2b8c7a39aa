"""Per-tenant quotas: the one place that says which limits apply to a tenant and checks them.

A tenant's own limits (columns of ``tenants``) win; where one is unset, the service-wide default
from settings applies (``STEER_QUOTA_*``); ``None`` means unlimited. Three limits:

- ``max_concurrent_jobs``: jobs not yet finished (queued, validating, running), checked when a job
  is created, under a per-tenant lock so two racing requests cannot both take the last slot;
- ``max_file_bytes``: the size of one uploaded file, checked while the upload streams;
- ``max_training_tokens``: tokens one job may feed through the model, checked exactly by the
  engine after tokenizing and before its first step (the worker passes it in the spec).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.db import lock_until_commit
from registry.models import Job, Tenant
from registry.settings import Settings
from registry.states import TERMINAL


@dataclass(frozen=True)
class Quotas:
    max_concurrent_jobs: int | None
    max_file_bytes: int | None
    max_training_tokens: int | None


class QuotaExceeded(Exception):
    """A tenant's limit would be exceeded; ``limit`` names it, ``status`` is the HTTP answer."""

    def __init__(self, limit: str, message: str, status: int):
        super().__init__(message)
        self.limit, self.status = limit, status


def quotas_for(session: Session, settings: Settings, tenant_id: str) -> Quotas:
    tenant = session.get(Tenant, tenant_id)

    def pick(name: str) -> int | None:
        own = getattr(tenant, name) if tenant is not None else None
        return own if own is not None else getattr(settings, f"quota_{name}")

    return Quotas(
        max_concurrent_jobs=pick("max_concurrent_jobs"),
        max_file_bytes=pick("max_file_bytes"),
        max_training_tokens=pick("max_training_tokens"),
    )


def unfinished_jobs(session: Session, tenant_id: str) -> int:
    done = [status.value for status in TERMINAL]
    return int(
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.tenant_id == tenant_id, Job.status.not_in(done))
        )
        or 0
    )


def check_new_job(session: Session, settings: Settings, tenant_id: str) -> Quotas:
    """Raise :class:`QuotaExceeded` (429) when the tenant already has its maximum of unfinished
    jobs; call inside the transaction that creates the job."""
    quotas = quotas_for(session, settings, tenant_id)
    if quotas.max_concurrent_jobs is not None:
        lock_until_commit(session, f"tenant:{tenant_id}")  # one check at a time
        active = unfinished_jobs(session, tenant_id)
        if active >= quotas.max_concurrent_jobs:
            raise QuotaExceeded(
                "max_concurrent_jobs",
                f"quota exceeded: max_concurrent_jobs is {quotas.max_concurrent_jobs} and "
                f"{active} of your jobs are queued or running; wait for one to finish or "
                "cancel one",
                429,
            )
    return quotas


def file_size_limit(session: Session, settings: Settings, tenant_id: str) -> tuple[int, str | None]:
    """The byte limit of one upload, and the tenant quota's name when it is the tighter one."""
    quota = quotas_for(session, settings, tenant_id).max_file_bytes
    if quota is not None and quota < settings.max_upload_bytes:
        return quota, "max_file_bytes"
    return settings.max_upload_bytes, None
