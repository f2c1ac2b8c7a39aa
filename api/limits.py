"""What the API settles before it reads a request's body: who is calling, how large the body
may be, and how many requests are inside at once.

Starlette spools a multipart body to disk, and FastAPI reads and parses a JSON body, before a
route or any of its dependencies runs: a check there (the caller's key, the service's size limit
in ``services/files.py``) only answered after the whole transfer. So, as ASGI middleware around
the app:

- ``BodySizeLimit`` answers 413 from ``Content-Length`` at once, and counts the bytes of every
  body as the app reads them (chunked ones too), answering 413 the moment one passes its limit:
  ``STEER_MAX_JSON_BODY_BYTES`` for the JSON routes, ``STEER_MAX_UPLOAD_BYTES`` (plus multipart
  framing) for uploads, whose exact limit, and a tenant's own quota, the upload service checks
  while it copies the file.
- ``Authenticate`` (``STEER_AUTH=on``) resolves the caller from its headers before the app runs;
  a request that carries a body from an unknown caller is answered 401 before a byte of it is
  read. Requests without a body go on, and their route's dependency answers as before (public
  routes such as ``/health`` need no key).

Refusals are rendered by the app's own exception handlers (``api/errors.py``), so they carry the
error envelope, and close the connection when a body is left unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request

from api.deps import PRINCIPAL_STATE, resolve_principal
from api.errors import ApiError
from registry.settings import Settings

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file itself


def _carries_body(headers: Headers) -> bool:
    return "transfer-encoding" in headers or headers.get("content-length", "0") not in ("", "0")


async def _refuse(scope: dict, receive: Any, send: Any, exc: BaseException, *, close: bool) -> None:
    """Answer with the app's handler for ``exc`` (``api/errors.py``)."""
    handlers = scope["app"].exception_handlers
    handler = next(handlers[cls] for cls in type(exc).__mro__ if cls in handlers)
    response = handler(Request(scope, receive), exc)
    if inspect.isawaitable(response):
        response = await response
    if close:  # the unread body is not waited for
        response.headers["connection"] = "close"
    await response(scope, receive, send)


class _BodyTooLarge(Exception):
    """Raised into the app when its body passes the limit (after the 413 has been sent)."""


class BodySizeLimit:
    def __init__(
        self, app: Any, *, upload_path: str, max_upload_bytes: int, max_json_bytes: int
    ) -> None:
        self.app, self.upload_path = app, upload_path
        self.max_upload_bytes, self.max_json_bytes = max_upload_bytes, max_json_bytes

    def _limit(self, scope: dict) -> tuple[int, ApiError]:
        if scope["method"] == "POST" and scope["path"] == self.upload_path:
            return self.max_upload_bytes + MULTIPART_OVERHEAD, ApiError(
                413,
                f"file exceeds the upload limit of {self.max_upload_bytes} bytes",
                param="file",
                code="file_too_large",
            )
        return self.max_json_bytes, ApiError(
            413,
            f"request body exceeds the limit of {self.max_json_bytes} bytes",
            code="request_too_large",
        )

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        headers = Headers(scope=scope) if scope["type"] == "http" else None
        if headers is None or not _carries_body(headers):
            await self.app(scope, receive, send)
            return
        limit, refusal = self._limit(scope)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _refuse(scope, receive, send, refusal, close=True)
            return
        received, started, answered = 0, False, False

        async def limited_receive() -> dict:
            nonlocal received, answered
            message: dict = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not started and not answered:
                        answered = True
                        await _refuse(scope, receive, send, refusal, close=True)
                    raise _BodyTooLarge
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            if answered:  # the 413 went out: whatever the app makes of the exception is dropped
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        # answered, or the app had answered before it read the rest of its body
        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, limited_receive, tracked_send)


class Authenticate:
    def __init__(self, app: Any, *, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.settings.auth == "off":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        resolved: object
        try:
            resolved = await resolve_principal(self.settings, headers.get("authorization"))
        except Exception as exc:  # a 401, or the registry unreachable (503)
            if _carries_body(headers):
                await _refuse(scope, receive, send, exc, close=True)
                return
            resolved = exc  # raised by the route's dependency, unless the route is public
        scope.setdefault("state", {})[PRINCIPAL_STATE] = resolved
        await self.app(scope, receive, send)


class ConcurrencyLimit:
    """At most ``limit`` requests inside the app at once; the others wait on the event loop.

    Routes once held a pooled database connection across several thread hops (a session
    dependency's entry and exit ran apart from the route), and with more requests inside than
    pooled connections every worker thread could end up blocked in a pool checkout while the
    requests holding the connections waited for a thread to finish on: a deadlock that ended
    only in 30 s pool timeouts (500s). A route now uses its connection within one hop
    (``api.deps.threaded``), and this limit still keeps a burst within the pool: no overflow
    connections opened and closed per burst, no thread parked in a checkout. The rest queue
    here at the cost of a coroutine, not a thread.

    Streams are not counted (``…/events?stream=true`` and the generation routes): they hold no
    connection while they wait (each event poll opens its own short session; generation closes
    its session before generating), and counting them would let a few long streams stall the
    API. Their short sessions come from the pool's overflow. Event streams are capped per tenant
    instead (``api/streams.py``).
    """

    UNCOUNTED_PATHS = ("/v1/chat/completions", "/v1/completions")

    def __init__(self, app: Any, *, limit: int):
        self.app = app
        self.limit = limit
        self._semaphore: asyncio.Semaphore | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self._uncounted(scope):
            await self.app(scope, receive, send)
            return
        if self._semaphore is None:  # created inside the running loop
            self._semaphore = asyncio.Semaphore(self.limit)
        async with self._semaphore:
            await self.app(scope, receive, send)

    def _uncounted(self, scope: dict) -> bool:
        if scope["path"] in self.UNCOUNTED_PATHS:
            return True
        return scope["path"].endswith("/events") and b"stream=true" in scope.get(
            "query_string", b""
        )
