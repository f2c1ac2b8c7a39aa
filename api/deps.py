"""Request dependencies (settings, the caller's tenant) and ``threaded``, the one way a route
runs blocking work."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from api.errors import ApiError
from registry.db import session_scope
from registry.settings import Settings
from registry.tenants import resolve_api_key

DEFAULT_TENANT = "default"
P = ParamSpec("P")
T = TypeVar("T")


def threaded(route: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """Run a blocking route body on the thread pool in one hop.

    FastAPI runs a plain ``def`` route on anyio's worker threads, then its response validation
    in a second hop, and a sync generator dependency's entry and exit in hops of their own:
    each hop wakes a thread and hands the GIL over, and with 50 clients the hops cost more CPU
    than the route's database work (benchmarks/service). A route declared ``async def`` (this
    wrapper, whose signature FastAPI reads from the wrapped function) validates on the event
    loop, so the body's one hop is the only one. Routes open ``session_scope`` in their body.
    """

    @functools.wraps(route)
    async def endpoint(*args: P.args, **kwargs: P.kwargs) -> T:
        return await run_in_threadpool(route, *args, **kwargs)

    return endpoint


# The cheap dependencies are ``async def``: FastAPI runs a plain ``def`` dependency in its
# thread pool, and a hop there per dependency per request cost more than the work itself.
async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    is_admin: bool


ADMIN_TENANT = "admin"


async def get_principal(
    authorization: str | None = Header(default=None),
    settings: Settings = Depends(get_app_settings),
) -> Principal:
    """Who is calling. With ``STEER_AUTH=off`` everyone is tenant ``default`` (and ``steer api``
    then refuses to listen beyond localhost); with ``on`` a Bearer API key is required."""
    if settings.auth == "off":
        return Principal(DEFAULT_TENANT, is_admin=True)
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401, "Missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key"
        )
    key = key.strip()
    if settings.admin_key and hmac.compare_digest(key.encode(), settings.admin_key.encode()):
        return Principal(ADMIN_TENANT, is_admin=True)
    principal = await run_in_threadpool(_principal_of_key, settings, key)  # a database read
    if principal is None:
        raise ApiError(401, "Invalid API key", code="invalid_api_key")
    return principal


def _principal_of_key(settings: Settings, key: str) -> Principal | None:
    with session_scope(settings.resolved_database_url) as session:
        row = resolve_api_key(session, key)
        return Principal(row.tenant_id, row.is_admin) if row is not None else None


async def get_tenant(principal: Principal = Depends(get_principal)) -> str:
    """The caller's tenant: every read and write is scoped to it."""
    return principal.tenant_id


async def require_admin(principal: Principal = Depends(get_principal)) -> Principal:
    if not principal.is_admin:
        raise ApiError(403, "This route needs an admin API key", code="forbidden")
    return principal
