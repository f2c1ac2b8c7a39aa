"""The workers that have registered, and admission: can any of them run a job of this size?

A worker registers when it starts (:func:`register_worker`: its GPUs, its CPU slots, the
queues it consumes) and beats while it runs (:func:`touch_worker`). Job creation asks
:func:`admission` about the job's compute block:

- ``refuse``: at least one worker has ever registered and the job is larger than every one of
  them (a GPU job of N GPUs needs a worker with at least N; a CPU job of P processes a worker
  with at least P CPU slots), so it would wait forever;
- ``warn``: no worker heard from in the last ``recent_seconds`` can run it (none has registered
  yet, or the large ones are gone): the job waits in its queue until one comes;
- ``ok`` otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from registry.models import Worker


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class WorkerCapacity:
    """The largest GPU count and the largest CPU slot count among some workers (not
    necessarily the same worker's: a job needs only one of the two)."""

    gpus: int
    cpu_slots: int
    workers: int


@dataclass(frozen=True)
class Admission:
    verdict: Literal["ok", "warn", "refuse"]
    message: str = ""
    param: str | None = None  # the field a refusal is about


def register_worker(
    session: Session, *, name: str, gpus: int, cpu_slots: int, queues: list[str]
) -> None:
    """Insert the worker, or update what it offers (a restarted worker keeps its
    ``first_seen_at``); either way it is seen now. One statement, so two starts of the same
    name cannot collide."""
    now = _now()
    values: dict[str, Any] = {
        "name": name,
        "gpus": gpus,
        "cpu_slots": cpu_slots,
        "queues": list(queues),
        "last_seen_at": now,
    }
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(Worker).values(first_seen_at=now, **values)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[Worker.name],
                set_={key: statement.excluded[key] for key in values if key != "name"},
            )
        )
        return
    row = session.get(Worker, name, with_for_update=True)
    if row is None:
        session.add(Worker(first_seen_at=now, **values))
    else:
        for key, value in values.items():
            setattr(row, key, value)
    session.flush()


def touch_worker(session: Session, name: str) -> bool:
    """The worker's heartbeat; False when it has no row (it should register again)."""
    result = session.execute(update(Worker).where(Worker.name == name).values(last_seen_at=_now()))
    return bool(getattr(result, "rowcount", 0))


def capacity(session: Session, since: datetime | None) -> WorkerCapacity | None:
    """The largest worker sizes among those seen since ``since`` (ever, when None); None when
    no worker matches."""
    query = select(
        func.count(Worker.name), func.max(Worker.gpus), func.max(Worker.cpu_slots)
    ).select_from(Worker)
    if since is not None:
        query = query.where(Worker.last_seen_at >= since)
    count, gpus, cpu_slots = session.execute(query).one()
    if not count:
        return None
    return WorkerCapacity(gpus=int(gpus or 0), cpu_slots=int(cpu_slots or 0), workers=int(count))


def compute_needs(compute: Mapping[str, Any]) -> tuple[int, int]:
    """(GPUs, processes) of a stored compute block: what admission checks and a worker
    allocates."""
    gpus = int(compute.get("gpus") or 0)
    processes = int(compute.get("processes") or max(1, gpus))
    return gpus, processes


def _fits(gpus: int, processes: int, size: WorkerCapacity) -> bool:
    return size.gpus >= gpus if gpus else size.cpu_slots >= processes


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def admission(session: Session, compute: Mapping[str, Any], *, recent_seconds: float) -> Admission:
    """Whether a job with this compute block is refused, accepted with a warning, or accepted
    (the rules are in the module docstring)."""
    gpus, processes = compute_needs(compute)
    need = _plural(gpus, "GPU") if gpus else _plural(processes, "CPU slot")
    ever = capacity(session, None)
    if ever is None:
        return Admission(
            "warn",
            f"No worker has registered yet: the job waits in its queue until a worker with "
            f"{need} starts",
        )
    if not _fits(gpus, processes, ever):
        if gpus:
            return Admission(
                "refuse",
                f"compute.gpus={gpus}: no worker could run this job; the largest worker ever "
                f"registered has {_plural(ever.gpus, 'GPU')}. Ask for at most {ever.gpus} "
                "or add a worker with more",
                param="compute.gpus",
            )
        return Admission(
            "refuse",
            f"compute.processes={processes}: no worker could run this job; a CPU job needs one "
            f"CPU slot per process and the largest worker ever registered has "
            f"{_plural(ever.cpu_slots, 'CPU slot')}. Ask for at most {ever.cpu_slots} "
            "or add a worker with more",
            param="compute.processes",
        )
    recent = capacity(session, _now() - timedelta(seconds=recent_seconds))
    if recent is None or not _fits(gpus, processes, recent):
        return Admission(
            "warn",
            f"No worker seen in the last {recent_seconds:g} s can run this job (it needs "
            f"{need}): it waits in its queue until one is back",
        )
    return Admission("ok")
