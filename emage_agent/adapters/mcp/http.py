"""The MCP server over streamable HTTP, behind a bearer token and a Host/Origin check.

Every HTTP request must carry ``Authorization: Bearer <token>`` (``EMAGE_MCP_TOKEN``), checked with
``hmac.compare_digest``; a token is mandatory when bound to anything but loopback.

DNS rebinding: for every bind but a wildcard one, the ``Host`` (and any ``Origin``) must name the bind
address and port, or one of the configured names (``EMAGE_MCP_ALLOWED_HOSTS``); anything else gets
421/403, whatever the spelling of the loopback address. The rule and its check live in
``emage_agent.adapters.netguard``, shared with the web UI. A wildcard bind (``0.0.0.0``, ``::``) requires the
token, and checks the Host when names are configured.
"""

from __future__ import annotations

import hmac
import sys
from collections.abc import Sequence
from typing import Any

from mcp.server import Server
from mcp.server.transport_security import TransportSecuritySettings

from emage_agent.adapters.mcp.httpsessions import HTTP_SESSIONS, IDLE_S, SessionTable
from emage_agent.adapters.netguard import HostGuard, host_rule
from emage_agent.adapters.netguard import is_loopback as is_loopback
from emage_agent.core.errors import UserError


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


def http_app(
    server: Server[Any],
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    token: str | None = None,
    allowed_hosts: Sequence[str] = (),
    sessions: int = HTTP_SESSIONS,
) -> Any:
    """The streamable HTTP ASGI app; refuses a non-loopback host without a token, enforces any token, and
    answers only requests whose Host/Origin name this bind (``port`` None: any port) or ``allowed_hosts``."""
    if not token and not is_loopback(host):
        raise UserError(
            f"refusing to serve MCP on {host} without a bearer token; set EMAGE_MCP_TOKEN (clients "
            "then send 'Authorization: Bearer <token>') or bind 127.0.0.1",
            field="EMAGE_MCP_TOKEN",
        )
    # The Host/Origin check is ours (``HostGuard``, shared with the web UI); the SDK's transport keeps its
    # Content-Type check. Host first: a foreign page does not even learn that a token is needed.
    app = server.streamable_http_app(
        host=host,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        session_idle_timeout=IDLE_S,
        max_sessions=sessions * 2,  # our table ends idle sessions first; this only backs it up
    )
    app = SessionTable(app, sessions)
    return HostGuard(BearerAuth(app, token) if token else app, host_rule(host, port, allowed_hosts))


def serve_http(
    server: Server[Any],
    host: str,
    port: int,
    token: str | None,
    allowed_hosts: Sequence[str] = (),
    sessions: int = HTTP_SESSIONS,
) -> None:
    """Serve ``server`` on ``http://host:port/mcp`` until stopped (the app is built, and checked, first)."""
    app = http_app(server, host=host, port=port, token=token, allowed_hosts=allowed_hosts, sessions=sessions)
    import uvicorn

    shown = f"[{host}]" if ":" in host else host
    print(
        f"EMage MCP server on http://{shown}:{port}/mcp" + (" (bearer token required)" if token else ""),
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
