"""Which ``Host`` and ``Origin`` a local server answers, and the ASGI guard that refuses the rest.

DNS rebinding: a web page can point its own name at 127.0.0.x and drive a local server through the
visitor's browser; the browser then sends the page's name in ``Host`` (and its origin in ``Origin``).
So a server bound to one address answers only requests that name that address and port (in any of
its spellings: ``127.0.0.1``/``localhost``, ``::1``/``0:0:0:0:0:0:0:1``), or a name the operator
configured. A wildcard bind (``0.0.0.0``, ``::``) is reached under names we cannot know: it checks
only when names are configured, and then also admits the loopback names (a rebinding page cannot
send those). Shared by the MCP HTTP server and the web UI; pure standard library.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_unspecified
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


@dataclass(frozen=True)
class HostRule:
    """The ``Host`` values and ``Origin`` values a server answers; ``enabled`` False: any.

    A host ending in ``:*`` admits that name on any port (a server whose port is not known up front).
    """

    enabled: bool
    hosts: tuple[str, ...] = ()
    origins: tuple[str, ...] = ()

    @staticmethod
    def _match(value: str, allowed: Iterable[str]) -> bool:
        return any(value == p or (p.endswith(":*") and value.startswith(p[:-1])) for p in allowed)

    def host_ok(self, host: str | None) -> bool:
        return not self.enabled or (host is not None and self._match(host.strip().lower(), self.hosts))

    def origin_ok(self, origin: str | None) -> bool:
        """A request without ``Origin`` is not from another site's page; one with it must name this server."""
        return not self.enabled or not origin or self._match(origin.strip().lower(), self.origins)


def host_rule(host: str, port: int | None, names: Sequence[str] = ()) -> HostRule:
    """The rule for a bind on ``host:port`` (``port`` None: any port) plus the configured ``names``."""
    wildcard = is_wildcard(host)
    if wildcard and not names:
        return HostRule(enabled=False)
    allowed: set[str] = set()
    for name in [*([] if wildcard else [host]), *names, *(LOOPBACK_NAMES if wildcard else ())]:
        allowed |= _spellings(name)
    bare = host.strip().strip("[]").lower()
    if bare == "localhost":
        allowed |= {"127.0.0.1", "[::1]"}
    elif bare in ("127.0.0.1", "::1"):
        allowed.add("localhost")
    suffix = f":{port}" if port is not None else ":*"
    hosts = sorted(f"{name}{suffix}" for name in allowed) + (sorted(allowed) if port == 80 else [])
    origins = sorted(f"http://{name}{suffix}" for name in allowed) + (
        sorted(f"http://{name}" for name in allowed) if port == 80 else []
    )
    return HostRule(enabled=True, hosts=tuple(hosts), origins=tuple(origins))


class HostGuard:
    """ASGI middleware: a request whose ``Host`` the rule refuses gets 421, a foreign ``Origin`` 403.

    A refused websocket is closed before it is accepted (the server answers the handshake with 403).
    """

    def __init__(self, app: Any, rule: HostRule) -> None:
        self.app = app
        self.rule = rule

    @staticmethod
    def _header(scope: Scope, name: bytes) -> str | None:
        for key, value in scope.get("headers", []):
            if key.lower() == name:
                return value.decode("latin-1")
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.rule.enabled:
            await self.app(scope, receive, send)
            return
        status, body = 0, b""
        if not self.rule.host_ok(self._header(scope, b"host")):
            status, body = 421, b"Invalid Host header"
        elif not self.rule.origin_ok(self._header(scope, b"origin")):
            status, body = 403, b"Invalid Origin header"
        if not status:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
