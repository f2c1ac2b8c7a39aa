"""Small helpers shared by the registry tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime


def new_tenant() -> str:
    """A tenant id no other test uses."""
    return f"tenant-{uuid.uuid4().hex[:12]}"


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes (stored as UTC); make them comparable."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def utc(value: datetime | None) -> datetime:
    """Like :func:`aware`, for values that must be set."""
    result = aware(value)
    assert result is not None, "expected a timestamp, found None"
    return result
