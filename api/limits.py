"""Refuse an upload that announces more bytes than allowed before any of it is read.

Starlette spools a multipart body to disk before a route runs, so the per-chunk limit in
``services/files.py`` alone would only answer after the whole transfer. This middleware answers
413 from the ``Content-Length`` header at once; bodies without one (chunked) are still capped
by the service while it copies them.
"""

from __future__ import annotations

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
