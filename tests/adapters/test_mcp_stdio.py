"""The MCP server as a real subprocess over stdio, driven by the SDK's own stdio client.

These need no models: listing, path refusals and configuration errors all happen before
any model would load. Generating over stdio with the tiny FLUX family is in ``test_mcp_flux.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.types import TextContent

from emage_agent.core.resources import data_dir

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def server_params(workdir: Path, **env: str) -> StdioServerParameters:
    """``python -m emage_agent.adapters.mcp.server`` run from an empty folder (so no stray ``.env`` is read)."""
    base = {
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "EMAGE_SESSION_ROOT": str(workdir / "sessions"),
        "EMAGE_DEVICE": "cpu",
    }
    return StdioServerParameters(
        command=sys.executable, args=["-m", "emage_agent.adapters.mcp.server"], env={**base, **env}, cwd=workdir
    )


def text_of(result: Any) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


async def test_stdio_lists_the_contract_schemas(tmp_path: Path) -> None:
    async with Client(server_params(tmp_path), read_timeout_seconds=60) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    for path in data_dir("tools").iterdir():
        if path.name.endswith(".json"):
            contract = json.loads(path.read_text())
            schema = dict(tools[contract["name"]].input_schema)
            props = dict(schema["properties"])
            assert props.pop("session_id")["type"] == "string"
            assert {**schema, "properties": props} == contract["parameters"]
    assert {"evaluate", "refine", "session_history", "revert"} <= set(tools)


async def test_stdio_refuses_paths_outside_the_root_and_keeps_serving(tmp_path: Path) -> None:
    (tmp_path / "sessions").mkdir()
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not really a png")
    async with Client(server_params(tmp_path), read_timeout_seconds=60) as client:
        traversal = await client.call_tool("session_history", {"session_id": "../"})
        outside = await client.call_tool("evaluate", {"image": str(secret), "prompt": "x"})
        dotdot = await client.call_tool("evaluate", {"image": "../secret.png", "prompt": "x"})
        assert (await client.list_tools()).tools
    assert traversal.is_error and text_of(traversal).startswith("bad input: session_id: ")
    assert outside.is_error and "outside the session root" in text_of(outside)
    assert dotdot.is_error and "'..'" in text_of(dotdot)


async def test_stdio_reports_a_missing_key_as_a_tool_error(tmp_path: Path) -> None:
    async with Client(server_params(tmp_path), read_timeout_seconds=60) as client:
        result = await client.call_tool("generate", {"prompt": "a red fox"})
    assert result.is_error
    assert "GEMINI_API_KEY" in text_of(result)


def test_module_refuses_http_on_all_interfaces_without_a_token(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "EMAGE_SESSION_ROOT": str(tmp_path / "s")}
    done = subprocess.run(
        [sys.executable, "-m", "emage_agent.adapters.mcp.server", "--http", "--host", "0.0.0.0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "EMAGE_MCP_TOKEN" in done.stderr and "Traceback" not in done.stderr
