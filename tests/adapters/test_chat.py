"""The chat REPL driven by scripted input lines, checked against the stored session afterwards.

The agent is the real ``Agent`` on scripted collaborators (``test_mcp_support``), so the
session, the loop and the store are real and the scores the loop sees are known.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from emage_agent.adapters.chat import run_chat
from emage_agent.core.errors import UserError
from tests.support.scripted import scripted_agent

OPTIONS = {"width": 64, "height": 64, "steps": 2, "seed": 3, "planner": "selector"}


def scripted(lines: list[str]) -> Callable[[str], str]:
    """An ``input`` that answers with ``lines`` in order, then end of input (Ctrl-D)."""
    queue = list(lines)

    def read(prompt: str) -> str:
        if not queue:
            raise EOFError
        return queue.pop(0)

    return read


def chat(
    agent: Any, lines: list[str], prompt: str | None = "a red fox on a blue car", session_dir: Path | None = None
) -> tuple[Any, str]:
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None, highlight=False)
    session = run_chat(
        agent, prompt, session_dir, input_fn=scripted(lines), console=console, **({} if session_dir else OPTIONS)
    )
    return session, out.getvalue()


@pytest.fixture
def agent(tmp_path: Path) -> Any:
    return scripted_agent(tmp_path / "sessions", [0.5, 0.6, 0.7, 0.75, 0.65, 0.7, 0.72])


def test_a_whole_conversation(agent: Any) -> None:
    session, out = chat(
        agent,
        [
            "history",
            "make the car blue",
            "revert x",
            "revert 99",
            "histroy",
            "more",
            "undo",
            "revert 1",
            "save",
            "quit",
            "never read",
        ],
    )
    # the first image is shown with its score, issues and path
    assert "step 1 (generate): score 0.50" in out
    assert "[style 0.8] the car should be blue (car)" in out
    assert "image: " in out and "images/step-001.png" in out
    # feedback went to the judge verbatim and is a step of its own
    assert agent.evaluator.seen[1]["feedback"] == ["make the car blue"]
    steps = session.store.steps()
    assert [s.feedback for s in steps if s.tool == "feedback"] == ["make the car blue"]
    assert "decided: " in out
    # bad commands: one line each, and the conversation went on
    assert "revert needs a step number, e.g. `revert 2`" in out
    assert f"error: step: no step 99 in session {session.id}" in out
    assert "unknown command `histroy` (did you mean `history`?)" in out
    # more ran one iteration; undo then revert moved the head
    assert sum(1 for s in steps if s.tool in ("canny_edit", "depth_edit", "inpaint", "generate")) >= 3
    assert "reverted to step 1" in out
    assert session.store.head().step == 1
    # save says where things are, and summary.json is current
    summary = json.loads((session.dir / "summary.json").read_text())
    assert summary == session.summary()
    assert f"session: {session.dir}" in out
    assert f"best image: {summary['final_image']}" in out
    assert "never read" not in out and "saved: " in out


def test_sentences_that_start_with_a_command_word_are_feedback(agent: Any) -> None:
    session, out = chat(agent, ["more red in the sky", "undo the blue tint"])
    feedback = [s.feedback for s in session.store.steps() if s.tool == "feedback"]
    assert feedback == ["more red in the sky", "undo the blue tint"]
    assert "unknown command" not in out


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("more x", "more takes a number of iterations from 1 to 20"),
        ("more 0", "more takes a number of iterations from 1 to 20"),
        ("undo 3", "undo takes no argument; use `revert N`"),
        ("history all", "history takes no argument"),
        ("/frobnicate", "unknown command `/frobnicate`"),
        ("revret", "did you mean `revert`?"),
    ],
)
def test_bad_commands_print_one_line_and_change_nothing(agent: Any, line: str, message: str) -> None:
    session, out = chat(agent, [line, "history"])
    assert message in out
    assert [s.tool for s in session.store.steps()] == ["generate"]


def test_undo_at_the_first_step_is_refused_politely(agent: Any) -> None:
    session, out = chat(agent, ["undo", "help"])
    assert "error: nothing to undo" in out
    assert "Commands: more [N]" in out
    assert session.store.head().step == 1


def test_continue_a_session_by_directory(agent: Any) -> None:
    first, _ = chat(agent, ["quit"])
    again, out = chat(agent, ["more", "history"], prompt=None, session_dir=first.dir)
    assert again.id == first.id
    assert f"session: {first.dir}" in out
    assert len(again.store.steps()) > 1
    assert "<- current" in out


def test_events_are_shown_live_and_the_callers_handler_still_runs(agent: Any) -> None:
    seen: list[str] = []
    agent.on_event = lambda e: seen.append(e.kind)
    _, out = chat(agent, ["more"])
    assert "score" in seen and "diffusion" in seen
    assert "   score  step" in out  # the live line for a score event
    assert agent.on_event is not None and agent.on_event.__name__ == "<lambda>"


def test_an_empty_prompt_is_a_user_error(agent: Any) -> None:
    with pytest.raises(UserError):
        chat(agent, [], prompt="   ")
