"""The service on the real pieces: the tiny random-weight FLUX family, the real google-genai client against
the stand-in Gemini endpoint, driven by the official ``openai`` SDK over a real uvicorn server.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openai import OpenAI
from PIL import Image

from emage_agent.adapters.serve.runs import Service
from emage_agent.adapters.serve.state import ServeState
from emage_agent.api import Agent
from emage_agent.core.settings import Settings
from emage_agent.engine import GpuQueue
from emage_agent.session import SessionStore
from tests.support.fake_gemini import FakeGemini, evaluation_reply, function_call_reply
from tests.support.serving import serving

STYLE = {"category": "style", "severity": 0.8, "description": "the square should be blue", "target": "square"}
BOX = (16, 16, 48, 40)


@pytest.fixture
def state(tiny_settings: Settings, gemini_settings: Settings, executor: Any, tmp_path: Path) -> ServeState:
    gemini = {k: v for k, v in gemini_settings if k.startswith("gemini_")}
    settings = tiny_settings.model_copy(update={**gemini, "session_root": tmp_path})
    agent = Agent(settings, executor=executor)
    return ServeState(Service(agent, GpuQueue(executor), tmp_path, concurrency=1, max_waiting=2))


def judge(fake: FakeGemini, scores: list[float]) -> None:
    """Evaluations in order (then the last again); every plan is one canny_edit."""
    left = list(scores)

    def answer(request: Any) -> Any:
        if request.purpose == "evaluate":
            score = left.pop(0) if len(left) > 1 else left[0]
            return evaluation_reply(score, [STYLE] if score < 0.8 else [])
        if request.purpose == "plan":
            return function_call_reply(("canny_edit", {"prompt": "a blue square", "steps": 2}))
        return None

    fake.handler = answer


def pixels(b64: str | None) -> np.ndarray:
    assert b64 is not None
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.int16)


def test_generate_and_a_masked_edit_with_tiny_flux(state: ServeState, fake_gemini: FakeGemini, tiny_image: Any) -> None:
    judge(fake_gemini, [0.4, 0.9])
    with serving(state) as url:
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
        made = client.images.generate(prompt="a red square", size="64x64", extra_body={"steps": 2, "seed": 3})
        assert pixels(made.data[0].b64_json).shape == (64, 64, 3)
        plain = client.images.generate(prompt="a red square", model="flux-dev", size="64x64", extra_body={"steps": 2})
        assert pixels(plain.data[0].b64_json).shape == (64, 64, 3)

        judge(fake_gemini, [0.4, 0.9])
        picture, mask = io.BytesIO(), io.BytesIO()
        tiny_image.save(picture, format="PNG")
        cut = Image.new("RGBA", tiny_image.size, (0, 0, 0, 255))
        cut.paste((0, 0, 0, 0), BOX)  # OpenAI's convention: transparent = change
        cut.save(mask, format="PNG")
        edited = client.images.edit(
            image=("pic.png", picture.getvalue(), "image/png"),
            mask=("mask.png", mask.getvalue(), "image/png"),
            prompt="a blue square",
            extra_body={"iterations": 1, "planner": "gemini"},
        )
    out, original = pixels(edited.data[0].b64_json), np.asarray(tiny_image.convert("RGB"), dtype=np.int16)
    inside = np.zeros(out.shape[:2], dtype=bool)
    inside[BOX[1] : BOX[3], BOX[0] : BOX[2]] = True
    assert np.abs(out[~inside] - original[~inside]).max() <= 2  # outside the mask: the picture as it was
    assert np.abs(out[inside] - original[inside]).mean() > 5  # inside: repaired
    folders = sorted(p for p in state.service.root.iterdir() if (p / "session.db").is_file())
    with SessionStore.open(folders[-1]) as store:
        assert [s.tool for s in store.steps()] == ["upload", "canny_edit"] and store.info.best_step == 2
