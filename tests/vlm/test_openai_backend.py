"""The OpenAI-compatible backend: the real ``openai`` SDK against the stand-in server on loopback."""

from __future__ import annotations

import json
from typing import Any

import pytest

from emage_agent.core.errors import UnreadableAnswer, UserError, VLMUnavailable
from emage_agent.core.evaluation import Evaluation, Issue
from emage_agent.core.planning import PlanningContext, Recommendation, ToolCall, ToolReport
from emage_agent.core.settings import Settings
from emage_agent.vlm import choose, open_vlm
from emage_agent.vlm.openai_compat import Evaluator, OpenAIClient, Planner, Rewriter
from emage_agent.vlm.openai_compat.client import OpenAIRequestError
from tests.support import fake_openai as fo
from tests.support.fake_openai import FAKE_OPENAI_KEY
from tests.support.fixtures_gemini import make_png

CANNY_CALL = ("canny_edit", {"prompt": "a red fox on a blue car"})
STYLE = {"category": "style", "severity": 0.8, "description": "the car should be blue", "target": "car"}


def client(settings: Settings, waits: list[float] | None = None) -> OpenAIClient:
    return OpenAIClient(settings, sleep=(waits.append if waits is not None else lambda _s: None))


def context(png: bytes | None = None, allowed: list[str] | None = None) -> PlanningContext:
    return PlanningContext(
        original_prompt="a red fox on a blue car",
        prompt="a red fox on a blue car",
        evaluation=Evaluation(
            satisfaction_score=0.5,
            issues=[Issue(category="style", severity=0.8, description="the car is red")],
            summary="car colour wrong",
        ),
        recommendation=Recommendation(strategy="image_modification", reason="style"),
        image_png=png,
        allowed_tools=allowed or [],
        max_calls=2,
    )


def test_evaluation_sends_the_image_and_a_json_schema(openai_settings: Settings, fake_openai: Any) -> None:
    fake_openai.queue(fo.evaluation_reply(0.7, [STYLE], "the car is red"))
    png = make_png((10, 200, 30))
    c = client(openai_settings)
    evaluation = Evaluator(c).evaluate(png, "a red fox on a blue car")
    assert evaluation.satisfaction_score == 0.7
    assert evaluation.issues[0].category == "style" and evaluation.issues[0].target == "car"
    request = fake_openai.requests[-1]
    assert request.path == "/v1/chat/completions" and request.body["model"] == "fake-vlm"
    assert request.images() == [png]
    assert request.response_format["type"] == "json_schema"
    assert "satisfaction_score" in request.response_format["json_schema"]["schema"]["properties"]
    assert request.headers["authorization"] == f"Bearer {FAKE_OPENAI_KEY}"
    record = c.calls[-1]
    assert (record.backend, record.model, record.purpose, record.ok) == ("openai", "fake-vlm", "evaluate", True)
    assert (record.input_tokens, record.output_tokens, record.total_tokens, record.attempts) == (120, 30, 150, 1)


def test_server_without_response_format_falls_back_to_text_once(openai_settings: Settings, fake_openai: Any) -> None:
    fake_openai.refuse = {"response_format"}
    fake_openai.handler = lambda r: fo.evaluation_reply(0.4) if r.purpose == "evaluate" else None
    c = client(openai_settings)
    assert Evaluator(c).evaluate(make_png(), "a fox").satisfaction_score == 0.4
    formats = [(r.response_format or {}).get("type") for r in fake_openai.requests]
    assert formats == ["json_schema", "json_object", None]  # probed down the ladder
    assert "JSON Schema" in fake_openai.requests[-1].text()  # the schema travels in the prompt instead
    before = len(fake_openai.requests)
    other = client(openai_settings)  # a new client for the same server: still remembered in this process
    assert Evaluator(other).evaluate(make_png(), "a fox").satisfaction_score == 0.4
    assert len(fake_openai.requests) == before + 1 and fake_openai.requests[-1].response_format is None


