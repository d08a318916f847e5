"""Prompt rewriting: Gemini's rewrite keeps the user's intent; the offline rule is deterministic."""

from __future__ import annotations

from emage_agent.core.evaluation import Issue
from emage_agent.vlm.gemini import GeminiClient, Rewriter, offline_rewrite
from tests.support import fake_gemini as fg

ORIGINAL = "a fox on a red car at sunset"
ISSUES = [
    Issue(category="spatial", severity=0.9, description="The fox stands beside the car.", target="the fox"),
    Issue(category="semantic", severity=0.7, description="Sunset mood missing", target="warm sunset light"),
    Issue(category="prompt", severity=0.5, description="Unclear where the fox is", target=None),
]


def test_gemini_rewrite(fake_gemini, gemini_settings):
    new = "a fox sitting on the roof of a red car, warm sunset light, at sunset"
    fake_gemini.queue(fg.rewrite_reply(new, "made the fox's position explicit"))
    rewrite = Rewriter(GeminiClient(gemini_settings)).rewrite(ORIGINAL, ORIGINAL, ISSUES, focus="fox on the roof")
    assert (rewrite.prompt, rewrite.source) == (new, "gemini")
    request = fake_gemini.requests[0]
    assert request.purpose == "rewrite"
    assert "fox on the roof" in request.text() and "[spatial, severity 0.90]" in request.text()


def test_gemini_rewrite_that_drops_intent_is_repaired(fake_gemini, gemini_settings):
    fake_gemini.queue(fg.rewrite_reply("a fox sitting on the roof of a car"))  # lost "red" and "sunset"
    rewrite = Rewriter(GeminiClient(gemini_settings)).rewrite(ORIGINAL, ORIGINAL, ISSUES)
    assert rewrite.prompt == "a fox sitting on the roof of a car, red, sunset"
    assert "restored" in rewrite.rationale and rewrite.source == "gemini"


def test_json_in_text_is_recovered(fake_gemini, gemini_settings):
    fake_gemini.queue(fg.text_reply('Sure! {"prompt": "a fox on a red car at sunset, on the roof", "rationale": "r"}'))
    rewrite = Rewriter(GeminiClient(gemini_settings)).rewrite(ORIGINAL, ORIGINAL, [])
    assert rewrite.prompt == "a fox on a red car at sunset, on the roof"


def test_falls_back_offline_when_gemini_is_unavailable(fake_gemini, gemini_settings):
    fake_gemini.handler = lambda request: fg.unavailable()
    rewrite = Rewriter(GeminiClient(gemini_settings)).rewrite(ORIGINAL, ORIGINAL, ISSUES, focus="the fox on the roof")
    assert rewrite == offline_rewrite(ORIGINAL, ORIGINAL, ISSUES, "the fox on the roof").model_copy(
        update={"rationale": rewrite.rationale}
    )
    assert rewrite.source == "offline" and "Gemini unavailable" in rewrite.rationale


def test_falls_back_offline_when_answer_is_unreadable(fake_gemini, gemini_settings):
    fake_gemini.queue(fg.text_reply("no idea"))
    rewrite = Rewriter(GeminiClient(gemini_settings)).rewrite(ORIGINAL, ORIGINAL, ISSUES)
    assert rewrite.source == "offline" and "unreadable" in rewrite.rationale


def test_offline_rewrite_appends_missing_elements_once():
    rewrite = offline_rewrite(ORIGINAL, ORIGINAL, ISSUES, focus="the fox sits on the car roof")
    # spatial issues are not prompt-side; targets preferred over descriptions; focus first
    assert rewrite.prompt == (
        "a fox on a red car at sunset, the fox sits on the car roof, warm sunset light, Unclear where the fox is"
    )
    assert rewrite.source == "offline"
    again = offline_rewrite(rewrite.prompt, ORIGINAL, ISSUES, focus="the fox sits on the car roof")
    assert again.prompt == rewrite.prompt  # nothing added twice
    assert "already names" in again.rationale


def test_offline_rewrite_restores_lost_intent_and_is_deterministic():
    issues = [Issue(category="prompt", severity=0.6, description="colour of car unclear", target="Warm Sunset Light")]
    first = offline_rewrite("a fox on a car", ORIGINAL, issues + issues)
    assert first.prompt == "a fox on a car, red, sunset, Warm Sunset Light"
    assert first == offline_rewrite("a fox on a car", ORIGINAL, issues + issues)


def test_offline_rewrite_respects_the_contract_length():
    long_prompt = "a fox " + "very " * 500
    rewrite = offline_rewrite(long_prompt, "a fox", [], focus="on a red car")
    assert len(rewrite.prompt) <= 2000
