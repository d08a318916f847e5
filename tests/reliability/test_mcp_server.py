"""The MCP server attacked from outside: raw HTTP with foreign Host headers against ``emage-agent mcp --http``,
and the official MCP client for descriptor use, resource reads and refine's options."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import mcp.server
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from emage_agent.adapters.mcp.server import MAX_OPEN_SESSIONS, build_server
from tests.adapters.test_mcp_http import HEADERS, INIT
from tests.reliability.support import SMALL, env, text_of
from tests.support.scripted import scripted_agent

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@pytest.fixture
def http_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    """``emage-agent mcp --http --host HOST --port PORT`` as a real process (no token: loopback)."""
    host = request.param
    port = free_port(host)
    proc = subprocess.Popen(
        [sys.executable, "-m", "emage_agent.adapters.cli", "mcp", "--http", "--host", host, "--port", str(port)],
        env=env(tmp_path / "sessions"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    address = f"[{host}]" if ":" in host else host
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection((host.strip("[]"), port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the MCP server did not start"
                time.sleep(0.2)
        yield address, port
    finally:
        proc.kill()
        proc.wait(10)


def post(url: str, **headers: str) -> httpx2.Response:
    with httpx2.Client(timeout=20) as http:
        return http.post(url, json=INIT, headers={**HEADERS, **headers})


@pytest.mark.parametrize("http_server", ["127.0.0.2", "Localhost", "0:0:0:0:0:0:0:1"], indirect=True)
def test_loopback_alias_refuses_a_foreign_host(http_server: tuple[str, int]) -> None:
    """Item 1: DNS rebinding. A page's own name (or origin) pointing at the loopback alias is refused."""
    address, port = http_server
    connect = address.lower() if address != "Localhost" else "127.0.0.1"
    url = f"http://{connect}:{port}/mcp"
    assert post(url, Host="attacker.example").status_code == 421
    assert post(url, Host=f"attacker.example:{port}").status_code == 421
    own = f"{address.lower()}:{port}"
    assert post(url, Host=own, Origin=f"http://attacker.example:{port}").status_code == 403
    assert post(url, Host=own).status_code == 200


async def test_open_sessions_stay_bounded(tmp_path: Path) -> None:
    """Item 2: descriptors. Past the bound of open sessions, touching more sessions opens no more files
    (the server used to keep every session it touched open: three descriptors each)."""
    agent = scripted_agent(tmp_path / "sessions")

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def touch(client: Client, n: int) -> str:
        result = await client.call_tool("generate", {"prompt": f"fox {n}", **SMALL})
        assert not result.is_error, text_of(result)
        sid = result.structured_content["session_id"]
        assert not (await client.call_tool("session_history", {"session_id": sid})).is_error
        return sid

    async with Client(build_server(lambda: agent)) as client:
        ids = [await touch(client, n) for n in range(MAX_OPEN_SESSIONS + 2)]
        before = fds()
        ids += [await touch(client, n) for n in range(10)]
        grown = fds() - before
        assert not (await client.call_tool("session_history", {"session_id": ids[0]})).is_error  # reopened
    assert grown <= 4, f"{grown} descriptors more after 10 more sessions"


async def test_resource_read_stays_inside_the_session(tmp_path: Path) -> None:
    """Item 3: a symlinked artifact (or a tampered artifact row) never returns a file outside the session."""
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:not for clients\n")
    agent = scripted_agent(tmp_path / "sessions")
    async with Client(build_server(lambda: agent)) as client:
        made = (await client.call_tool("generate", {"prompt": "a fox", **SMALL})).structured_content
        image = Path(made["image"])
        image.unlink()
        image.symlink_to(secret)
        uri = f"emage://sessions/{made['session_id']}/artifacts/s1-image"
        with pytest.raises(MCPError) as info:
            await client.read_resource(uri)
        assert "not for clients" not in str(info.value)
        assert "inside the session" in str(info.value)


async def test_refine_takes_options_of_a_continuing_session(tmp_path: Path) -> None:
    """Item 12: steps/guidance/threshold/iterations apply to the next steps; size and seed are refused with why."""
    agent = scripted_agent(tmp_path / "sessions", [0.5, 0.55, 0.6, 0.65])
    async with Client(build_server(lambda: agent)) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        props = listed["refine"].input_schema["properties"]
        assert "New sessions only" in props["width"]["description"]
        assert "Continuing a session" in props["steps"]["description"]
        first = await client.call_tool("refine", {"prompt": "a fox", "iterations": 0, "planner": "selector", **SMALL})
        sid = first.structured_content["session_id"]
        again = await client.call_tool(
            "refine", {"session_id": sid, "feedback": "make the fox bigger", "steps": 3, "threshold": 0.95}
        )
        assert not again.is_error, text_of(again)
        refused = await client.call_tool("refine", {"session_id": sid, "width": 128})
        assert refused.is_error
        assert "width: cannot change for a continuing session" in text_of(refused)
        assert "first image" in text_of(refused)
    tool, args, _ = agent.executor.calls[-1]
    assert tool != "generate" and args["steps"] == 3


def test_the_server_is_the_sdk_low_level_server(tmp_path: Path) -> None:
    """The server is built on the SDK's documented low-level ``Server`` (no subclass of its internals)."""
    server = build_server(lambda: scripted_agent(tmp_path))
    assert type(server) is mcp.server.Server


def test_a_session_in_use_is_not_closed_when_it_leaves_the_open_set() -> None:
    """Calls run side by side: a session evicted while another call runs on it is closed when that call ends."""
    from emage_agent.adapters.mcp.sessions import OpenSessions

    class Store:
        def __init__(self, name: str) -> None:
            self.name, self.closed = name, 0

        def close(self) -> None:
            self.closed += 1

    open_sessions = OpenSessions(capacity=1)
    busy, idle, other = Store("busy"), Store("idle"), Store("other")
    assert open_sessions.get(Path("a"), lambda _p: busy, hold=True) is busy  # type: ignore[arg-type, return-value]
    open_sessions.put(Path("b"), idle)  # type: ignore[arg-type]
    assert busy.closed == 0 and len(open_sessions) == 1  # left the set, still running
    open_sessions.put(Path("c"), other)  # type: ignore[arg-type]
    assert idle.closed == 1  # nobody used it: closed at once
    open_sessions.release(busy)  # type: ignore[arg-type]
    assert busy.closed == 1
    open_sessions.close_all()
    assert (busy.closed, idle.closed, other.closed) == (1, 1, 1)


async def test_a_running_session_survives_eviction_by_another_client(tmp_path: Path) -> None:
    """With room for one open session, a second client's new session evicts the first client's while it runs:
    the run goes on to its end on its open store, and the store is closed afterwards."""
    import anyio

    from tests.adapters.test_ui_runs import CountingExecutor

    agent = scripted_agent(tmp_path / "sessions", [0.5])
    agent._executor = CountingExecutor(delay=0.05)
    server = build_server(lambda: agent, max_open_sessions=1)
    args = {"iterations": 2, "planner": "selector", **SMALL}
    results: dict[str, Any] = {}

    async def refine(name: str) -> None:
        async with Client(server) as client:
            results[name] = await client.call_tool("refine", {"prompt": f"a {name}", **args})

    async with anyio.create_task_group() as tg:
        tg.start_soon(refine, "fox")
        tg.start_soon(refine, "owl")
    for name, result in results.items():
        assert not result.is_error, (name, text_of(result))
        assert result.structured_content["stopped_because"] == "iteration_limit"
    assert agent.executor.most_inside == 1
