"""The planner chat through the real SDK and the fake endpoint: declarations, tool config, history, mistakes."""

from __future__ import annotations

import pytest

from emage_agent.core.errors import VLMUnavailable
from emage_agent.core.evaluation import Evaluation, Issue
from emage_agent.core.planning import HistoryEntry, PlanningContext, Recommendation, ToolChoice, ToolReport
from emage_agent.vlm.gemini import GeminiClient, Planner
from tests.support import fake_gemini as fg
from tests.support.fixtures_gemini import make_png

RED, GREEN, BLUE = make_png((200, 0, 0)), make_png((0, 200, 0)), make_png((0, 0, 200))


def _ctx(image=RED, allowed=("make_mask", "inpaint"), max_calls=2, **kw) -> PlanningContext:
    evaluation = Evaluation(
        satisfaction_score=0.5,
        issues=[Issue(category="object", severity=0.8, description="The hat is blue.", target="the hat")],
        summary="Wrong hat colour.",
    )
    recommendation = Recommendation(
        strategy="image_modification",
        reason="object issue",
        ranked=[ToolChoice(tool="make_mask", weight=0.7, reason="mask the hat", args={"target": "the hat"})],
    )
    return PlanningContext(
        prompt="a dog in a green hat",
        original_prompt="a dog in a green hat",
        evaluation=evaluation,
        recommendation=recommendation,
        image_png=image,
        allowed_tools=list(allowed),
        max_calls=max_calls,
        **kw,
    )


@pytest.fixture
def planner(gemini_settings):
    return Planner(GeminiClient(gemini_settings))


def _mask_and_inpaint(sig: str = fg.signature(1)) -> fg.Reply:
    return fg.function_call_reply(
        ("make_mask", {"target": "the hat"}), ("inpaint", {"prompt": "a green hat"}), thought_signature=sig
    )


def test_plan_returns_validated_calls_and_sends_tools(fake_gemini, planner):
    fake_gemini.queue(_mask_and_inpaint())
    ctx = _ctx(history=[HistoryEntry(step=1, tool="canny_edit", score_before=0.5, score_after=0.4, rolled_back=True)])
    result = planner.plan(ctx)
    assert result.errors == []
    assert [c.name for c in result.calls] == ["make_mask", "inpaint"]
    assert [c.call_id for c in result.calls] == ["call-make_mask-0", "call-inpaint-1"]
    assert result.calls[0].args == {"target": "the hat"}  # as the model gave them: defaults are filled later
    request = fake_gemini.requests[0]
    declarations = request.tools[0]["functionDeclarations"]
    assert {d["name"] for d in declarations} == {"generate", "canny_edit", "depth_edit", "inpaint", "edit",
                                                 "make_mask", "rewrite_prompt"}  # fmt: skip
    schema = declarations[0].get("parametersJsonSchema") or declarations[0]["parameters_json_schema"]
    assert schema["type"] == "object" and "properties" in schema
    fcc = request.body["toolConfig"]["functionCallingConfig"]
    assert fcc["mode"] == "ANY" and request.allowed_function_names == ["make_mask", "inpaint"]
    assert request.images() == [RED]
    text = request.text()
    assert "ROLLED BACK" in text and "make_mask (weight 0.70)" in text and "at most 2 call(s)" in text
    assert "repair planner" in request.body["systemInstruction"]["parts"][0]["text"]


def test_thought_signature_echoed_and_image_returned(fake_gemini, planner):
    reply = _mask_and_inpaint(fg.signature(7))
    fake_gemini.queue(reply, fg.function_call_reply(("make_mask", {"target": "hat"})))
    first = planner.plan(_ctx())
    planner.report(
        [
            ToolReport(call=first.calls[0], ok=True, summary="mask covers 12%", artifact_id="mask-1"),
            ToolReport(call=first.calls[1], ok=True, summary="inpainted", artifact_id="img-2", image_png=GREEN),
        ]
    )
    planner.plan(_ctx(image=GREEN))
    contents = fake_gemini.requests[1].contents
    model_turn, answer = contents[1], contents[2]
    assert model_turn == reply.body["candidates"][0]["content"]  # the model's turn goes back unchanged
    assert model_turn["parts"][0]["thoughtSignature"] == fg.signature(7)
    assert [p["functionCall"]["name"] for p in model_turn["parts"]] == ["make_mask", "inpaint"]
    responses = [p["functionResponse"] for p in answer["parts"] if "functionResponse" in p]
    assert [(r["id"], r["name"], r["response"]["ok"]) for r in responses] == [
        ("call-make_mask-0", "make_mask", True),
        ("call-inpaint-1", "inpaint", True),
    ]
    assert responses[1]["response"] == {"ok": True, "result": "inpainted", "artifact_id": "img-2"}
    assert answer["role"] == "user" and fake_gemini.requests[1].images() == [RED, GREEN]  # GREEN sent once


