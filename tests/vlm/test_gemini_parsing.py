"""Pure parsing helpers, and the fake endpoint routing a whole evaluate -> plan -> report -> rewrite round."""

from __future__ import annotations

import pytest

from emage_agent.core.errors import UnreadableAnswer
from emage_agent.core.planning import PlanningContext, Recommendation, ToolReport
from emage_agent.vlm.gemini import Evaluator, GeminiClient, Planner, Rewriter
from emage_agent.vlm.parsing import (
    evaluation_from_prose,
    extract_json,
    normalise_box,
    normalise_category,
    read_evaluation,
    unit_interval,
)
from tests.support import fake_gemini as fg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": 2}\n```', {"a": 2}),
        ('The answer is {"a": 3} as requested. {"b": 4}', {"a": 3}),
        ('prefix {not json} then {"a": 5}', {"a": 5}),
        ("no json here", None),
        ("", None),
    ],
)
def test_extract_json(text, expected):
    assert extract_json(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.42, 0.42), (1, 1.0), (1.3, 1.0), (-0.2, 0.0), (7, 0.7), (85, 0.85), (250, 1.0), ("0.6", 0.6), ("70%", 0.7),
     ("7/10", 0.7), ("", None), (None, None), (True, None), (float("nan"), None)],
)  # fmt: skip
def test_unit_interval(value, expected):
    result = unit_interval(value)
    assert result is None if expected is None else result == pytest.approx(expected)


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ([10, 20, 300, 400], [10, 20, 300, 400]),
        ([300, 400, 10, 20], [10, 20, 300, 400]),
        ([-5, 0, 1200, 999.6], [0, 0, 1000, 1000]),
        ([0.1, 0.2, 0.3, 0.4], [100, 200, 300, 400]),
        ({"ymin": 1, "xmin": 2, "ymax": 3, "xmax": 4}, [1, 2, 3, 4]),
        ([5, 5, 5, 10], None),
        ([1, 2, 3], None),
        (["a", 1, 2, 3], None),
        (None, None),
    ],
)
def test_normalise_box(box, expected):
    assert normalise_box(box) == expected


def test_normalise_category():
    assert [normalise_category(c) for c in ("Object", " spatial ", "colour", "Layout", "vibes", None)] == [
        "object", "spatial", "style", "spatial", None, None,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("Satisfaction score: 0.35. The dog is missing.", 0.35),
        ("**Score:** 8/10", 0.8),
        ("I would rate it a 6/10 overall.", 0.6),
        ("Overall score of 72%.", 0.72),
        ("Nothing numeric here.", None),
    ],
)
def test_evaluation_from_prose(text, score):
    found = evaluation_from_prose(text)
    assert (found.satisfaction_score if found else None) == (pytest.approx(score) if score is not None else None)


def test_read_evaluation_prefers_structured_and_reports_garbage():
    evaluation, remarks, how = read_evaluation({"satisfaction_score": 0.5, "issues": []}, "ignored 0.9")
    assert (evaluation.satisfaction_score, remarks, how) == (0.5, {}, "structured")
    with pytest.raises(UnreadableAnswer, match="lorem ipsum"):
        read_evaluation(None, "lorem ipsum")


def test_fake_routes_a_whole_round_by_purpose(fake_gemini, gemini_settings, tiny_png):
    """How agent-loop tests script Gemini: one handler routing on what each request is for."""
    routes = {
        "evaluate": fg.evaluation_reply(0.5, [{"category": "prompt", "severity": 0.6, "description": "vague"}]),
        "plan": fg.function_call_reply(("rewrite_prompt", {"focus": "be explicit"})),
        "rewrite": fg.rewrite_reply("a red square, centred, flat colour"),
    }
    fake_gemini.handler = lambda request: routes.get(request.purpose)
    client = GeminiClient(gemini_settings)
    evaluation = Evaluator(client).evaluate(tiny_png, "a red square")
    ctx = PlanningContext(
        prompt="a red square",
        original_prompt="a red square",
        evaluation=evaluation,
        recommendation=Recommendation(strategy="prompt_refinement", reason="prompt issue"),
        image_png=tiny_png,
        allowed_tools=["rewrite_prompt", "generate"],
    )
    planner = Planner(client)
    call = planner.plan(ctx).calls[0]
    rewrite = Rewriter(client).rewrite(ctx.prompt, ctx.original_prompt, evaluation.issues, call.args["focus"])
    planner.report([ToolReport(call=call, ok=True, summary=f"new prompt: {rewrite.prompt}")])
    planner.plan(ctx)
    assert [r.purpose for r in fake_gemini.requests] == ["evaluate", "plan", "rewrite", "plan"]
    assert [c.purpose for c in client.calls] == ["evaluate", "plan", "rewrite", "plan"]
    assert all(c.ok for c in client.calls) and fake_gemini.unscripted == 0
