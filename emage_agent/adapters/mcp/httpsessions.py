"""A bounded table of MCP HTTP sessions: the least recently used idle one is closed to make room.

Why: the SDK keeps up to 10,000 sessions for 30 minutes each and answers 503 to everyone once they are
taken, so one loopback client sending 10,000 ``initialize`` requests locked every other client out (and
held ~400 MB). Counting per address cannot help (every loopback client is 127.0.0.1), so the table is
bounded and, when full, the session least recently used and with no request in flight is ended with the
protocol's own ``DELETE``; its client gets 404 and initializes again, as the spec says. Sessions idle for
``IDLE_S`` are ended by the SDK.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any

HTTP_SESSIONS = 64  # MCP HTTP sessions kept at once (EMAGE_MCP_HTTP_SESSIONS)
IDLE_S = 600.0  # a session with no request for this long is ended by the SDK


def _header(headers: Any, name: bytes) -> bytes | None:
    return next((v for k, v in headers or [] if k.lower() == name), None)


class SessionTable:
    """ASGI middleware in front of the SDK's streamable HTTP app; see the module's docstring."""

    def __init__(self, app: Any, capacity: int = HTTP_SESSIONS) -> None:
        self.app = app
        self.capacity = max(1, capacity)
        self._seen: OrderedDict[bytes, None] = OrderedDict()  # least recently used first
        self._busy: Counter[bytes] = Counter()  # requests in flight per session

    @property
    def open_sessions(self) -> int:
        return len(self._seen)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sid = _header(scope.get("headers"), b"mcp-session-id")
        if sid is not None:
            await self._known(sid, scope, receive, send)
            return
        await self._make_room(scope)

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                new = _header(message.get("headers"), b"mcp-session-id")
                if new is not None:
                    self._seen[new] = None
            await send(message)

        await self.app(scope, receive, watch)

    async def _known(self, sid: bytes, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if sid in self._seen:
            self._seen.move_to_end(sid)
        self._busy[sid] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._busy[sid] -= 1
            if self._busy[sid] <= 0:
                del self._busy[sid]
            if scope.get("method") == "DELETE":
                self._seen.pop(sid, None)

    async def _make_room(self, scope: dict[str, Any]) -> None:
        """End least recently used idle sessions until a new one fits (busy ones are skipped)."""
        for sid in list(self._seen):
            if len(self._seen) < self.capacity:
                return
            if self._busy.get(sid) or sid not in self._seen:
                continue
            del self._seen[sid]
            await self._end(sid, scope)

    async def _end(self, sid: bytes, like: dict[str, Any]) -> None:
        """``DELETE /mcp`` for ``sid``, sent straight to the SDK's app (the answer goes nowhere)."""
        keep = (b"host", b"mcp-protocol-version", b"authorization")
        headers = [(k, v) for k, v in like.get("headers", []) if k.lower() in keep]
        scope = {**like, "method": "DELETE", "headers": [*headers, (b"mcp-session-id", sid)], "query_string": b""}
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}

        async def discard(_message: dict[str, Any]) -> None:
            return None

        await self.app(scope, receive, discard)