def test_server_with_json_object_only_is_remembered(openai_settings: Settings, fake_openai: Any) -> None:
    fake_openai.queue(fo.error_reply(400, "json_schema is not supported"), fo.evaluation_reply(0.5))
    fake_openai.queue(fo.evaluation_reply(0.6))
    c = client(openai_settings)
    assert Evaluator(c).evaluate(make_png(), "a fox").satisfaction_score == 0.5
    assert Evaluator(c).evaluate(make_png(), "a fox").satisfaction_score == 0.6
    assert [r.response_format["type"] for r in fake_openai.requests] == ["json_schema", "json_object", "json_object"]


def test_429_and_503_are_retried_honouring_retry_after(openai_settings: Settings, fake_openai: Any) -> None:
    fake_openai.queue(fo.error_reply(429, "slow down", retry_after=0.25), fo.error_reply(503, "busy"))
    fake_openai.queue(fo.evaluation_reply(0.8))
    waits: list[float] = []
    c = client(openai_settings, waits)
    assert Evaluator(c).evaluate(make_png(), "a fox").satisfaction_score == 0.8
    assert c.calls[-1].attempts == 3 and c.calls[-1].ok
    assert len(waits) == 2 and waits[0] >= 0.25 and waits[1] < 0.25


def test_a_server_that_stays_down_is_unavailable_after_bounded_attempts(
    openai_settings: Settings, fake_openai: Any
) -> None:
    fake_openai.handler = lambda r: fo.error_reply(503, "overloaded")
    c = client(openai_settings)
    with pytest.raises(VLMUnavailable, match="4 attempt"):
        Evaluator(c).evaluate(make_png(), "a fox")
    assert len(fake_openai.requests) == 4 and c.calls[-1].ok is False and "503" in (c.calls[-1].error or "")


def test_unreachable_server_is_unavailable(openai_settings: Settings) -> None:
    settings = openai_settings.model_copy(update={"openai_base_url": "http://127.0.0.1:9/v1", "openai_max_attempts": 2})
    with pytest.raises(VLMUnavailable, match="could not be reached"):
        Evaluator(client(settings)).evaluate(make_png(), "a fox")


def test_the_key_never_leaks(openai_settings: Settings, fake_openai: Any) -> None:
    fake_openai.queue(fo.error_reply(401, f"Incorrect API key provided: {FAKE_OPENAI_KEY}"))
    with pytest.raises(UserError) as info:
        Evaluator(client(openai_settings)).evaluate(make_png(), "a fox")
    assert "OPENAI_API_KEY" in str(info.value) and FAKE_OPENAI_KEY not in str(info.value)
    fake_openai.queue(fo.error_reply(418, f"echo {FAKE_OPENAI_KEY}"))
    c = client(openai_settings)
    with pytest.raises(OpenAIRequestError) as refused:
        Evaluator(c).evaluate(make_png(), "a fox")
    assert FAKE_OPENAI_KEY not in str(refused.value) and FAKE_OPENAI_KEY not in (c.calls[-1].error or "")
    assert FAKE_OPENAI_KEY not in repr(c) and FAKE_OPENAI_KEY not in repr(openai_settings)


@pytest.mark.parametrize(
    ("reply", "score", "asks"),
    [
        (fo.text_reply('Here you go:\n```json\n{"satisfaction_score": 0.85, "issues": []}\n```'), 0.85, 1),
        (fo.text_reply("The image is decent. Score: 7/10."), 0.7, 1),
        # A bare 85 on a 0..1 scale is malformed, not 0.85: asked again once, then refused.
        (fo.text_reply('```json\n{"satisfaction_score": 85, "issues": []}\n```'), None, 2),
        (fo.text_reply("I cannot judge this."), None, 2),
        (fo.message_reply({"content": None}), None, 2),
        (fo.Reply(200, {"id": "x", "object": "chat.completion", "choices": []}), None, 1),
        (fo.Reply(200, "<html>gateway says hello</html>"), None, 1),
    ],
)
def test_malformed_answers_are_read_or_refused(
    openai_settings: Settings, fake_openai: Any, reply: Any, score: float | None, asks: int
) -> None:
    for _ in range(asks):
        fake_openai.queue(reply)
    c = client(openai_settings)
    evaluator = Evaluator(c)
    if score is None:
        with pytest.raises(UnreadableAnswer):
            evaluator.evaluate(make_png(), "a fox")
        assert len(c.calls) == asks and not any(call.ok for call in c.calls)  # never booked as a success
    else:
        assert evaluator.evaluate(make_png(), "a fox").satisfaction_score == pytest.approx(score)


