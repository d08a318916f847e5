"""The evaluator through the real SDK and the fake endpoint: parsing, clamping, recovery and user remarks."""

from __future__ import annotations

import pytest

from emage_agent.core.errors import UnreadableAnswer
from emage_agent.vlm.gemini import Evaluator, GeminiClient
from tests.support import fake_gemini as fg


@pytest.fixture
def evaluator(gemini_settings):
    return Evaluator(GeminiClient(gemini_settings))


def test_structured_evaluation_and_request_shape(fake_gemini, evaluator, tiny_png):
    issue = {"category": "object", "severity": 0.8, "description": "The cat is orange.", "target": "the cat",
             "box": [100, 200, 600, 700], "feedback_index": None}  # fmt: skip
    fake_gemini.queue(fg.evaluation_reply(0.55, [issue], "An orange cat instead of a black one."))
    evaluation = evaluator.evaluate(tiny_png, "a black cat on a red sofa, detailed", original_prompt="a black cat")
    assert evaluation.satisfaction_score == 0.55
    assert evaluation.issues[0].model_dump() == {k: v for k, v in issue.items() if k != "feedback_index"}
    request = fake_gemini.requests[0]
    assert request.images() == [tiny_png]
    assert request.generation_config["responseMimeType"] == "application/json"
    props = request.response_schema["properties"]
    assert set(props) == {"issues", "satisfaction_score", "summary"}
    category = props["issues"]["items"]["properties"]["category"]
    assert category["enum"] == ["object", "spatial", "style", "prompt", "semantic"]
    text = request.text()
    assert "USER'S REQUEST" in text and "a black cat\n" in text and "a black cat on a red sofa, detailed" in text


def test_out_of_range_issue_values_are_clamped(fake_gemini, evaluator, tiny_png):
    issues = [
        {"category": "Spatial", "severity": 1.7, "description": "dog too small", "box": [1200, -5, 300, 900]},
        {"category": "colour", "severity": 80, "description": "sofa is blue", "box": [0.1, 0.2, 0.5, 0.6]},
        {"category": "vibes", "severity": 0.5, "description": "not a category"},
        {"category": "object", "severity": -1, "description": "zero-area box", "box": [5, 5, 5, 9]},
    ]
    fake_gemini.queue(fg.evaluation_reply(0.6, issues))
    evaluation = evaluator.evaluate(tiny_png, "a dog on a red sofa")
    assert evaluation.satisfaction_score == 0.6
    assert [(i.category, i.severity, i.box) for i in evaluation.issues] == [
        ("spatial", 1.0, [300, 0, 1000, 900]),  # overshoot clamped; box clamped and sorted
        ("style", 0.8, [100, 200, 500, 600]),  # percent severity; fractional box scaled to 0..1000
        ("object", 0.0, None),  # negative severity clamped; degenerate box dropped
    ]


@pytest.mark.parametrize("score", [1.4, 85, -0.2])
def test_out_of_range_score_is_malformed_and_asked_again(fake_gemini, evaluator, tiny_png, score):
    fake_gemini.queue(fg.evaluation_reply(score), fg.evaluation_reply(0.55))
    assert evaluator.evaluate(tiny_png, "a dog").satisfaction_score == 0.55
    assert len(fake_gemini.requests) == 2
    assert [c.ok for c in evaluator.client.calls] == [False, True]


def test_out_of_range_score_twice_is_unreadable_never_a_score(fake_gemini, evaluator, tiny_png):
    fake_gemini.queue(fg.evaluation_reply(1.7), fg.evaluation_reply(1.7))
    with pytest.raises(UnreadableAnswer, match="after 2 answers"):
        evaluator.evaluate(tiny_png, "a dog")


def test_json_inside_prose_is_recovered(fake_gemini, evaluator, tiny_png):
    answer = 'Here is my verdict:\n```json\n{"satisfaction_score": 0.4, "issues": [], "summary": "meh"}\n```\nThanks.'
    fake_gemini.queue(fg.text_reply(answer))
    evaluation = evaluator.evaluate(tiny_png, "a dog")
    assert (evaluation.satisfaction_score, evaluation.summary) == (0.4, "meh")


def test_score_in_prose_is_recovered(fake_gemini, evaluator, tiny_png):
    fake_gemini.queue(fg.text_reply("The dog is there but the sofa is blue. Overall I'd give it a score of 7/10."))
    evaluation = evaluator.evaluate(tiny_png, "a dog on a red sofa")
    assert evaluation.satisfaction_score == pytest.approx(0.7)
    assert evaluation.summary.startswith("The dog is there")


@pytest.mark.parametrize("answer", ["I cannot help with that.", "", '{"issues": [], "summary": "no score"}'])
def test_garbage_is_unreadable_never_a_default(fake_gemini, evaluator, tiny_png, answer):
    fake_gemini.queue(fg.text_reply(answer), fg.text_reply(answer))
    with pytest.raises(UnreadableAnswer):
        evaluator.evaluate(tiny_png, "a dog")


def test_blocked_answer_is_unreadable(fake_gemini, evaluator, tiny_png):
    blocked = fg.Reply(200, {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": fg.usage()})
    fake_gemini.queue(blocked, blocked)
    with pytest.raises(UnreadableAnswer, match="SAFETY"):
        evaluator.evaluate(tiny_png, "a dog")


def test_user_remarks_become_full_weight_issues(fake_gemini, evaluator, tiny_png):
    """A remark the model recorded keeps its category but gets the user's words and severity 1.0;
    a remark it ignored is added anyway."""
    issues = [
        {"category": "style", "severity": 0.3, "description": "slightly dull light"},
        {"category": "object", "severity": 0.6, "description": "User says the hat is wrong", "target": "the hat",
         "box": [0, 300, 200, 700], "feedback_index": 1},
    ]  # fmt: skip
    fake_gemini.queue(fg.evaluation_reply(0.7, issues))
    remarks = ["the hat should be green, not blue", "the dog should be on the left"]
    evaluation = evaluator.evaluate(tiny_png, "a dog in a hat", feedback=remarks)
    first, second, third = evaluation.issues
    assert (first.category, first.severity, first.description) == ("object", 1.0, remarks[0])
    assert (first.target, first.box) == ("the hat", [0, 300, 200, 700])
    assert (second.category, second.severity, second.description) == ("spatial", 1.0, remarks[1])
    assert third.description == "slightly dull light"
    assert "1. the hat should be green, not blue" in fake_gemini.requests[0].text()
