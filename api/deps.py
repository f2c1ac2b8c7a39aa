"""Request dependencies: settings, a database session, the caller's tenant."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from registry.db import session_scope
from registry.settings import Settings

DEFAULT_TENANT = "default"


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(settings: Settings = Depends(get_app_settings)) -> Iterator[Session]:
    """A session per request, committed before the response is sent (routes declare it with
    ``scope="function"``), so a client that saw a 200 reads its own write next."""
    with session_scope(settings.resolved_database_url) as session:
        yield session


def get_tenant() -> str:
    """The caller's tenant. API keys and tenants arrive with the security work (issue 5)."""
    return DEFAULT_TENANT
