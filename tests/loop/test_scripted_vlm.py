"""The loop with the real evaluator, planner and rewriter roles over an in-process scripted VLM.

No server and no model: the answers are stated up front (``tests.support.scripted_vlm``) and all must be
used. What the loop records is checked through the typed step records (kind, decision, vetoes) and what
the planner role sent back to the model (tool results answering its calls).
"""

from __future__ import annotations

from pathlib import Path

from emage_agent.api import Agent
from emage_agent.core.events import AgentEvent, Decided, Scored
from emage_agent.core.settings import Settings
from emage_agent.vlm.evaluator import Evaluator
from emage_agent.vlm.planner import Planner
from emage_agent.vlm.rewriter import Rewriter
from emage_agent.vlm.transport import ToolResult
from tests.support.scripted import ScriptedExecutor
from tests.support.scripted_vlm import ScriptedVLM, calls, evaluation, rewrite

STYLE = {"category": "style", "severity": 0.8, "description": "the car should be blue", "target": "car"}
PROMPTY = {"category": "prompt", "severity": 0.9, "description": "the fox is missing", "target": "fox"}
OPTIONS = {"width": 64, "height": 64, "steps": 2, "seed": 3, "iterations": 3, "threshold": 0.8}


def agent_on(vlm: ScriptedVLM, root: Path, events: list[AgentEvent]) -> Agent:
    settings = Settings(_env_file=None, session_root=root, device="cpu", kontext_model="none", detector="none")
    return Agent(
        settings,
        root=root,
        executor=ScriptedExecutor(),
        evaluator=Evaluator(vlm),
        rewriter=Rewriter(vlm),
        planner_factory=lambda: Planner(vlm),
        calls=vlm.calls,
        on_event=events.append,
    )


def test_a_vetoed_proposal_is_answered_and_the_repair_is_recorded_as_typed_records(tmp_path: Path) -> None:
    vlm = ScriptedVLM(
        evaluation(0.5, STYLE),
        calls(("paint_it_green", {})),  # unknown: answered with its error, and the planner is asked again
        calls(("canny_edit", {"prompt": "a red fox on a blue car"})),
        evaluation(0.9),
    )
    events: list[AgentEvent] = []
    summary = agent_on(vlm, tmp_path, events).start("a red fox on a blue car", **OPTIONS).run()
    vlm.assert_all_used()
    assert summary["stopped_because"] == "threshold" and summary["satisfaction_score"] == 0.9

    steps = agent_on(vlm, tmp_path, []).open(summary["session_id"]).store.steps()
    assert [(s.kind, s.tool) for s in steps] == [("initial", "generate"), ("tool", "canny_edit")]
    edit = steps[1]
    assert edit.decision is not None and edit.decision.strategy == "image_modification"
    assert edit.decision.ranked and edit.decision.ranked[0].tool in ("canny_edit", "depth_edit", "inpaint")
    assert [(v.tool, v.reason.split(":")[0]) for v in edit.vetoes] == [("paint_it_green", "unknown_tool")]
    assert [c.purpose for c in vlm.calls] == ["evaluate", "plan", "plan", "evaluate"]

    retry = vlm.requests[2]  # the second plan answers the refused call before asking again
    answered = [p for p in retry.turns[-1].parts if isinstance(p, ToolResult)]
    assert [(r.name, r.call_id, r.ran) for r in answered] == [("paint_it_green", "s0-paint_it_green", False)]
    assert "unknown tool" in answered[0].payload["result"]
    assert retry.tools is not None and "paint_it_green" not in retry.tools

    scores = [e.payload.score for e in events if isinstance(e.payload, Scored)]
    assert scores == [0.5, 0.9]
    strategies = [e.payload.strategy for e in events if isinstance(e.payload, Decided) and e.payload.strategy]
    assert strategies == ["image_modification"] and all(e.data.get("strategy") != "" for e in events)


def test_a_rewrite_is_followed_by_an_image_that_follows_it(tmp_path: Path) -> None:
    vlm = ScriptedVLM(
        evaluation(0.4, PROMPTY),
        calls(("rewrite_prompt", {"focus": "the fox"})),
        rewrite("a red fox sitting on a blue car"),
        evaluation(0.85),
    )
    summary = agent_on(vlm, tmp_path, []).start("a red fox on a blue car", **OPTIONS).run()
    vlm.assert_all_used()
    steps = agent_on(vlm, tmp_path, []).open(summary["session_id"]).store.steps()
    assert [(s.kind, s.tool) for s in steps] == [
        ("initial", "generate"),
        ("tool", "rewrite_prompt"),
        ("follow_up", "generate"),
    ]
    assert (
        steps[2].args["prompt"] == "a red fox sitting on a blue car"
        and steps[2].decision.strategy == "prompt_refinement"
    )
    assert summary["final_prompt"] == "a red fox sitting on a blue car"
