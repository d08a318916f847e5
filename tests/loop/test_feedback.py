"""Feedback is a request, not a hint: a person's words about the image lead to a new image.

The judge may already be satisfied (score above the threshold, no issues); the loop must still run a
repair that carries the words, through the API, the chat and MCP ``refine`` alike. The agent is the real
``Agent``, loop and store on scripted collaborators (``test_mcp_support``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from emage_agent.adapters.chat import run_chat
from tests.support.scripted import scripted_agent

OPTIONS = {"width": 64, "height": 64, "steps": 2, "seed": 3, "planner": "selector", "iterations": 2}
IMAGE_TOOLS = {"generate", "canny_edit", "depth_edit", "inpaint"}


def image_steps(session: Any) -> list[Any]:
    return [s for s in session.store.steps() if s.tool in IMAGE_TOOLS and s.error is None]


def test_refine_on_a_satisfied_judge_still_repairs_with_the_words(tmp_path: Path) -> None:
    agent = scripted_agent(tmp_path, [0.9, 0.95, 0.82])
    session = agent.start("a red fox on a blue car", **OPTIONS)
    assert session.run()["stopped_because"] == "threshold"
    assert len(image_steps(session)) == 1
    summary = session.refine("make the car darker")
    steps = image_steps(session)
    assert len(steps) == 2, [s.tool for s in session.store.steps()]
    repair = steps[-1]
    assert repair.decision.request == ["make the car darker"]
    kinds = [(s.kind, s.tool) for s in session.store.steps()]
    assert kinds[:2] == [("initial", "generate"), ("feedback", "feedback")] and kinds[2][0] in ("tool", "follow_up")
    assert "make the car darker" in repair.args["prompt"]  # the words reached the image tool
    # the judge saw the remark verbatim, and the head is the repair even though it scored lower
    assert agent.evaluator.seen[1]["feedback"] == ["make the car darker"]
    assert session.store.head().step == repair.step and not repair.rolled_back
    assert summary["stopped_because"] == "threshold"
    tool_calls = [c[0] for c in agent.executor.calls]
    assert tool_calls == ["generate", repair.tool]


def test_a_request_does_not_override_a_spent_budget(tmp_path: Path) -> None:
    agent = scripted_agent(tmp_path, [0.9, 0.95])
    session = agent.start("a red fox on a blue car", **{**OPTIONS, "max_gpu_seconds": 0.01})
    session.run()
    summary = session.refine("make the car darker")
    assert summary["stopped_because"] == "gpu_budget"
    assert len(image_steps(session)) == 1


def test_one_request_one_repair_then_the_judge_decides_again(tmp_path: Path) -> None:
    agent = scripted_agent(tmp_path, [0.9, 0.95, 0.9, 0.9])
    session = agent.start("a red fox on a blue car", **OPTIONS)
    session.run()
    session.refine("add a moon", iterations=3)
    assert len(image_steps(session)) == 2  # the request was answered; a satisfied judge then stops


def test_chat_feedback_on_a_good_image_makes_a_new_one(tmp_path: Path) -> None:
    agent = scripted_agent(tmp_path, [0.9, 0.92, 0.88])
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None, highlight=False)
    lines = iter(["the fox should sit on the roof"])

    def read(_prompt: str) -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    session = run_chat(agent, "a red fox on a blue car", None, input_fn=read, console=console, **OPTIONS)
    steps = image_steps(session)
    assert len(steps) == 2
    assert steps[-1].decision.request == ["the fox should sit on the roof"]
    assert f"step {steps[-1].step} ({steps[-1].tool}): score 0.88" in out.getvalue()


@pytest.mark.anyio
async def test_mcp_refine_with_feedback_makes_a_new_image(tmp_path: Path) -> None:
    from mcp import Client

    from emage_agent.adapters.mcp.server import build_server

    agent = scripted_agent(tmp_path, [0.9, 0.95, 0.85])
    server = build_server(lambda: agent)
    async with Client(server, mode="legacy") as client:
        args = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 2, "planner": "selector"}
        first = await client.call_tool("refine", args)
        data = first.structured_content
        assert data["stopped_because"] == "threshold"
        again = await client.call_tool("refine", {"session_id": data["session_id"], "feedback": "make it night"})
        assert not again.is_error, again.content
    session = agent.open(data["session_id"])
    steps = image_steps(session)
    assert len(steps) == 2 and steps[-1].decision.request == ["make it night"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_the_request_rules_are_pure_data() -> None:
    from emage_agent.core.evaluation import Evaluation, Issue
    from emage_agent.core.planning import ToolCall
    from emage_agent.loop.feedback import as_request, with_request

    judged = Issue(category="object", severity=1.0, description="Add  a MOON", box=[0, 0, 100, 100])
    evaluation = Evaluation(satisfaction_score=0.95, issues=[judged])
    weighed = as_request(evaluation, ["add a moon", "make it night"], threshold=0.8)
    assert weighed.satisfaction_score == pytest.approx(0.75) and evaluation.satisfaction_score == 0.95
    assert [(i.category, i.description) for i in weighed.issues] == [
        ("style", "make it night"),  # dropped by the judge: added as an edit that keeps the composition
        ("object", "Add  a MOON"),  # kept by the judge: its category and box decide
    ]
    assert as_request(Evaluation(satisfaction_score=0.4), ["x"], 0.8).satisfaction_score == 0.4
    edit = ToolCall(name="canny_edit", args={"prompt": "a lake. "})
    assert with_request(edit, ["make it night."], "ignored").args["prompt"] == "a lake. make it night"
    assert with_request(edit, ["A LAKE"], "ignored") == edit  # already says it
    mask = ToolCall(name="make_mask", args={"target": "lake"})
    assert with_request(mask, ["make it night"], "a lake") == mask
