"""Round 3 over MCP: one loopback client opening thousands of HTTP sessions, host-file probing through
``evaluate``, a 1 MB resource URI echoed back, and a decompression bomb as a start picture."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from emage_agent.adapters.mcp.server import build_server
from tests.adapters.test_mcp_http import HEADERS, INIT
from tests.reliability.support import env, text_of
from tests.reliability.test_mcp_server import free_port
from tests.reliability.test_round3_cli import _png_header_only
from tests.support.scripted import scripted_agent

pytestmark = pytest.mark.anyio
CAPACITY = 6


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def small_table_server(tmp_path: Path) -> Iterator[str]:
    """``emage-agent mcp --http`` with a table of CAPACITY client sessions."""
    port = free_port("127.0.0.1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "emage_agent.adapters.cli", "mcp", "--http", "--port", str(port)],
        env=env(tmp_path / "sessions", EMAGE_MCP_HTTP_SESSIONS=str(CAPACITY)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx2.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx2.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "the MCP server did not start"
                time.sleep(0.2)
        yield url
    finally:
        proc.kill()
        proc.wait(10)


def _list_tools(http: httpx2.Client, url: str, sid: str) -> int:
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    headers = {**HEADERS, "mcp-session-id": sid, "mcp-protocol-version": "2025-06-18"}
    return http.post(url, json=body, headers=headers).status_code


async def test_a_flood_of_sessions_cannot_lock_others_out(small_table_server: str) -> None:
    """Item 2: 5x the table's size in ``initialize``s: the oldest idle sessions are ended (404, initialize
    again), the newest still work, and a new client still gets in (the SDK's table used to fill: 503)."""
    url = small_table_server
    with httpx2.Client(timeout=20) as http:
        sids = []
        for _ in range(CAPACITY * 5):
            answer = http.post(url, json=INIT, headers=HEADERS)
            assert answer.status_code == 200, answer.text
            sids.append(answer.headers["mcp-session-id"])
        assert _list_tools(http, url, sids[0]) == 404  # ended to make room: the table is bounded
        assert _list_tools(http, url, sids[-1]) == 200
    async with (
        httpx2.AsyncClient(timeout=30) as http2,
        Client(streamable_http_client(url, http_client=http2)) as client,
    ):
        assert (await client.list_tools()).tools


async def test_outside_and_missing_files_get_one_answer(tmp_path: Path) -> None:
    """Item 12: ``evaluate`` of /etc/passwd and of a missing host file say the same, so nothing is probed."""
    agent = scripted_agent(tmp_path / "sessions")
    (tmp_path / "sessions").mkdir()
    async with Client(build_server(lambda: agent)) as client:
        texts = []
        for path in ("/etc/passwd", "/etc/no-such-file-here"):
            result = await client.call_tool("evaluate", {"image": path, "prompt": "x"})
            assert result.is_error
            texts.append(text_of(result).replace(path, "PATH"))
    assert texts[0] == texts[1], texts
    assert "does not exist inside" not in texts[0]


async def test_a_huge_resource_uri_is_not_echoed(tmp_path: Path) -> None:
    """Item 12: a 1 MB resource URI: the error carries at most a short head of it."""
    agent = scripted_agent(tmp_path / "sessions")
    uri = "emage://sessions/" + "a" * 1_000_000 + "/artifacts/s1-image"
    async with Client(build_server(lambda: agent)) as client:
        with pytest.raises(MCPError) as info:
            await client.read_resource(uri)
    assert len(str(info.value)) < 1000 and len(repr(info.value.data)) < 1000


async def test_a_bomb_over_mcp_is_bad_input(tmp_path: Path) -> None:
    """Item 9: a 40000x40000 start picture over MCP is bad input naming its size, not an ExecutionFailure."""
    root = tmp_path / "sessions"
    root.mkdir()
    bomb = _png_header_only(root / "bomb.png", 40000, 40000)
    agent = scripted_agent(root)
    async with Client(build_server(lambda: agent, root=root)) as client:
        result = await client.call_tool("refine", {"prompt": "a fox", "image": str(bomb), "iterations": 0})
    assert result.is_error
    assert text_of(result).startswith("bad input") and "40000x40000" in text_of(result), text_of(result)
