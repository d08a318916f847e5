"""Whole sessions judged and planned through the OpenAI-compatible backend: the Agent and the CLI, tiny FLUX."""

from __future__ import annotations

import json
import os
import re
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from emage_agent.api import Agent
from tests.adapters.test_cli import SMALL, cli_env, emage
from tests.loop.test_session_loop import PROMPTY, STYLE, Script
from tests.session.test_store import SUMMARY_KEYS
from tests.support import fake_openai as fo
from tests.support.fake_gemini import function_call_reply
from tests.support.fake_openai import FAKE_OPENAI_KEY

CANNY = ("canny_edit", {"prompt": "a red fox on a blue car", "steps": 2})


class OpenAIScript:
    """Routes the stand-in's requests by purpose and serves each purpose's replies in order."""

    def __init__(self, fake: Any, evals: list[tuple[float, list[dict]]], plans: list[Any] = (), rewrites=()) -> None:
        self.evals, self.plans, self.rewrites = deque(evals), deque(plans), deque(rewrites)
        self.seen: dict[str, int] = {}
        fake.handler = self

    def __call__(self, request: fo.Request) -> Any:
        purpose = request.purpose
        self.seen[purpose] = self.seen.get(purpose, 0) + 1
        if purpose == "evaluate" and self.evals:
            score, issues = self.evals.popleft()
            return fo.evaluation_reply(score, issues, summary=f"score {score}")
        if purpose == "plan" and self.plans:
            return self.plans.popleft()
        if purpose == "rewrite" and self.rewrites:
            return fo.rewrite_reply(self.rewrites.popleft())
        return None


@pytest.fixture
def settings(tiny_settings: Any, openai_settings: Any, tmp_path: Path) -> Any:
    vlm = {k: v for k, v in openai_settings.model_dump().items() if k.startswith(("openai_", "vlm"))}
    return tiny_settings.model_copy(update={**vlm, "session_root": tmp_path / "sessions"})


def test_whole_session_evaluates_plans_and_rewrites(settings: Any, executor: Any, fake_openai: Any) -> None:
    script = OpenAIScript(
        fake_openai,
        evals=[(0.4, [PROMPTY]), (0.6, [STYLE]), (0.95, [])],
        plans=[fo.tool_call_reply(("rewrite_prompt", {"focus": "say where the fox is"})), fo.tool_call_reply(CANNY)],
        rewrites=["a red fox sitting on the roof of a blue car"],
    )
    agent = Agent(settings, executor=executor)
    agent.check_ready()
    session = agent.start("a red fox on a blue car", width=64, height=64, steps=2, seed=3, iterations=3)
    summary = session.run()
    assert summary["stopped_because"] == "threshold" and summary["satisfaction_score"] == 0.95
    tools = [h["tool"] for h in summary["history"]]
    assert tools == ["generate", "rewrite_prompt", "generate", "canny_edit"], tools
    rewritten = [s for s in session.store.steps() if s.tool == "rewrite_prompt"][0]
    assert rewritten.prompt == "a red fox sitting on the roof of a blue car"
    assert script.seen == {"evaluate": 3, "plan": 2, "rewrite": 1} and fake_openai.unscripted == 0
    used = {"backend": "openai", "model": "fake-vlm"}
    assert summary["vlm"] == {"evaluate": used, "plan": used, "rewrite": used}
    calls = session.store.calls()
    assert len(calls) == 6 and {c["extra"]["backend"] for c in calls} == {"openai"}
    assert all(c["input_tokens"] == 120 and c["output_tokens"] == 30 for c in calls)
    report = (session.dir / "report.html").read_text()
    assert "<td>openai</td><td>fake-vlm</td>" in report
    for path in session.dir.rglob("*"):
        if path.is_file():
            assert FAKE_OPENAI_KEY.encode() not in path.read_bytes(), path


