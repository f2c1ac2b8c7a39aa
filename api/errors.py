"""One table from exceptions to HTTP answers, and the OpenAI error envelope.

``{"error": {"message", "type", "param", "code"}}``; user mistakes are 4xx, never 500.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from registry.errors import Conflict, InvalidJobStatus, InvalidValue, NotFound
from registry.quotas import QuotaExceeded
from registry.states import InvalidTransition
from steering_core.errors import SteeringUserError

log = logging.getLogger("steer.api")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str = "invalid_value",
        type: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = (
            status,
            message,
            param,
            code,
            type,
        )


def envelope(
    status: int, message: str, *, type: str, code: str | None, param: str | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": type, "param": param, "code": code}},
    )


# exception class -> (HTTP status, error type, error code)
ERROR_TABLE: list[tuple[type[BaseException], int, str, str]] = [
    (NotFound, 404, "invalid_request_error", "not_found"),
    # Not a 409: what the job's status refuses, retrying will not change (and OpenAI's SDK
    # retries a 409 with backoff).
    (InvalidJobStatus, 400, "invalid_request_error", "invalid_job_status"),
    (Conflict, 409, "invalid_request_error", "conflict"),
    (InvalidTransition, 409, "invalid_request_error", "conflict"),
    (SteeringUserError, 400, "invalid_request_error", "invalid_value"),
    # A value the database cannot hold (registry.db): the request's mistake, not an outage.
    (InvalidValue, 400, "invalid_request_error", "invalid_value"),
    (OperationalError, 503, "server_error", "database_unavailable"),
    (DBAPIError, 503, "server_error", "database_unavailable"),
]


_UNION_TAG = re.compile(r"^(int|float|str|bool|dict|list|none|constrained-[a-z]+|[a-z-]+\[.*\])$")


def field_path(loc: Any) -> str:
    """A pydantic error location as a dotted field path: request sections, list positions kept
    as indices, and union-member tags (``int``, ``literal['auto']``) dropped."""
    parts = [
        str(p)
        for p in loc
        if p not in ("body", "query", "path", "header", "form")
        and not (isinstance(p, str) and _UNION_TAG.match(p))
    ]
    return ".".join(parts)


_LEADING_NAME = re.compile(
    r"^(?:Value error, )?([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
)


def error_param(error: Mapping[str, Any]) -> str:
    """The dotted field a pydantic error is about. A rule across fields (a model validator) is
    located at its model; when its message starts with one of the model's input fields
    (``processes=3 with gpus=2: ...``), or a dotted path into one (``trains.site.layers ...``),
    that field is the one to change."""
    path = field_path(error.get("loc", ()))
    value = error.get("input")
    named = _LEADING_NAME.match(str(error.get("msg", "")))
    field = named.group(1) if named else None
    if (
        error.get("type") == "value_error"
        and isinstance(value, dict)
        and field is not None
        and field.split(".")[0] in value
    ):
        return f"{path}.{field}" if path else str(field)
    return path


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    return field_path(loc) or None


async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
    return envelope(exc.status, exc.message, type=exc.type, code=exc.code, param=exc.param)


async def _quota(_request: Request, exc: QuotaExceeded) -> JSONResponse:
    return envelope(
        exc.status,
        str(exc),
        type="invalid_request_error",
        code="quota_exceeded",
        param="file" if exc.limit == "max_file_bytes" else None,
    )


async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":  # its loc holds a character offset, not a field
        return envelope(
            400,
            f"Invalid JSON body: {first.get('msg')}",
            type="invalid_request_error",
            code="invalid_json",
            param=None,
        )
    param = error_param(first) or None
    detail = "; ".join(
        f"{_loc_to_param(tuple(e.get('loc', ()))) or 'body'}: {e.get('msg')}" for e in errors[:5]
    )
    return envelope(
        400,
        f"Invalid request: {detail}",
        type="invalid_request_error",
        code="invalid_value",
        param=param,
    )


async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = "not_found" if exc.status_code == 404 else "http_error"
    return envelope(exc.status_code, str(exc.detail), type="invalid_request_error", code=code)


def _table_handler(status: int, err_type: str, code: str) -> Callable[[Request, Exception], Any]:
    """The handler of one ``ERROR_TABLE`` row (a database outage is logged, its text hidden)."""

    def handler(_request: Request, exc: Exception) -> JSONResponse:
        message = str(exc)
        if status == 503:
            log.warning("database unavailable: %s", exc)
            message = "The registry database is unavailable; retry shortly."
        return envelope(status, message, type=err_type, code=code)

    return handler


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error")
    return envelope(500, "Internal server error", type="server_error", code="internal_error")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every exception in the OpenAI error envelope: ``ApiError`` as it says, the
    table's exceptions by their row, anything else a logged 500."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(QuotaExceeded, _quota)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    for exc_type, status, err_type, code in ERROR_TABLE:
        app.add_exception_handler(exc_type, _table_handler(status, err_type, code))
    app.add_exception_handler(Exception, _unexpected)
