"""MCP ``resources/list``: recent sessions' best images and reports, bounded and newest first (the real client)."""

from __future__ import annotations

import base64
import io
import os
import time
from pathlib import Path

import pytest
from mcp import Client
from PIL import Image

from emage_agent.adapters.mcp import listing
from emage_agent.adapters.mcp.server import build_server
from tests.support.scripted import scripted_agent

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_resources_list_shows_recent_sessions_best_images_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "sessions"
    agent = scripted_agent(root, [0.5, 0.9] * 10)
    server = build_server(lambda: agent)
    async with Client(server, mode="legacy") as client:
        assert (await client.list_resources()).resources == []  # nothing made yet: an empty list, not an error
        made = []
        for prompt in ("a red fox <b>on</b> a car", "a green owl", "a blue whale"):
            args = {"prompt": prompt, "width": 64, "height": 64, "steps": 2, "iterations": 1, "planner": "selector"}
            result = await client.call_tool("refine", args)
            assert not result.is_error, result.content
            made.append(result.structured_content["session_id"])
            time.sleep(0.02)
        for n, sid in enumerate(made):  # distinct change times, oldest first
            os.utime(root / sid / "session.db", (1_700_000_000 + n, 1_700_000_000 + n))
        listed = (await client.list_resources()).resources
        assert len(listed) == 6
        ids = [str(r.uri).split("/")[3] for r in listed]
        assert ids == [made[2], made[2], made[1], made[1], made[0], made[0]]  # newest first, image then report
        image, report = listed[4], listed[5]
        assert image.mime_type == "image/png" and image.name == f"{made[0]} best image"
        assert "a red fox <b>on</b> a car" in image.description and "best 0.90" in image.description
        assert report.mime_type == "text/html" and str(report.uri) == f"emage://sessions/{made[0]}/report"
        blob = (await client.read_resource(str(image.uri))).contents[0]
        assert Image.open(io.BytesIO(base64.b64decode(blob.blob))).size == (64, 64)
        html = (await client.read_resource(str(report.uri))).contents[0]
        assert html.mime_type == "text/html" and "<!DOCTYPE html>" in html.text and "&lt;b&gt;on&lt;/b&gt;" in html.text

        monkeypatch.setattr(listing, "MAX_SESSIONS", 2)  # bounded: only the newest sessions are listed
        ids = {str(r.uri).split("/")[3] for r in (await client.list_resources()).resources}
        assert ids == {made[2], made[1]}
        with pytest.raises(Exception, match="no session|not a session|session"):
            await client.read_resource("emage://sessions/nope/report")
