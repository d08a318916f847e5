"""MCP refine from the caller's own picture: a file inside the session root, never one outside it."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client

from emage_agent.adapters.mcp.server import build_server
from tests.adapters.test_mcp import text_of
from tests.support.scripted import fake_png, scripted_agent

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_refine_starts_from_a_picture_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "sessions"
    agent = scripted_agent(root, [0.9])
    server = build_server(lambda: agent)
    picture = fake_png(root / "uploads" / "mine.png", size=(100, 64))
    outside = fake_png(tmp_path / "elsewhere.png")
    async with Client(server, mode="legacy") as client:
        result = await client.call_tool("refine", {"prompt": "a blue square", "image": str(picture), "iterations": 0})
        assert not result.is_error, text_of(result)
        data = result.structured_content
        assert [h["tool"] for h in data["history"]] == ["upload"]
        assert data["satisfaction_score"] == 0.9
        refused = await client.call_tool("refine", {"prompt": "a blue square", "image": str(outside)})
        assert refused.is_error and "image" in text_of(refused)
        artifact = await client.call_tool("refine", {"prompt": "a blue square", "image": "s1-image"})
        assert artifact.is_error and "not an artifact id" in text_of(artifact)