def test_planner_reads_tool_calls_and_answers_each_one(openai_settings: Settings, fake_openai: Any) -> None:
    fake_openai.queue(
        fo.tool_call_reply(
            ("canny_edit", {"prompt": "a red fox on a blue car", "steps": 2}),
            ("depth_edit", '{"prompt": "broken'),
            ("paint_it", {}),
        )
    )
    planner = Planner(client(openai_settings))
    png = make_png((1, 2, 3))
    result = planner.plan(context(png))
    first = fake_openai.requests[-1]
    assert {t["function"]["name"] for t in first.body["tools"]} >= {"canny_edit", "inpaint", "make_mask"}
    assert first.body["tool_choice"] == "required" and first.images() == [png]
    assert [c.name for c in result.calls] == ["canny_edit"] and result.calls[0].call_id == "call_canny_edit_0"
    assert sorted(e.kind for e in result.errors) == ["invalid_arguments", "unknown_tool"]
    edited = make_png((9, 9, 250))
    report = ToolReport(call=result.calls[0], ok=True, summary="edited", artifact_id="s2-image", image_png=edited)
    planner.report([report])
    fake_openai.queue(fo.tool_call_reply(("canny_edit", {"prompt": "a fox, blue car"})))
    planner.plan(context(edited))
    second = fake_openai.requests[-1].messages
    assistant = next(m for m in second if m["role"] == "assistant")
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_canny_edit_0", "call_depth_edit_1", "call_paint_it_2"]
    tools = {m["tool_call_id"]: json.loads(m["content"]) for m in second if m["role"] == "tool"}
    assert tools["call_canny_edit_0"] == {"ok": True, "result": "edited", "artifact_id": "s2-image"}
    assert "not JSON" in tools["call_depth_edit_1"]["result"] and "unknown tool" in tools["call_paint_it_2"]["result"]
    roles = [m["role"] for m in second]
    assert roles[roles.index("assistant") + 1 : roles.index("assistant") + 4] == ["tool"] * 3
    assert fake_openai.requests[-1].images()[-1] == edited  # the tool's image follows in a user message
    assert "the current image is the one returned above" in fake_openai.requests[-1].text()


def test_planner_refuses_tools_outside_the_allowed_ones(openai_settings: Settings, fake_openai: Any) -> None:
    fake_openai.queue(fo.tool_call_reply(("inpaint", {"prompt": "a fox"})))
    result = Planner(client(openai_settings)).plan(context(make_png(), allowed=["canny_edit"]))
    assert not result.calls and "not allowed" in result.errors[0].message


def test_server_without_tool_choice_required_and_text_tool_calls(openai_settings: Settings, fake_openai: Any) -> None:
    fake_openai.refuse = {"tool_choice"}
    fake_openai.queue(fo.text_reply('{"name": "canny_edit", "arguments": {"prompt": "a blue car"}}'))
    fake_openai.queue(fo.text_reply("I would rather not."))
    planner = Planner(client(openai_settings))
    result = planner.plan(context(make_png()))
    assert [r.body.get("tool_choice") for r in fake_openai.requests] == ["required", "auto"]
    assert [c.name for c in result.calls] == ["canny_edit"] and result.calls[0].call_id is None
    planner.report([ToolReport(call=result.calls[0], ok=False, summary="out of memory")])
    again = planner.plan(context(make_png()))
    assert fake_openai.requests[-1].body["tool_choice"] == "auto"  # remembered
    assert 'Result of canny_edit: {"ok": false, "result": "out of memory"}' in fake_openai.requests[-1].text()
    assert again.errors[0].kind == "no_call"


