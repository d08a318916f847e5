"""What every route of the service shares: the runs, the token, the idempotency keys, the deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from pydantic import BaseModel

from emage_agent.adapters.serve.errors import ApiError
from emage_agent.adapters.serve.guard import MAX_BODY, sign
from emage_agent.adapters.serve.idempotency import IdempotencyKeys
from emage_agent.adapters.serve.runs import Draining, QueueFull, Run, Service, Work

POLL_S = 0.05


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """The service's refusals as HTTP answers: 429 with ``Retry-After`` when full, 503 when stopping."""
    try:
        yield
    except QueueFull as exc:
        retry = {"Retry-After": str(exc.retry_after)}
        raise ApiError(429, str(exc), kind="rate_limit_error", code="queue_full", headers=retry) from None
    except Draining as exc:
        raise ApiError(503, str(exc), kind="server_error", code="stopping", headers={"Retry-After": "30"}) from None


@dataclass
class ServeState:
    service: Service
    token: str | None = None
    request_timeout: float = 900.0  # how long a synchronous image request waits before answering 504
    max_body: int = MAX_BODY  # bytes of one request body (an edit's picture and mask together)
    keys: IdempotencyKeys = field(default_factory=IdempotencyKeys)

    def admit(self) -> None:
        """Refuse now (429 or 503) what ``submit`` would refuse."""
        with _refusals():
            self.service.admit()

    def submit(self, work: Work, session_id: str | None = None) -> Run:
        with _refusals():
            return self.service.submit(work, session_id)

    def image_url(self, request: Request, session_id: str, step: int) -> str:
        """An image's URL on this server, signed when a token guards it (valid for the session's life)."""
        url = f"{str(request.base_url).rstrip('/')}/v1/sessions/{session_id}/images/{step}"
        sig = sign(self.token, session_id, step)
        return f"{url}?sig={sig}" if sig else url


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object (the size is already bounded by ``BodyLimit``), or a 400."""
    try:
        body = json.loads(await request.body() or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # nesting is bounded too
        raise ApiError(400, f"the body is not JSON ({str(exc)[:200]})", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_json")
    return body


def documented(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` that shows ``model`` as a route's JSON body in /docs (the route checks it itself)."""
    schema = {"content": {"application/json": {"schema": model.model_json_schema()}}, "required": True}
    return {"requestBody": schema}


async def finished(run: Run) -> None:
    """Wait for ``run`` to end without holding a thread (the caller's deadline bounds the wait)."""
    while not run.done.is_set():
        await asyncio.sleep(POLL_S)