def test_openai_judges_and_gemini_plans(
    settings: Any, gemini_settings: Any, executor: Any, fake_openai: Any, fake_gemini: Any
) -> None:
    gemini = {k: v for k, v in gemini_settings.model_dump().items() if k.startswith("gemini_")}
    split = settings.model_copy(update={**gemini, "planner_vlm": "gemini"})
    OpenAIScript(fake_openai, evals=[(0.5, [STYLE]), (0.9, [])])
    Script(fake_gemini, evals=[], plans=[function_call_reply(CANNY)])
    summary = Agent(split, executor=executor).start("a red fox on a blue car", width=64, height=64, steps=2).run()
    assert summary["vlm"]["evaluate"] == {"backend": "openai", "model": "fake-vlm"}
    assert summary["vlm"]["plan"] == {"backend": "gemini", "model": "gemini-2.5-flash"}
    assert [r.purpose for r in fake_openai.requests] == ["evaluate", "evaluate"]


def test_cli_runs_with_only_an_openai_compatible_endpoint(settings: Any, fake_openai: Any, tmp_path: Path) -> None:
    OpenAIScript(fake_openai, evals=[(0.5, [STYLE]), (0.9, [])], plans=[fo.tool_call_reply(CANNY)])
    env = {k: v for k, v in cli_env(settings).items() if not k.startswith(("EMAGE_GEMINI", "GEMINI", "GOOGLE"))}
    env.pop("OPENAI_API_KEY", None)
    env.update(EMAGE_VLM="openai", EMAGE_OPENAI_BASE_URL=fake_openai.url, EMAGE_OPENAI_MODEL="fake-vlm")
    result = emage("a red fox on a blue car", *SMALL, "--out", str(tmp_path / "s"), "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary) == SUMMARY_KEYS
    assert summary["vlm"]["evaluate"] == {"backend": "openai", "model": "fake-vlm"}
    assert summary["vlm"]["plan"]["backend"] == "openai"
    assert [h["tool"] for h in summary["history"]] == ["generate", "canny_edit"]
    assert all(r.headers["authorization"] == "Bearer no-key" for r in fake_openai.requests)


def test_doctor_names_and_checks_the_backend(fake_openai: Any, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMAGE_", "GEMINI", "GOOGLE"))}
    env.update(
        EMAGE_VLM="openai",
        EMAGE_OPENAI_BASE_URL=fake_openai.url,
        EMAGE_OPENAI_MODEL="fake-vlm",
        OPENAI_API_KEY=FAKE_OPENAI_KEY,
        COLUMNS="200",
    )
    result = emage("doctor", env=env, cwd=tmp_path, timeout=120)
    assert "openai: fake-vlm at" in result.stdout and "answered" in result.stdout, result.stdout
    assert FAKE_OPENAI_KEY not in result.stdout + result.stderr
    assert fake_openai.requests[-1].path == "/v1/models"


def test_cli_shows_the_servers_retries_with_their_count(settings: Any, fake_openai: Any, tmp_path: Path) -> None:
    """The server answers 503 once: one plain line with the attempt and EMAGE_OPENAI_MAX_ATTEMPTS, then it goes on."""
    fake_openai.queue(fo.error_reply(503, "busy"))
    OpenAIScript(fake_openai, evals=[(0.9, [])])
    env = {k: v for k, v in cli_env(settings).items() if not k.startswith(("EMAGE_GEMINI", "GEMINI", "GOOGLE"))}
    env.update(
        EMAGE_VLM="openai", EMAGE_OPENAI_BASE_URL=fake_openai.url, EMAGE_OPENAI_MODEL="fake-vlm",
        EMAGE_OPENAI_MAX_ATTEMPTS="3", EMAGE_OPENAI_RETRY_INITIAL_S="0.01",
    )  # fmt: skip
    result = emage("a red fox on a blue car", *SMALL, "--out", str(tmp_path / "s"), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = re.findall(r"^\s*retry\s+(.*)$", result.stderr, re.M)
    assert [re.sub(r"in \d+\.\d s$", "in N s", line) for line in lines] == [
        "judge unreachable (503), retry 2/3 in N s"
    ], result.stderr