def test_gemini_3_gets_the_image_inside_the_function_response(fake_gemini, gemini_settings):
    planner = Planner(GeminiClient(gemini_settings.model_copy(update={"gemini_model": "gemini-3-pro-preview"})))
    fake_gemini.queue(fg.function_call_reply(("make_mask", {"target": "hat"})), fg.function_call_reply(("inpaint", {})))
    call = planner.plan(_ctx()).calls[0]
    planner.report([ToolReport(call=call, ok=True, summary="done", image_png=BLUE)])
    planner.plan(_ctx(image=BLUE))
    response = fake_gemini.requests[1].contents[2]["parts"][0]["functionResponse"]
    blob = response["parts"][0].get("inlineData") or response["parts"][0]["inline_data"]
    assert blob["mime_type" if "mime_type" in blob else "mimeType"] == "image/png"
    assert fake_gemini.requests[1].images() == [RED, BLUE]


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (fg.function_call_reply(("paint_it_green", {})), "unknown_tool"),
        (fg.function_call_reply(("inpaint", {"prompt": "x", "steps": 1000})), "invalid_arguments"),
        (fg.function_call_reply(("make_mask", {"colour": "green"})), "invalid_arguments"),
        (fg.text_reply("I think the hat should be green."), "no_call"),
    ],
)
def test_malformed_answers_become_plan_errors(fake_gemini, planner, reply, kind):
    fake_gemini.queue(reply)
    result = planner.plan(_ctx())
    assert result.calls == [] and [e.kind for e in result.errors] == [kind]


def test_too_many_calls_keeps_the_first_and_tells_the_model(fake_gemini, planner):
    calls = [("make_mask", {"target": "hat"}), ("inpaint", {"prompt": "a"}), ("inpaint", {"prompt": "b"})]
    fake_gemini.queue(fg.function_call_reply(*calls), fg.function_call_reply(("inpaint", {"prompt": "c"})))
    result = planner.plan(_ctx(max_calls=2))
    assert [c.args.get("prompt") for c in result.calls] == [None, "a"]
    assert [e.kind for e in result.errors] == ["too_many_calls"]
    planner.report([ToolReport(call=c, ok=True, summary="ok") for c in result.calls])
    planner.plan(_ctx())
    responses = [p["functionResponse"] for p in fake_gemini.requests[1].contents[2]["parts"] if "functionResponse" in p]
    assert [r["response"]["ok"] for r in responses] == [True, True, False]
    assert "at most 2" in responses[2]["response"]["result"]


def test_invalid_call_is_answered_with_its_error_on_retry(fake_gemini, planner):
    fake_gemini.queue(fg.function_call_reply(("inpaint", {"steps": 3})), fg.function_call_reply(("make_mask", {})))
    assert planner.plan(_ctx()).errors[0].kind == "invalid_arguments"
    planner.plan(_ctx(), feedback="your call was invalid; fix it")
    response = fake_gemini.requests[1].contents[2]["parts"][0]["functionResponse"]
    assert response["response"]["ok"] is False and "prompt" in response["response"]["result"]
    assert "your call was invalid; fix it" in fake_gemini.requests[1].text()


def test_veto_feedback_answers_pending_calls_and_asks_again(fake_gemini, planner):
    fake_gemini.queue(_mask_and_inpaint(), fg.function_call_reply(("make_mask", {"box": [0, 0, 500, 500]})))
    planner.plan(_ctx())
    second = planner.plan(_ctx(), feedback="vetoed: this exact mask was rolled back at step 2")
    assert second.calls[0].args["box"] == [0, 0, 500, 500]
    contents = fake_gemini.requests[1].contents
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    responses = [p["functionResponse"]["response"] for p in contents[2]["parts"] if "functionResponse" in p]
    assert all(not r["ok"] and "vetoed" in r["result"] for r in responses) and len(responses) == 2
    assert fake_gemini.requests[1].images() == [RED]  # same image: not sent twice


