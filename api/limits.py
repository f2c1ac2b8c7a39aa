"""Refuse an upload that announces more bytes than allowed before any of it is read.

Starlette spools a multipart body to disk before a route runs, so the per-chunk limit in
``services/files.py`` alone would only answer after the whole transfer. This middleware answers
413 from the ``Content-Length`` header at once; bodies without one (chunked) are still capped
by the service while it copies them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file itself


class UploadSizeLimit:
    def __init__(self, app: Any, *, path: str, max_bytes: int):
        self.app, self.path, self.max_bytes = app, path, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == self.path:
            headers = dict(scope.get("headers") or [])
            length = headers.get(b"content-length")
            if (
                length is not None
                and length.isdigit()
                and (int(length) > self.max_bytes + MULTIPART_OVERHEAD)
            ):
                await self._reject(send)
                return
        await self.app(scope, receive, send)

    async def _reject(self, send: Any) -> None:
        body = json.dumps(
            {
                "error": {
                    "message": f"file exceeds the upload limit of {self.max_bytes} bytes",
                    "type": "invalid_request_error",
                    "param": "file",
                    "code": "file_too_large",
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


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
    API. Their short sessions come from the pool's overflow.
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
