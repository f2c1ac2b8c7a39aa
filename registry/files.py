"""Uploaded files: rows plus content-addressed bytes under the data directory."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.errors import Conflict, NotFound
from registry.ids import new_id
from registry.models import File, Job
from registry.states import TERMINAL

# A finished job's metrics, as OpenAI's result files (CSV, written by the worker).
RESULTS_PURPOSE = "fine-tune-results"


def create_file(session: Session, **fields) -> File:
    record = File(id=new_id("file"), **fields)
    session.add(record)
    session.flush()
    return record


def get_file(session: Session, file_id: str, tenant_id: str | None = None) -> File:
    record = session.get(File, file_id)
    if record is None or (tenant_id is not None and record.tenant_id != tenant_id):
        raise NotFound("file", file_id)
    return record


def list_files(
    session: Session, tenant_id: str, *, purpose: str | None, after: str | None, limit: int
) -> tuple[list[File], bool]:
    query = select(File).where(File.tenant_id == tenant_id)
    if purpose:
        query = query.where(File.purpose == purpose)
    if after is not None:
        anchor = get_file(session, after, tenant_id)
        query = query.where(
            (File.created_at < anchor.created_at)
            | ((File.created_at == anchor.created_at) & (File.id < anchor.id))
        )
    rows = list(
        session.scalars(query.order_by(File.created_at.desc(), File.id.desc()).limit(limit + 1))
    )
    return rows[:limit], len(rows) > limit


def delete_file(session: Session, record: File) -> None:
    """Refuse while an unfinished job still needs the file."""
    active = session.scalar(
        select(Job.id)
        .where(
            (Job.training_file == record.id) | (Job.validation_file == record.id),
            Job.status.not_in([s.value for s in TERMINAL]),
        )
        .limit(1)
    )
    if active is not None:
        raise Conflict(f"file {record.id} is used by job {active}, which has not finished")
    session.delete(record)


def storage_is_shared(session: Session, record: File) -> bool:
    """Whether another row points at the same content-addressed bytes."""
    return (
        session.scalar(
            select(File.id)
            .where(File.storage_path == record.storage_path, File.id != record.id)
            .limit(1)
        )
        is not None
    )
