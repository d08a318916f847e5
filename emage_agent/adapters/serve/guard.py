"""The service's doors: a bearer token (checked in constant time), and bounded request bodies.

Both are ASGI middleware in front of the app, so a refused request never reaches a handler and
never has its body read. The token is required on every path but ``/health`` and the API docs; an image URL this
server handed out carries a signature made with the token (``sign``), so an app that shows the
picture by its URL (Open WebUI) fetches it without the token. The token itself is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from emage_agent.adapters.serve.errors import error_body

OPEN_PATHS = ("/health", "/docs", "/docs/oauth2-redirect", "/openapi.json")  # nothing secret in them
_IMAGE_PATH = re.compile(r"^/v1/sessions/(?P<sid>[A-Za-z0-9_.-]{1,128})/images/(?P<step>\d{1,9})$")
MAX_BODY = 32 * 1024 * 1024  # an edit's picture and mask as multipart, with room to spare
DRAIN_MAX = 64 * 1024 * 1024  # a refused body up to this size is read before the 413; a bigger one is cut off


def sign(token: str | None, session_id: str, step: int) -> str | None:
    """The signature that opens one image URL without the token (None when no token is set)."""
    if not token:
        return None
    return hmac.new(token.encode(), f"{session_id}/{step}".encode(), hashlib.sha256).hexdigest()[:32]


async def _refuse(send: Any, status: int, message: str, code: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = error_body(status, message, "invalid_request_error", None, code)
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": base + headers})
    await send({"type": "http.response.body", "body": body})


def _query_sig(scope: dict[str, Any]) -> str:
    for part in scope.get("query_string", b"").decode("latin-1").split("&"):
        key, _, value = part.partition("=")
        if key == "sig":
            return value
    return ""


async def _drain(receive: Any) -> None:
    while True:
        event = await receive()
        if event["type"] != "http.request" or not event.get("more_body", False):
            return


class BearerAuth:
    """Every request but ``OPEN_PATHS`` carries ``Authorization: Bearer <token>`` (or a signed image URL): 401."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self._token = token
        self._bytes = token.encode()

    def _authorized(self, scope: dict[str, Any]) -> bool:
        if scope.get("path") in OPEN_PATHS:
            return True
        values = [v for k, v in scope.get("headers", []) if k.lower() == b"authorization"]
        if len(values) == 1:
            scheme, _, given = values[0].strip().partition(b" ")
            if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._bytes):
                return True
        match = _IMAGE_PATH.match(scope.get("path", ""))
        if match and scope.get("method") == "GET":
            expected = sign(self._token, match["sid"], int(match["step"])) or ""
            return hmac.compare_digest(_query_sig(scope).encode(), expected.encode())
        return False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        message = "missing or wrong API key: send 'Authorization: Bearer <token>' (the server's --auth token)"
        await _refuse(send, 401, message, "invalid_api_key", [(b"www-authenticate", b'Bearer realm="emage"')])


class BodyLimit:
    """Refuses a body over ``limit`` bytes with 413, by its Content-Length or as it streams in."""

    def __init__(self, app: Any, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the request body is over {self.limit // (1024 * 1024)} MiB; send a smaller picture"
        for key, value in scope.get("headers", []):
            if key.lower() == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                if value.isdigit() and int(value) <= DRAIN_MAX:
                    await _drain(receive)  # read (and drop) it, so the client hears the 413, not a reset
                await _refuse(send, 413, message, "request_too_large", [(b"connection", b"close")])
                return
        seen = 0
        started = False

        async def counted() -> Any:
            nonlocal seen
            event = await receive()
            if event["type"] == "http.request":
                seen += len(event.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return event

        async def tracked(event: Any) -> None:
            nonlocal started
            started = started or event["type"] == "http.response.start"
            await send(event)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await _refuse(send, 413, message, "request_too_large", [(b"connection", b"close")])


class _TooLarge(BaseException):  # noqa: N818 - not an Exception: the app's own 500 handler must let it pass
    """A streamed body passed the limit."""
