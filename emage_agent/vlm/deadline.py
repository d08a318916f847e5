"""A deadline for a whole HTTP request, from connecting to the last byte of the answer.

Why: httpx's timeouts bound each read, not the request, so a server that sends a valid answer one byte a
second held a session for minutes (and one that never stops, for ever). Both SDKs (google-genai, openai)
send through an ``httpx2`` transport we give them; this one cuts every read's timeout to what is left and
checks the deadline between the chunks of the body. Retries are the clients' own budget, on top of this.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx2


class RequestDeadline(httpx2.ReadTimeout):
    """The whole request ran past its deadline (a ``ReadTimeout``, so the clients treat it as a timeout)."""


class _Bounded(httpx2.SyncByteStream):
    def __init__(self, inner: Any, request: httpx2.Request, deadline: float, total_s: float) -> None:
        self._inner, self._request, self._deadline, self._total_s = inner, request, deadline, total_s

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            if time.monotonic() > self._deadline:
                raise RequestDeadline(
                    f"the answer was still arriving after {self._total_s:g}s, the deadline for the whole request",
                    request=self._request,
                )
            yield chunk

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class DeadlineTransport(httpx2.HTTPTransport):
    """An ``httpx2.HTTPTransport`` that gives each request ``total_s`` seconds in all."""

    def __init__(self, total_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.total_s = float(total_s)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        deadline = time.monotonic() + self.total_s
        timeouts = dict(request.extensions.get("timeout") or {})
        for phase in ("connect", "read", "write", "pool"):
            given = timeouts.get(phase)
            timeouts[phase] = self.total_s if given is None else min(float(given), self.total_s)
        request.extensions = {**request.extensions, "timeout": timeouts}
        response = super().handle_request(request)
        response.stream = _Bounded(response.stream, request, deadline, self.total_s)
        return response
