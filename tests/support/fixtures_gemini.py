"""Fixtures for the fake Gemini endpoint: a started server per test and settings pointing at it.

``gemini_settings`` carries a fake key, the server's base URL, small retry bounds and a tiny backoff
(``gemini_retry_initial_s``, read by ``GeminiClient``), so retry tests take milliseconds.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from PIL import Image

from emage_agent.core.settings import Settings
from tests.support.fake_gemini import FAKE_KEY, FakeGemini


def make_png(color: tuple[int, int, int] = (200, 30, 30), size: int = 16) -> bytes:
    """A small real PNG; distinct colours give distinct bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def fake_gemini(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGemini]:
    """A fake Gemini server on 127.0.0.1 (random port), stopped after the test."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for name in ("GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_ENTERPRISE", "GOOGLE_GENAI_API_VERSION"):
        monkeypatch.delenv(name, raising=False)
    with FakeGemini() as fake:
        yield fake


@pytest.fixture
def gemini_settings(fake_gemini: FakeGemini) -> Settings:
    """Settings that talk to ``fake_gemini`` with a fake key; retries bounded and fast."""
    return Settings(
        gemini_retry_initial_s=0.002,
        _env_file=None,
        gemini_api_key=FAKE_KEY,
        gemini_base_url=fake_gemini.url,
        gemini_api_version="v1beta",
        gemini_model="gemini-2.5-flash",
        gemini_fallback_model=None,
        gemini_timeout_s=5.0,
        gemini_max_attempts=4,
        gemini_max_retry_s=5.0,
    )


@pytest.fixture
def tiny_png() -> bytes:
    return make_png()
