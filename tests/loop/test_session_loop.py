"""Whole sessions on the tiny FLUX family, with the real SDK talking to the fake Gemini endpoint."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from emage_agent.api import Agent, FluxVLMPipeline
from emage_agent.core.errors import UserError
from tests.support.fake_gemini import Request, evaluation_reply, function_call_reply, rewrite_reply

STYLE = {"category": "style", "severity": 0.8, "description": "the car should be blue", "target": "car"}
OBJECT = {
    "category": "object",
    "severity": 0.9,
    "description": "the fox is missing",
    "target": "fox",
    "box": [200, 200, 800, 800],
}
PROMPTY = {"category": "prompt", "severity": 0.9, "description": "the prompt does not say where the fox is"}
CANNY = ("canny_edit", {"prompt": "a red fox on a blue car", "steps": 2})


class Script:
    """Routes the fake's requests by purpose and serves each purpose's replies in order."""

    def __init__(
        self, fake: Any, evals: list[tuple[float, list[dict]]], plans: list[Any] = (), rewrites: list[str] = ()
    ) -> None:
        self.evals = deque(evals)
        self.plans = deque(plans)
        self.rewrites = deque(rewrites)
        self.seen: dict[str, int] = {"evaluate": 0, "plan": 0, "rewrite": 0}
        fake.handler = self

    def __call__(self, request: Request) -> Any:
        purpose = request.purpose
        self.seen[purpose] = self.seen.get(purpose, 0) + 1
        if purpose == "evaluate" and self.evals:
            score, issues = self.evals.popleft()
            return evaluation_reply(score, issues, summary=f"score {score}")
        if purpose == "plan" and self.plans:
            return self.plans.popleft()
        if purpose == "rewrite" and self.rewrites:
            return rewrite_reply(self.rewrites.popleft())
        return None


@pytest.fixture
def settings(tiny_settings: Any, gemini_settings: Any, tmp_path: Path) -> Any:
    gemini = {k: v for k, v in gemini_settings.model_dump().items() if k.startswith("gemini_")}
    return tiny_settings.model_copy(update={**gemini, "session_root": tmp_path / "sessions"})


@pytest.fixture
def agent(settings: Any, executor: Any) -> Agent:
    return Agent(settings, executor=executor)


def start(agent: Agent, **options: Any) -> Any:
    base = {"width": 64, "height": 64, "steps": 2, "seed": 7}
    return agent.start("a red fox on a blue car", **{**base, **options})


def check_summary_against_files(summary: dict[str, Any]) -> None:
    on_disk = json.loads((Path(summary["session_dir"]) / "summary.json").read_text())
    assert on_disk == summary
    assert Path(summary["final_image"]).is_file()
    for entry in summary["history"]:
        if entry["image"]:
            assert Path(entry["image"]).is_file()
    best = [h for h in summary["history"] if h["step"] == summary["best_step"]][0]
    assert best["image"] == summary["final_image"]
    assert best["satisfaction_score"] == summary["satisfaction_score"]


def test_session_converges_at_threshold(agent: Agent, fake_gemini: Any) -> None:
    script = Script(fake_gemini, evals=[(0.5, [STYLE]), (0.9, [])], plans=[function_call_reply(CANNY)])
    session = start(agent, iterations=3)
    summary = session.run()
    assert summary["stopped_because"] == "threshold"
    tools = [h["tool"] for h in summary["history"]]
    assert tools == ["generate", "canny_edit"]
    assert summary["satisfaction_score"] == 0.9
    assert summary["best_step"] == summary["history"][1]["step"]
    assert script.seen["plan"] == 1
    check_summary_against_files(summary)
    assert (session.dir / "report.html").is_file()


def test_iteration_limit_stops_the_loop(agent: Agent, fake_gemini: Any) -> None:
    Script(
        fake_gemini,
        evals=[(0.3, [STYLE]), (0.4, [STYLE]), (0.5, [STYLE])],
        plans=[function_call_reply(CANNY), function_call_reply(CANNY)],
    )
    summary = start(agent, iterations=2, planner="gemini").run()
    assert summary["stopped_because"] == "iteration_limit"
    assert summary["iterations"] == 2  # two repairs after the first image, as asked
    assert summary["steps"] == 3  # the first image and two repairs
    assert summary["satisfaction_score"] == 0.5


def test_unknown_tool_is_vetoed_and_the_planner_tries_again(agent: Agent, fake_gemini: Any) -> None:
    Script(
        fake_gemini,
        evals=[(0.5, [STYLE]), (0.95, [])],
        plans=[function_call_reply(("paint_it_blue", {})), function_call_reply(CANNY)],
    )
    summary = start(agent).run()
    edit = summary["history"][1]
    assert edit["tool"] == "canny_edit"
    assert edit["vetoes"] and edit["vetoes"][0]["tool"] == "paint_it_blue"


def test_contradicting_tool_twice_runs_the_selectors_choice(agent: Agent, fake_gemini: Any) -> None:
    rewrite = function_call_reply(("rewrite_prompt", {"focus": "make it blue"}))
    Script(fake_gemini, evals=[(0.5, [STYLE]), (0.95, [])], plans=[rewrite, rewrite])
    summary = start(agent).run()
    edit = summary["history"][1]
    assert edit["tool"] == "canny_edit"  # style issue -> canny, the selector's top choice
    assert [v["tool"] for v in edit["vetoes"]] == ["rewrite_prompt", "rewrite_prompt"]
    assert all("contradicts" in v["reason"] for v in edit["vetoes"])


def test_regression_is_rolled_back_and_the_best_image_returned(agent: Agent, fake_gemini: Any) -> None:
    mask = function_call_reply(
        ("make_mask", {"box": [400, 400, 600, 600], "target": "fox", "dilate": 0, "feather": 0}),
        ("inpaint", {"prompt": "a red fox", "steps": 2}),
    )
    Script(
        fake_gemini, evals=[(0.6, [STYLE]), (0.3, [OBJECT]), (0.7, [OBJECT])], plans=[function_call_reply(CANNY), mask]
    )
    session = start(agent, iterations=2)
    first = session.store.load_image("s1-image")
    summary = session.run()
    by_tool = {h["tool"]: h for h in summary["history"]}
    assert by_tool["canny_edit"]["rolled_back"] is True
    assert by_tool["canny_edit"]["satisfaction_score"] == 0.3
    # the inpaint started from the first image, not from the regression: outside the box nothing changed
    inpainted = Image.open(by_tool["inpaint"]["image"])
    assert inpainted.getpixel((0, 0)) == first.getpixel((0, 0))
    assert summary["final_image"] == by_tool["inpaint"]["image"]
    check_summary_against_files(summary)


def test_repeated_failed_action_is_vetoed(agent: Agent, fake_gemini: Any) -> None:
    Script(
        fake_gemini,
        evals=[(0.6, [STYLE]), (0.4, [STYLE]), (0.9, [])],
        plans=[function_call_reply(CANNY), function_call_reply(CANNY), function_call_reply(CANNY)],
    )
    summary = start(agent, iterations=3).run()
    vetoes = [v for h in summary["history"] for v in h["vetoes"]]
    assert any(v["tool"] == "canny_edit" and "already failed" in v["reason"] for v in vetoes)


def test_prompt_refinement_rewrites_then_regenerates(agent: Agent, fake_gemini: Any) -> None:
    Script(
        fake_gemini,
        evals=[(0.4, [PROMPTY]), (0.9, [])],
        plans=[function_call_reply(("rewrite_prompt", {"focus": "say where the fox is"}))],
        rewrites=["a red fox sitting on the roof of a blue car"],
    )
    summary = start(agent).run()
    assert [h["tool"] for h in summary["history"]] == ["generate", "rewrite_prompt", "generate"]
    assert summary["final_prompt"] == "a red fox sitting on the roof of a blue car"
    assert summary["original_prompt"] == "a red fox on a blue car"


def test_vlm_budget_stops_the_session(agent: Agent, fake_gemini: Any) -> None:
    Script(fake_gemini, evals=[(0.3, [STYLE])] * 6, plans=[function_call_reply(CANNY)] * 6)
    summary = start(agent, iterations=10, max_vlm_calls=3).run()
    assert summary["stopped_because"] == "vlm_budget"


def test_selector_planner_makes_no_planner_calls(agent: Agent, fake_gemini: Any) -> None:
    script = Script(fake_gemini, evals=[(0.5, [OBJECT]), (0.85, [])])
    summary = start(agent, planner="selector").run()
    assert script.seen["plan"] == 0
    assert [h["tool"] for h in summary["history"]][:3] == ["generate", "make_mask", "inpaint"]
    assert summary["stopped_because"] == "threshold"


def test_feedback_refines_and_revert_moves_the_head(agent: Agent, fake_gemini: Any) -> None:
    script = Script(fake_gemini, evals=[(0.9, []), (0.5, [STYLE]), (0.85, [])], plans=[function_call_reply(CANNY)])
    session = start(agent)
    assert session.run()["stopped_because"] == "threshold"
    summary = session.refine("make the car darker")
    feedback_requests = [r for r in fake_gemini.requests if "make the car darker" in r.text()]
    assert feedback_requests, "the user's words must reach Gemini verbatim"
    assert [h["tool"] for h in summary["history"]] == ["generate", "feedback", "canny_edit"]
    assert script.seen["evaluate"] == 3
    session.revert(1)
    assert session.store.head().step == 1
    assert len(session.history()) == 3  # later steps stay in the history


def test_seed_interface_runs_unchanged(settings: Any, executor: Any, fake_gemini: Any) -> None:
    Script(fake_gemini, evals=[(0.85, [])])
    pipeline = FluxVLMPipeline(settings, executor=executor)
    result = pipeline.generate_and_evaluate(
        "a red fox on a blue car",
        num_iterations=2,
        guidance_scale=7.5,
        num_inference_steps=2,
        seed=3,
        width=64,
        height=64,
    )
    assert isinstance(result["final_image"], Image.Image)
    assert result["final_image"].size == (64, 64)
    assert result["satisfaction_score"] == 0.85
    assert result["final_prompt"] == "a red fox on a blue car"
    assert [h["tool"] for h in result["history"]] == ["generate"]


def test_empty_prompt_and_bad_options_are_user_errors(agent: Agent) -> None:
    with pytest.raises(UserError, match="prompt"):
        agent.start("   ")
    with pytest.raises(UserError, match="width"):
        agent.start("a fox", width=100)
    with pytest.raises(UserError, match="iterations"):
        agent.start("a fox", iterations=-1)


def test_threshold_is_exact_by_default(agent: Agent, fake_gemini: Any) -> None:
    """A score just under --threshold never reports 'threshold', however many iterations ran."""
    Script(
        fake_gemini, evals=[(0.75, [STYLE]), (0.79, [STYLE]), (0.795, [STYLE])], plans=[function_call_reply(CANNY)] * 2
    )
    summary = start(agent, iterations=2, threshold=0.8).run()
    assert summary["stopped_because"] != "threshold"
    assert summary["satisfaction_score"] == 0.795


PLATEAU = [(0.70, [STYLE]), (0.71, [STYLE]), (0.71, [STYLE]), (0.72, [STYLE])]


def test_adaptive_threshold_stops_a_plateau_and_says_so(agent: Agent, fake_gemini: Any) -> None:
    Script(fake_gemini, evals=PLATEAU, plans=[function_call_reply(CANNY)] * 3)
    summary = start(agent, iterations=3, threshold=0.8, adaptive_threshold=True).run()
    assert summary["stopped_because"] == "adaptive_threshold"
    assert summary["threshold_used"] == 0.7  # 0.8 -> 0.75 after the second flat score -> 0.7 after the third
    assert summary["satisfaction_score"] == 0.72
    bars = [(h["satisfaction_score"], h.get("threshold")) for h in summary["history"]]
    assert bars == [(0.70, None), (0.71, None), (0.71, 0.75), (0.72, 0.7)]
    check_summary_against_files(summary)


def test_the_same_plateau_without_the_flag_runs_to_the_limit(agent: Agent, fake_gemini: Any) -> None:
    Script(fake_gemini, evals=PLATEAU, plans=[function_call_reply(CANNY)] * 3)
    summary = start(agent, iterations=3, threshold=0.8).run()
    assert summary["stopped_because"] == "iteration_limit"
    assert summary["threshold_used"] == 0.8
    assert all("threshold" not in h for h in summary["history"])


def test_adaptive_floor_and_step_come_from_the_options(agent: Agent, fake_gemini: Any) -> None:
    Script(fake_gemini, evals=PLATEAU, plans=[function_call_reply(CANNY)] * 3)
    summary = start(
        agent, iterations=3, threshold=0.8, adaptive_threshold=True, adaptive_floor=0.78, adaptive_step=0.1
    ).run()
    assert summary["stopped_because"] == "iteration_limit"  # the floor 0.78 stays above every score
    assert [h.get("threshold") for h in summary["history"]] == [None, None, 0.78, None]