def test_rewrite_keeps_the_request_and_falls_back_offline(openai_settings: Settings, fake_openai: Any) -> None:
    fake_openai.queue(fo.rewrite_reply("a fox on a car, vivid blue paint"))
    issue = Issue(category="prompt", severity=0.9, description="colour unclear", target="blue car")
    rewrite = Rewriter(client(openai_settings)).rewrite("a red fox on a blue car", "a red fox on a blue car", [issue])
    assert rewrite.source == "openai" and "red" in rewrite.prompt and "restored" in rewrite.rationale
    fake_openai.handler = lambda r: fo.error_reply(503, "down")
    offline = Rewriter(client(openai_settings)).rewrite("a red fox", "a red fox", [issue])
    assert offline.source == "offline" and "blue car" in offline.prompt and "unavailable" in offline.rationale


def test_choosing_the_backend(openai_settings: Settings) -> None:
    bare = Settings(_env_file=None, device="cpu")
    with pytest.raises(UserError, match="GEMINI_API_KEY.*EMAGE_OPENAI_BASE_URL"):
        choose(bare)
    assert choose(bare.model_copy(update={"openai_base_url": "http://127.0.0.1:1/v1"})) == "openai"
    both = bare.model_copy(update={"openai_base_url": "http://x/v1", "gemini_api_key": "k"})
    assert choose(both) == "gemini"  # Gemini stays the default when its key is set
    split = both.model_copy(update={"vlm": "openai", "planner_vlm": "gemini"})
    assert (choose(split, "evaluator"), choose(split, "planner")) == ("openai", "gemini")
    vlm = open_vlm(openai_settings, "openai")
    assert (vlm.name, vlm.model) == ("openai", "fake-vlm")
    with pytest.raises(UserError, match="EMAGE_OPENAI_BASE_URL"):
        open_vlm(bare.model_copy(update={"vlm": "openai"}), "openai")


def test_planner_keeps_only_the_newest_images(openai_settings: Settings, fake_openai: Any) -> None:
    planner = Planner(client(openai_settings))
    for n in range(5):
        fake_openai.queue(fo.tool_call_reply(("canny_edit", {"prompt": "a blue car"})))
        result = planner.plan(context(make_png((n * 40, 0, 0))))
        planner.report([ToolReport(call=ToolCall(**result.calls[0].model_dump()), ok=True, summary="done")])
    request = fake_openai.requests[-1]
    assert len(request.images()) == 3 and request.text().count("[an earlier image, omitted]") == 2


def test_probe_lists_the_served_models(openai_settings: Settings, fake_openai: Any) -> None:
    assert client(openai_settings).probe().startswith("fake-vlm at http://127.0.0.1:")
    other = openai_settings.model_copy(update={"openai_model": "not-served"})
    with pytest.raises(UserError, match="does not serve 'not-served'; it serves fake-vlm"):
        client(other).probe()


def test_an_empty_planner_answer_keeps_what_is_owed(openai_settings: Settings, fake_openai: Any) -> None:
    planner = Planner(client(openai_settings))
    fake_openai.queue(fo.tool_call_reply(CANNY_CALL))
    first = planner.plan(context(make_png((5, 5, 5))))
    planner.report([ToolReport(call=first.calls[0], ok=True, summary="edited")])
    fake_openai.queue(fo.message_reply({"content": None}), fo.tool_call_reply(CANNY_CALL))
    empty = planner.plan(context(make_png((6, 6, 6))))
    assert empty.errors[0].kind == "unreadable" and not empty.calls
    planner.plan(context(make_png((6, 6, 6))))
    messages = fake_openai.requests[-1].messages
    assert [m["tool_call_id"] for m in messages if m["role"] == "tool"] == ["call_canny_edit_0"]
    assert len(fake_openai.requests[-1].images()) == 2  # the first image and the current one, not twice
