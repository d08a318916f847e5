"""The MCP server over streamable HTTP, behind a bearer token.

Every HTTP request must carry ``Authorization: Bearer <token>`` (``EMAGE_MCP_TOKEN``), checked with
``hmac.compare_digest``; a token is mandatory when bound to anything but loopback.
"""

from __future__ import annotations

import hmac
import ipaddress
import sys
from typing import Any

from mcp.server.mcpserver import MCPServer

from emage_agent.errors import UserError


def is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class BearerAuth:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>`` (401 otherwise)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self._token = token.encode()

    def _authorized(self, scope: dict[str, Any]) -> bool:
        values = [v for k, v in scope.get("headers", []) if k.lower() == b"authorization"]
        if len(values) != 1:
            return False
        scheme, _, given = values[0].strip().partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan" or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = b'{"error": "unauthorized", "error_description": "missing or wrong bearer token"}'
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="emage"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def http_app(server: MCPServer, *, host: str = "127.0.0.1", token: str | None = None) -> Any:
    """The streamable HTTP ASGI app; refuses a non-loopback host without a token, enforces any token."""
    if not token and not is_loopback(host):
        raise UserError(
            f"refusing to serve MCP on {host} without a bearer token; set EMAGE_MCP_TOKEN (clients "
            "then send 'Authorization: Bearer <token>') or bind 127.0.0.1",
            field="EMAGE_MCP_TOKEN",
        )
    app = server.streamable_http_app(host=host)
    return BearerAuth(app, token) if token else app


def serve_http(server: MCPServer, host: str, port: int, token: str | None) -> None:
    """Serve ``server`` on ``http://host:port/mcp`` until stopped (the app is built, and checked, first)."""
    app = http_app(server, host=host, token=token)
    import uvicorn

    shown = f"[{host}]" if ":" in host else host
    print(
        f"EMage MCP server on http://{shown}:{port}/mcp" + (" (bearer token required)" if token else ""),
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
