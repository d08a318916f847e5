"""MCP with the real pieces: the tiny random-weight FLUX family, the real google-genai client against
the fake Gemini endpoint, the real Agent, driven by the SDK's client in process and over stdio.

Fixtures (``tiny_settings``, ``executor``, ``gemini_settings``, ``fake_gemini``) come from
``tests/fixtures_flux.py`` and ``tests/fixtures_gemini.py``.
"""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.types import ImageContent, TextContent
from PIL import Image
from pydantic import SecretStr

from emage_agent.adapters.mcp.server import build_server
from emage_agent.api import Agent
from emage_agent.core.settings import Settings
from tests.support.fake_gemini import evaluation_reply, function_call_reply

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[2]
STYLE = {"category": "style", "severity": 0.8, "description": "the car should be blue", "target": "car"}
GENERATE = {"prompt": "a red fox on a blue car", "width": 64, "height": 64, "steps": 2, "seed": 7}
MASK = {"target": "the fox", "box": [200, 200, 800, 800], "threshold": 0.4}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(tiny_settings: Settings, gemini_settings: Settings, tmp_path: Path) -> Settings:
    gemini = {k: v for k, v in gemini_settings if k.startswith("gemini_")}
    return tiny_settings.model_copy(update={**gemini, "session_root": tmp_path / "sessions"})


def text_of(result: Any) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def thumb_of(result: Any) -> Image.Image:
    block = next(c for c in result.content if isinstance(c, ImageContent))
    return Image.open(io.BytesIO(base64.b64decode(block.data)))


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as the environment variables a subprocess reads them from."""
    names = {"gemini_api_key": "GEMINI_API_KEY", "hf_token": "HF_TOKEN"}
    env: dict[str, str] = {}
    for field, value in settings:
        if value is None:
            continue
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        env[names.get(field, f"EMAGE_{field.upper()}")] = text
    return env


async def test_generate_and_make_mask_in_process(settings: Settings, executor: Any) -> None:
    diffusion: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        if message and message.startswith("diffusion"):
            diffusion.append(message)

    async with Client(build_server(lambda: Agent(settings, executor=executor))) as client:
        made = await client.call_tool("generate", GENERATE, progress_callback=on_progress)
        assert not made.is_error, text_of(made)
        data = made.structured_content
        with Image.open(data["image"]) as full:
            assert full.size == (64, 64)
        assert thumb_of(made).size == (64, 64)  # already smaller than a thumbnail
        assert len(diffusion) == 2
        mask = await client.call_tool("make_mask", {**MASK, "session_id": data["session_id"]})
        assert not mask.is_error, text_of(mask)
        assert mask.structured_content["artifact_id"].endswith("-mask")
        assert "mask covers" in mask.structured_content["note"]


async def test_refine_with_the_gemini_planner(settings: Settings, executor: Any, fake_gemini: Any) -> None:
    fake_gemini.queue(
        evaluation_reply(0.5, [STYLE]),
        function_call_reply(("canny_edit", {"prompt": "a red fox on a blue car", "steps": 2})),
        evaluation_reply(0.9, []),
    )
    async with Client(build_server(lambda: Agent(settings, executor=executor))) as client:
        result = await client.call_tool("refine", {**GENERATE, "iterations": 2, "planner": "gemini"})
        assert not result.is_error, text_of(result)
        data = result.structured_content
        assert data["satisfaction_score"] == 0.9 and data["stopped_because"] == "threshold"
        assert [h["tool"] for h in data["history"]] == ["generate", "canny_edit"]
        assert Path(data["final_image"]).is_file()
        history = await client.call_tool("session_history", {"session_id": data["session_id"]})
        assert history.structured_content["best_step"] == data["best_step"]
    assert fake_gemini.pending == 0


async def test_generate_and_make_mask_over_stdio(settings: Settings, tmp_path: Path) -> None:
    env = {
        **settings_env(settings),
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "EMAGE_DEVICE": "cpu",
    }
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "emage_agent.adapters.mcp.server"], env=env, cwd=tmp_path
    )
    async with Client(params, read_timeout_seconds=300) as client:
        made = await client.call_tool("generate", GENERATE)
        assert not made.is_error, text_of(made)
        sid = made.structured_content["session_id"]
        mask = await client.call_tool("make_mask", {**MASK, "session_id": sid})
        assert not mask.is_error, text_of(mask)
        outside = await client.call_tool("inpaint", {"prompt": "a fox", "mask": "/etc/passwd", "session_id": sid})
        assert outside.is_error and "mask: " in text_of(outside)
    assert (settings.session_root / sid / "summary.json").is_file()
