"""The Host/Origin rule shared by the MCP HTTP server and the web UI: which names each bind answers, as a table,
and the ASGI guard's answers to a refused request (421 Host, 403 Origin, a closed websocket)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from emage_agent.adapters.netguard import HostGuard, HostRule, host_rule


@pytest.mark.parametrize(
    ("bind", "names", "admitted", "refused"),
    [
        ("127.0.0.1", (), ["127.0.0.1:8000", "localhost:8000", "LOCALHOST:8000"], ["evil.example:8000", "127.0.0.1:9"]),
        ("127.0.0.2", (), ["127.0.0.2:8000"], ["127.0.0.1:8000", "localhost:8000", "evil.example"]),
        ("Localhost", (), ["localhost:8000", "127.0.0.1:8000", "[::1]:8000"], ["evil.example:8000"]),
        ("0:0:0:0:0:0:0:1", (), ["[::1]:8000", "[0:0:0:0:0:0:0:1]:8000"], ["localhost:8000", "[::2]:8000"]),
        ("10.0.0.5", ("studio.lan",), ["10.0.0.5:8000", "studio.lan:8000"], ["studio.lan:81", "evil.example:8000"]),
        ("0.0.0.0", ("studio.lan",), ["studio.lan:8000", "localhost:8000", "127.0.0.1:8000"], ["evil.example:8000"]),
    ],
)
def test_the_names_a_bind_answers(bind: str, names: tuple[str, ...], admitted: list[str], refused: list[str]) -> None:
    rule = host_rule(bind, 8000, names)
    assert rule.enabled
    for host in admitted:
        assert rule.host_ok(host), host
        assert rule.origin_ok(f"http://{host}"), host
    for host in [*refused, "", None]:
        assert not rule.host_ok(host), host
    for host in refused:
        assert not rule.origin_ok(f"http://{host}"), host
    assert rule.origin_ok(None)  # no Origin: not sent by another site's page


def test_a_bare_wildcard_checks_nothing_and_an_unknown_port_any_port() -> None:
    assert not host_rule("0.0.0.0", 8000).enabled and host_rule("::", 8000).host_ok("evil.example")
    rule = host_rule("127.0.0.1", None)
    assert rule.host_ok("127.0.0.1:1234") and rule.host_ok("localhost:9")
    assert not rule.host_ok("127.0.0.10:1234") and not rule.host_ok("evil.example:1234")
    assert host_rule("127.0.0.1", 80).host_ok("localhost")  # the default port may go unsaid


def _call(rule: HostRule, kind: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    """What the guard sends for one request, or ``reached`` when it passed the request on."""
    sent: list[dict[str, Any]] = []
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["type"])

    guard = HostGuard(app, rule)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": kind, "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(guard(scope, receive, send))
    return [{"type": "reached"}] if reached else sent


def test_the_guard_answers_421_for_a_host_403_for_an_origin_and_closes_a_websocket() -> None:
    rule = host_rule("127.0.0.1", 8000)
    own = {"host": "127.0.0.1:8000"}
    assert _call(rule, "http", own) == [{"type": "reached"}]
    assert _call(rule, "http", {**own, "origin": "http://localhost:8000"}) == [{"type": "reached"}]
    assert _call(rule, "http", {"host": "evil.example:8000"})[0]["status"] == 421
    assert _call(rule, "http", {})[0]["status"] == 421
    assert _call(rule, "http", {**own, "origin": "http://evil.example:8000"})[0]["status"] == 403
    assert _call(rule, "websocket", {"host": "evil.example"}) == [{"type": "websocket.close", "code": 1008}]
    assert _call(rule, "lifespan", {}) == [{"type": "reached"}]
