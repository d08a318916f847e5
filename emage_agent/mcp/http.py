"""The MCP server over streamable HTTP, behind a bearer token and a Host/Origin check.

Every HTTP request must carry ``Authorization: Bearer <token>`` (``EMAGE_MCP_TOKEN``), checked with
``hmac.compare_digest``; a token is mandatory when bound to anything but loopback.

DNS rebinding: a web page can point its own name at 127.0.0.x and drive a local server through the
browser. So for every bind but a wildcard one, the ``Host`` (and any ``Origin``) must name the bind
address and port, or one of the configured names (``EMAGE_MCP_ALLOWED_HOSTS``); anything else gets
421/403 from the SDK's transport security, whatever the spelling of the loopback address. A wildcard
bind (``0.0.0.0``, ``::``) requires the token, and checks the Host when names are configured.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import sys
from collections.abc import Sequence
from typing import Any

from mcp.server import Server
from mcp.server.transport_security import TransportSecuritySettings

from emage_agent.errors import UserError


def is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _name(host: str) -> str:
    """A host as it appears in a ``Host`` header: lower case, IPv6 in brackets."""
    bare = host.strip().strip("[]").lower()
    return f"[{bare}]" if ":" in bare else bare


def _spellings(host: str) -> set[str]:
    """The names a client may put in ``Host`` for ``host``: as given and, for an address, its canonical form."""
    bare = host.strip().strip("[]").lower()
    names = {_name(bare)}
    with contextlib.suppress(ValueError):
        names.add(_name(str(ipaddress.ip_address(bare))))
    return names


def is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_unspecified
    except ValueError:
        return False


def host_check(host: str, port: int | None, names: Sequence[str] = ()) -> TransportSecuritySettings:
    """The Host/Origin rule for a bind: its own address and port plus ``names``; off only for a bare wildcard."""
    if is_wildcard(host) and not names:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    allowed: set[str] = set()
    for name in [*([] if is_wildcard(host) else [host]), *names]:
        allowed |= _spellings(name)
    bare = host.strip().strip("[]").lower()
    if bare == "localhost":
        allowed |= {"127.0.0.1", "[::1]"}
    elif is_loopback(bare) and bare in ("127.0.0.1", "::1"):
        allowed.add("localhost")
    suffix = f":{port}" if port is not None else ":*"
    hosts = sorted(f"{name}{suffix}" for name in allowed) + (sorted(allowed) if port == 80 else [])
    origins = sorted(f"http://{name}{suffix}" for name in allowed) + (
        sorted(f"http://{name}" for name in allowed) if port == 80 else []
    )
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


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
) -> Any:
    """The streamable HTTP ASGI app; refuses a non-loopback host without a token, enforces any token, and
    answers only requests whose Host/Origin name this bind (``port`` None: any port) or ``allowed_hosts``."""
    if not token and not is_loopback(host):
        raise UserError(
            f"refusing to serve MCP on {host} without a bearer token; set EMAGE_MCP_TOKEN (clients "
            "then send 'Authorization: Bearer <token>') or bind 127.0.0.1",
            field="EMAGE_MCP_TOKEN",
        )
    app = server.streamable_http_app(host=host, transport_security=host_check(host, port, allowed_hosts))
    return BearerAuth(app, token) if token else app


def serve_http(server: Server[Any], host: str, port: int, token: str | None, allowed_hosts: Sequence[str] = ()) -> None:
    """Serve ``server`` on ``http://host:port/mcp`` until stopped (the app is built, and checked, first)."""
    app = http_app(server, host=host, port=port, token=token, allowed_hosts=allowed_hosts)
    import uvicorn

    shown = f"[{host}]" if ":" in host else host
    print(
        f"EMage MCP server on http://{shown}:{port}/mcp" + (" (bearer token required)" if token else ""),
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