def test_empty_answer_is_unreadable_and_keeps_history_valid(fake_gemini, planner):
    blocked = fg.Reply(200, {"candidates": [{"finishReason": "SAFETY"}], "usageMetadata": fg.usage()})
    fake_gemini.queue(_mask_and_inpaint(), blocked, fg.function_call_reply(("make_mask", {})))
    planner.plan(_ctx())
    result = planner.plan(_ctx(), feedback="vetoed")
    assert [e.kind for e in result.errors] == ["unreadable"] and "SAFETY" in result.errors[0].message
    planner.plan(_ctx(), feedback="try again")
    contents = fake_gemini.requests[2].contents
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert sum("functionResponse" in p for p in contents[2]["parts"]) == 2


def test_failed_call_keeps_the_chat_valid(fake_gemini, planner):
    """Gemini unavailable mid-session: nothing is lost, the next request still answers the pending calls."""
    fake_gemini.queue(_mask_and_inpaint(), *[fg.unavailable()] * 4, fg.function_call_reply(("make_mask", {})))
    first = planner.plan(_ctx())
    planner.report([ToolReport(call=first.calls[0], ok=True, summary="mask ok", image_png=GREEN)])
    with pytest.raises(VLMUnavailable):
        planner.plan(_ctx(image=GREEN))
    assert planner.plan(_ctx(image=GREEN)).calls[0].name == "make_mask"
    contents = fake_gemini.requests[-1].contents
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    responses = [p["functionResponse"] for p in contents[2]["parts"] if "functionResponse" in p]
    assert [(r["name"], r["response"]["ok"]) for r in responses] == [("make_mask", True), ("inpaint", False)]
    assert fake_gemini.requests[-1].images() == [RED, GREEN]


def test_old_images_are_pruned_and_reset_clears(fake_gemini, planner):
    fake_gemini.handler = lambda request: fg.function_call_reply(("make_mask", {"target": "hat"}))
    for step in range(5):
        result = planner.plan(_ctx(image=make_png((step * 40, 10, 10))))
        planner.report([ToolReport(call=result.calls[0], ok=True, summary="ok")])
    assert len(fake_gemini.requests[-1].images()) == 3
    assert "[an earlier image, omitted]" in fake_gemini.requests[-1].text()
    assert all(c["role"] == "model" for c in fake_gemini.requests[-1].contents[1::2])
    planner.reset()
    planner.plan(_ctx())
    assert len(fake_gemini.requests[-1].contents) == 1


def test_usage_recorded_for_plan_calls(fake_gemini, planner):
    fake_gemini.queue(fg.function_call_reply(("make_mask", {}), usage_meta=fg.usage(1000, 30, 200)))
    planner.plan(_ctx())
    record = planner.client.calls[-1]
    assert (record.purpose, record.input_tokens, record.output_tokens, record.total_tokens) == ("plan", 1000, 230, 1230)


def test_calls_without_ids_are_matched_by_name(fake_gemini, planner):
    """Gemini 2.5 sends no function-call ids: reports are matched to calls by name, in order."""
    reply = fg.function_call_reply(("make_mask", {"target": "hat"}), ("inpaint", {"prompt": "a green hat"}), ids=False)
    fake_gemini.queue(reply, fg.function_call_reply(("make_mask", {})))
    calls = planner.plan(_ctx()).calls
    assert [c.call_id for c in calls] == [None, None]
    planner.report(
        [ToolReport(call=calls[1], ok=False, summary="mask empty"), ToolReport(call=calls[0], ok=True, summary="ok")]
    )
    planner.plan(_ctx())
    parts = fake_gemini.requests[1].contents[2]["parts"]
    responses = [p["functionResponse"] for p in parts if "functionResponse" in p]
    assert [(r["name"], r["response"]["ok"], "id" in r) for r in responses] == [
        ("make_mask", True, False),
        ("inpaint", False, False),
    ]
