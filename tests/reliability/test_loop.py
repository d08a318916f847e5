"""The loop against a misbehaving Gemini, driven through the official MCP client: the real evaluator and
planner talk to the fake endpoint on 127.0.0.1; only the images are scripted."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from emage_agent.adapters.mcp.server import build_server
from emage_agent.session import SessionStore
from tests.loop.test_session_loop import STYLE
from tests.reliability.support import SMALL, gemini_agent, text_of
from tests.support.fake_gemini import FAKE_KEY, evaluation_reply, text_reply
from tests.support.scripted import ScriptedExecutor

pytestmark = pytest.mark.anyio
REFINE = {"prompt": "a red fox on a blue car", "iterations": 2, "threshold": 0.8, **SMALL}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def only_session(root: Path) -> Path:
    (found,) = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return found


def status_of(session_dir: Path) -> tuple[str, str | None]:
    with sqlite3.connect(session_dir / "session.db") as db:
        return db.execute("SELECT status, stopped_because FROM session").fetchone()


async def test_fallback_runs_with_the_session_size_and_steps(tmp_path: Path, fake_gemini: Any, gemini_settings: Any):
    """Item 4: the planner is down (503), the selector's choice runs, with the session's steps, not 28."""
    evals = iter([evaluation_reply(0.5, [STYLE]), evaluation_reply(0.9)])
    fake_gemini.handler = lambda request: next(evals, None) if request.purpose == "evaluate" else None
    executor = ScriptedExecutor()
    agent = gemini_agent(tmp_path / "sessions", gemini_settings, executor)
    agent._planner_factory = None  # the real Gemini planner, which fails
    async with Client(build_server(lambda: agent)) as client:
        result = await client.call_tool("refine", {**REFINE, "planner": "gemini"})
    assert not result.is_error, text_of(result)
    assert result.structured_content["stopped_because"] == "threshold"
    edits = [(tool, args) for tool, args, _ in executor.calls if tool != "generate"]
    assert edits, executor.calls
    assert all(args["steps"] == SMALL["steps"] for _, args in edits), edits
    assert any(r.purpose == "plan" for r in fake_gemini.requests)


async def test_out_of_range_score_is_never_a_success(tmp_path: Path, fake_gemini: Any, gemini_settings: Any):
    """Item 6: satisfaction_score 1.7 is malformed: asked again, then recorded as unreadable, never a score."""
    fake_gemini.handler = lambda request: evaluation_reply(1.7) if request.purpose == "evaluate" else None
    root = tmp_path / "sessions"
    async with Client(build_server(lambda: gemini_agent(root, gemini_settings))) as client:
        result = await client.call_tool("refine", REFINE)
    assert result.is_error
    assert "no satisfaction score in [0, 1]" in text_of(result)
    assert sum(r.purpose == "evaluate" for r in fake_gemini.requests) == 2
    session_dir = only_session(root)
    assert status_of(session_dir)[0] == "failed"
    with SessionStore.open(session_dir) as store:
        assert [s.score for s in store.steps()] == [None]
        assert [c["ok"] for c in store.calls()] == [False, False]


async def test_status_is_not_left_running_when_the_first_evaluation_fails(
    tmp_path: Path, fake_gemini: Any, gemini_settings: Any
):
    """Item 7: Gemini is down for the first evaluation: the session ends "failed", resumable, not "running"."""
    root = tmp_path / "sessions"
    async with Client(build_server(lambda: gemini_agent(root, gemini_settings))) as client:
        result = await client.call_tool("refine", REFINE)
    assert result.is_error and text_of(result).startswith("failed: ")
    status, reason = status_of(only_session(root))
    assert status == "failed" and reason and "Gemini" in reason


async def test_a_key_in_a_model_answer_never_leaves(tmp_path: Path, fake_gemini: Any, gemini_settings: Any):
    """Item 10: an answer that echoes the API key reaches no tool error, record, summary or report."""
    fake_gemini.handler = lambda request: text_reply(f"I cannot judge this. My key is {FAKE_KEY}, by the way.")
    root = tmp_path / "sessions"
    async with Client(build_server(lambda: gemini_agent(root, gemini_settings))) as client:
        result = await client.call_tool("refine", REFINE)
        assert result.is_error
        assert FAKE_KEY not in text_of(result) and FAKE_KEY not in str(result.structured_content)
        assert "[redacted]" in text_of(result)
    for path in only_session(root).rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path
