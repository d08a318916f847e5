"""Errors in the OpenAI API's shape, with the status codes its clients' retry logic expects.

``{"error": {"message", "type", "param", "code"}}``: 400 bad input, 401 token, 404 unknown model or
session, 409 session busy, 413 too large, 429 queue full (with ``Retry-After``), 500 a failed run,
503 the judge unreachable or the server stopping. Messages are scrubbed of secrets (``EmageError``
does it when made) and cut to one bounded line; a traceback never leaves the server.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from emage_agent.core.errors import EmageError, ExecutionFailure, SessionBusy, UserError, VLMUnavailable
from emage_agent.core.redact import one_line, scrub

log = logging.getLogger(__name__)
MAX_MESSAGE = 500


class ApiError(Exception):
    """An answer other than success, already decided: status, OpenAI error type and code, extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.headers = headers or {}


class NotFound(ApiError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(404, message, param=param, code="not_found")


def error_body(status: int, message: str, kind: str, param: str | None = None, code: str | None = None) -> bytes:
    error = {"message": one_line(scrub(message), MAX_MESSAGE), "type": kind, "param": param, "code": code}
    return json.dumps({"error": error}).encode()


def response(err: ApiError) -> JSONResponse:
    body = json.loads(error_body(err.status, err.message, err.kind, err.param, err.code))
    return JSONResponse(body, status_code=err.status, headers=err.headers)


def from_emage(exc: EmageError) -> ApiError:
    """EMage's three kinds of error as HTTP answers."""
    from emage_agent.adapters.serve.options import ModelNotFound

    if isinstance(exc, ModelNotFound):
        return ApiError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, SessionBusy):
        return ApiError(409, str(exc), code="session_busy", headers={"Retry-After": "5"})
    if isinstance(exc, UserError):
        return ApiError(400, str(exc), param=exc.field, code="invalid_value")
    if isinstance(exc, VLMUnavailable):
        return ApiError(503, str(exc), kind="server_error", code="judge_unavailable", headers={"Retry-After": "30"})
    if isinstance(exc, ExecutionFailure):
        return ApiError(500, str(exc), kind="server_error", code="run_failed")
    return ApiError(500, str(exc), kind="server_error", code="model_mistake")


def install(app: FastAPI) -> None:
    """Every error the app can meet answers in OpenAI's shape."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return response(exc)

    @app.exception_handler(EmageError)
    async def _emage(request: Request, exc: EmageError) -> JSONResponse:
        return response(from_emage(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        param = ".".join(loc) or None
        message = f"{param}: {first.get('msg', 'invalid')}" if param else str(first.get("msg", "invalid request"))
        return response(ApiError(400, message, param=param, code="invalid_value"))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return response(ApiError(exc.status_code, str(exc.detail), kind=kind, code=code))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected %s on %s", type(exc).__name__, request.url.path, exc_info=exc)
        return response(ApiError(500, f"unexpected {type(exc).__name__}: {exc}", kind="server_error"))
