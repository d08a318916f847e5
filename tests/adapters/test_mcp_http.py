"""Streamable HTTP: a real uvicorn server on 127.0.0.1 (random port), the SDK's HTTP client, and raw requests.

The bearer token is checked on every request; without one the server may only listen on loopback.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from emage_agent.adapters.mcp.server import BearerAuth, build_server, http_app, is_loopback, main
from emage_agent.core.errors import UserError
from tests.support.scripted import scripted_agent
from tests.support.uvicorn_thread import uvicorn_on_free_port

pytestmark = pytest.mark.anyio
TOKEN = "t0ken-for-tests-9f3ab1c2d4e5"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def server(tmp_path: Path) -> Any:
    agent = scripted_agent(tmp_path / "sessions")
    return build_server(lambda: agent)


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 and a free port; yields the MCP endpoint URL."""
    with uvicorn_on_free_port(lambda _port: app) as port:
        yield f"http://127.0.0.1:{port}/mcp"


def post(url: str, authorization: str | None = None) -> httpx2.Response:
    headers = dict(HEADERS, **({"Authorization": authorization} if authorization is not None else {}))
    with httpx2.Client(timeout=20) as http:
        return http.post(url, json=INIT, headers=headers)


async def list_tools(url: str, token: str | None) -> list[str]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        return [t.name for t in (await client.list_tools()).tools]


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
async def test_token_is_required_on_every_request(server: Any, host: str) -> None:
    app = http_app(server, host=host, token=TOKEN)
    assert isinstance(app.app, BearerAuth)  # inside the Host/Origin guard
    with serving(app) as url:
        for auth in (None, "", "Bearer", "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN):
            response = post(url, auth)
            assert response.status_code == 401, auth
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in response.text
        assert post(url, f"Bearer {TOKEN}").status_code == 200
        assert post(url, f"bearer {TOKEN}").status_code == 200
        assert "generate" in await list_tools(url, TOKEN)
        with pytest.raises(Exception):  # noqa: B017 - the SDK surfaces the 401 as its own error type
            await list_tools(url, "wrong-token")


async def test_loopback_without_a_token_needs_no_header(server: Any) -> None:
    with serving(http_app(server, host="127.0.0.1")) as url:
        assert post(url).status_code == 200
        assert "refine" in await list_tools(url, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org"])
def test_non_loopback_without_a_token_refuses_to_start(server: Any, host: str) -> None:
    with pytest.raises(UserError) as info:
        http_app(server, host=host, token=None)
    assert info.value.field == "EMAGE_MCP_TOKEN"


def test_main_refuses_before_listening(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EMAGE_MCP_TOKEN", raising=False)
    monkeypatch.setenv("EMAGE_SESSION_ROOT", str(tmp_path / "sessions"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="EMAGE_MCP_TOKEN"):
        main(http=True, host="0.0.0.0", port=1)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("myhost", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


class ThreadedExecutor:
    """The UI tests' counting executor, also noting which worker thread (which tool call) each GPU job came from."""

    def __init__(self, delay: float) -> None:
        from tests.adapters.test_ui_runs import CountingExecutor

        self.inner = CountingExecutor(delay)
        self.threads: list[int] = []

    def run(self, tool: str, args: dict[str, Any], images: Any = None, on_step: Any = None) -> Any:
        self.threads.append(threading.get_ident())
        return self.inner.run(tool, args, images, on_step)


async def test_two_clients_share_one_gpu_queue_side_by_side(tmp_path: Path) -> None:
    """Two MCP clients at once over HTTP: their calls run side by side (GPU jobs of the two interleave,
    first come first served), GPU work never overlaps (the queue's counters and the executor's own agree),
    and each client's progress tells only of its own call."""
    from emage_agent.engine import GpuQueue

    agent = scripted_agent(tmp_path / "sessions", [0.5])
    executor = ThreadedExecutor(delay=0.1)
    gpu = GpuQueue(executor)
    server = build_server(lambda: agent, gpu=gpu)
    args = {"iterations": 2, "planner": "selector", "width": 64, "height": 64, "steps": 2}

    async def client_call(url: str, prompt: str, seen: list[str]) -> Any:
        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            seen.append(message or "")

        async with (
            httpx2.AsyncClient(timeout=60) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            return await client.call_tool("refine", {"prompt": prompt, **args}, progress_callback=on_progress)

    progress: dict[str, list[str]] = {"fox": [], "owl": []}
    results: dict[str, Any] = {}
    with serving(http_app(server, host="127.0.0.1")) as url:

        async def one(name: str) -> None:
            results[name] = await client_call(url, f"a {name} on a roof", progress[name])

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, "fox")
            tg.start_soon(one, "owl")
    for name, result in results.items():
        assert not result.is_error, (name, result.content)
        assert result.structured_content["stopped_because"] == "iteration_limit"
    assert gpu.max_overlap == 1 and executor.inner.most_inside == 1
    assert gpu.calls == len(executor.threads) >= 6  # a first image and two repairs for each client
    assert len(set(executor.threads)) == 2, "the two calls did not run side by side"
    switches = sum(a != b for a, b in zip(executor.threads, executor.threads[1:], strict=False))
    assert switches >= 2, "the calls ran one after the other, not side by side"
    per_thread = sorted(2 * executor.threads.count(t) for t in set(executor.threads))  # 2 diffusion steps a job
    assert sorted(sum("diffusion" in m for m in seen) for seen in progress.values()) == per_thread
