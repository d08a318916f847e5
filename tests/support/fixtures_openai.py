"""Fixtures for the stand-in OpenAI-compatible server: a started server per test and settings pointing at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emage_agent.core.settings import Settings
from tests.support.fake_openai import FAKE_OPENAI_KEY, FakeOpenAI


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    """A stand-in server on 127.0.0.1 (random port); what each server accepts is forgotten around it."""
    from emage_agent.vlm.openai_compat.client import forget_servers

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    forget_servers()
    with FakeOpenAI() as fake:
        yield fake
    forget_servers()


@pytest.fixture
def openai_settings(fake_openai: FakeOpenAI) -> Settings:
    """The judge and planner on ``fake_openai`` with a fake key; retries bounded and fast."""
    return Settings(
        _env_file=None,
        vlm="openai",
        openai_api_key=FAKE_OPENAI_KEY,
        openai_base_url=fake_openai.url,
        openai_model="fake-vlm",
        openai_timeout_s=5.0,
        openai_max_attempts=4,
        openai_max_retry_s=5.0,
        openai_retry_initial_s=0.002,
    )
