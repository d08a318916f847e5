"""``Idempotency-Key``: a retried POST gets the first request's answer instead of starting a second session.

Clients retry on timeouts (the official SDKs do, with the same headers), so the first request's
work runs as its own task and every request with the same key awaits that one task. A key is tied
to its route and body (the same key with another body is refused, 400); answers that say "try again"
(429, 5xx) are not kept, so the retry really tries again. Keys live in memory, bounded in number and
age: a restarted server does not know them (its sessions are still listed and resumable).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi.responses import JSONResponse

from emage_agent.adapters.serve.errors import ApiError

MAX_KEYS = 1024
KEEP_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 255


@dataclass
class _Entry:
    digest: str
    task: asyncio.Task[JSONResponse]
    made: float


def _retryable(response: JSONResponse) -> bool:
    return response.status_code == 429 or response.status_code >= 500


class IdempotencyKeys:
    """The answers of recent keyed requests, at most ``MAX_KEYS`` of them, each kept ``KEEP_SECONDS``."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def _prune(self) -> None:
        now = time.monotonic()
        for key in [k for k, e in self._entries.items() if now - e.made > KEEP_SECONDS]:
            del self._entries[key]
        while len(self._entries) > MAX_KEYS:
            self._entries.popitem(last=False)

    async def answer(
        self,
        key: str | None,
        route: str,
        body: bytes,
        make: Callable[[], Awaitable[JSONResponse]],
        timeout: float,
    ) -> JSONResponse:
        """``make()``'s response, made once per key (without a key, every time), waited for ``timeout`` s.

        Past the deadline the answer is 504 and the work goes on: a retry with the key picks it up.
        """
        if key is not None and (not key or len(key) > MAX_KEY_LENGTH or not key.isprintable()):
            raise ApiError(400, f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters")
        slot, digest = f"{route} {key}", hashlib.sha256(body).hexdigest()
        self._prune()
        entry = self._entries.get(slot) if key is not None else None
        if entry is not None and entry.digest != digest:
            raise ApiError(
                400, "this Idempotency-Key was used with another request body", code="idempotency_key_reused"
            )
        if entry is None or (entry.task.done() and _retryable(entry.task.result())):
            entry = _Entry(digest, asyncio.ensure_future(_answered(make)), time.monotonic())
            if key is not None:
                self._entries[slot] = entry
        try:  # the task outlives this request: a client that gives up and retries finds it still going
            response = await asyncio.wait_for(asyncio.shield(entry.task), timeout)
        except TimeoutError:
            raise ApiError(
                504,
                f"still working after {timeout:.0f} s; the session goes on: retry with the same Idempotency-Key, "
                "or follow it with GET /v1/sessions",
                kind="server_error",
                code="timeout",
            ) from None
        if _retryable(response) and key is not None:
            self._entries.pop(slot, None)
        return response


async def _answered(make: Callable[[], Awaitable[JSONResponse]]) -> JSONResponse:
    """``make()``, with EMage's and the API's errors turned into their responses (so they can be kept)."""
    from emage_agent.adapters.serve.errors import from_emage, response
    from emage_agent.core.errors import EmageError

    try:
        return await make()
    except ApiError as exc:
        return response(exc)
    except EmageError as exc:
        return response(from_emage(exc))
