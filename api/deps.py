"""Request dependencies (settings, the caller's tenant) and ``threaded``, the one way a route
runs blocking work."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar
from fastapi import Depends, Header, Request

from api.errors import ApiError
from registry.db import session_scope
from registry.settings import Settings
from registry.tenants import resolve_api_key

DEFAULT_TENANT = "default"
P = ParamSpec("P")
T = TypeVar("T")


# Route bodies that run on worker threads at once, per process. They are short (a few
# database round trips), and every thread beyond what keeps the CPU busy only adds GIL
# handovers: with wrk's 50 clients on PostgreSQL, 6 instead of anyio's 40 (of which at most
# ConcurrencyLimit's 20 admitted requests were busy) took 5-10% less API CPU per request and
# answered 10-20% more status reads and creations (three alternating runs of each). Long
# bodies (uploads, exports, generation) use ``threaded_slow``.
SHORT_WORK_THREADS = 6
_short_work: RunVar[CapacityLimiter] = RunVar("steer_short_work_limiter")


def _short_work_limiter() -> CapacityLimiter:
    """One limiter per event loop (as anyio keeps its default one): tests run several apps."""
    try:
        return _short_work.get()
    except LookupError:
        limiter = CapacityLimiter(SHORT_WORK_THREADS)
        _short_work.set(limiter)
        return limiter


def _on_a_thread(
    route: Callable[P, T], limiter: Callable[[], CapacityLimiter | None]
) -> Callable[P, Awaitable[T]]:
    @functools.wraps(route)
    async def endpoint(*args: P.args, **kwargs: P.kwargs) -> T:
        call = functools.partial(route, *args, **kwargs)
        return await anyio.to_thread.run_sync(call, limiter=limiter())

    return endpoint


def threaded(route: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """Run a short blocking route body (database work) on a worker thread, in one hop.

    FastAPI runs a plain ``def`` route on anyio's worker threads, then its response validation
    in a second hop, and a sync generator dependency's entry and exit in hops of their own:
    each hop wakes a thread and hands the GIL over. At 50 clients, going from four hops to one
    took about 10% off a status read's API CPU and 20% off a creation's, and cut the reads' p99
    from 744 to 153 ms with 2 processes (benchmarks/service/before_after.md). A route declared
    ``async def`` (this
    wrapper, whose signature FastAPI reads from the wrapped function) validates on the event
    loop, so the body's one hop is the only one. Routes open ``session_scope`` in their body.
    At most ``SHORT_WORK_THREADS`` such bodies run at once.
    """
    return _on_a_thread(route, _short_work_limiter)


def threaded_slow(route: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """``threaded`` for a body that may run for seconds (an upload's validation, an export,
    generation): on anyio's default pool of 40 threads, so it never holds up the short ones."""
    return _on_a_thread(route, lambda: None)


# The cheap dependencies are ``async def``: FastAPI runs a plain ``def`` dependency in its
# thread pool, and a hop there per dependency per request cost more than the work itself.
async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    is_admin: bool


ADMIN_TENANT = "admin"


# Where ``api.limits.Authenticate`` leaves the caller it resolved from the request's headers
# (a ``Principal``, or the ``ApiError`` that refuses it) before the app reads any body.
PRINCIPAL_STATE = "steer_principal"


async def resolve_principal(settings: Settings, authorization: str | None) -> Principal:
    """Who sends this ``Authorization`` header; an ``ApiError`` 401 when nobody known does.
    With ``STEER_AUTH=off`` everyone is tenant ``default`` (and ``steer api`` then refuses to
    listen beyond localhost); with ``on`` a Bearer API key is required."""
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
    # a database read, as short as a route's
    principal = await anyio.to_thread.run_sync(
        _principal_of_key, settings, key, limiter=_short_work_limiter()
    )
    if principal is None:
        raise ApiError(401, "Invalid API key", code="invalid_api_key")
    return principal


async def get_principal(
    request: Request,
    authorization: str | None = Header(default=None),
    settings: Settings = Depends(get_app_settings),
) -> Principal:
    """Who is calling: resolved by ``api.limits.Authenticate`` before the body was read (no
    second lookup here), else from the header now."""
    resolved = request.scope.get("state", {}).get(PRINCIPAL_STATE)
    if isinstance(resolved, Principal):
        return resolved
    if isinstance(resolved, BaseException):
        raise resolved
    return await resolve_principal(settings, authorization)


async def key_still_valid(settings: Settings, authorization: str | None, tenant_id: str) -> bool:
    """Whether the header still names a live key of this tenant (a long stream checks again:
    its key may have been revoked since it opened)."""
    try:
        principal = await resolve_principal(settings, authorization)
    except ApiError:
        return False
    return principal.tenant_id == tenant_id


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
