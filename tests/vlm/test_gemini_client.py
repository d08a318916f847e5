"""The client against the fake endpoint: retries, error translation, fallback model, usage and key hygiene."""

from __future__ import annotations

import json
import logging
import time
import traceback

import pytest

from emage_agent.core.errors import UserError, VLMUnavailable
from emage_agent.core.planning import PlanningContext, Recommendation, ToolReport
from emage_agent.vlm.gemini import Evaluator, GeminiClient, Planner, Rewriter
from emage_agent.vlm.gemini.client import GeminiRequestError
from tests.support import fake_gemini as fg
from tests.support.fake_gemini import FAKE_KEY


def _evaluate(settings, png, **kw):
    client = GeminiClient(settings, **kw)
    return client, Evaluator(client).evaluate(png, "a red square")


def test_no_key_is_a_user_error_naming_the_variable(gemini_settings):
    settings = gemini_settings.model_copy(update={"gemini_api_key": None})
    with pytest.raises(UserError, match="GEMINI_API_KEY"):
        GeminiClient(settings)


def test_request_reaches_the_configured_endpoint(fake_gemini, gemini_settings, tiny_png):
    fake_gemini.queue(fg.evaluation_reply(0.7))
    _evaluate(gemini_settings, tiny_png)
    request = fake_gemini.requests[0]
    assert request.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert request.headers["x-goog-api-key"] == FAKE_KEY
    assert request.purpose == "evaluate"


def test_retries_429_then_503_then_succeeds(fake_gemini, gemini_settings, tiny_png):
    fake_gemini.queue(fg.rate_limited(), fg.unavailable(), fg.evaluation_reply(0.7, usage_meta=fg.usage(300, 40, 60)))
    client, evaluation = _evaluate(gemini_settings, tiny_png)
    assert evaluation.satisfaction_score == 0.7
    assert len(fake_gemini.requests) == 3
    record = client.calls[-1]
    assert (record.ok, record.attempts, record.purpose) == (True, 3, "evaluate")
    assert (record.input_tokens, record.output_tokens, record.total_tokens) == (300, 100, 400)
    assert record.latency_s > 0


@pytest.mark.parametrize("reply", [fg.server_error, fg.unavailable, fg.rate_limited])
def test_gives_up_after_max_attempts(fake_gemini, gemini_settings, tiny_png, reply):
    fake_gemini.handler = lambda request: reply()
    started = time.monotonic()
    client = GeminiClient(gemini_settings)
    with pytest.raises(VLMUnavailable, match="4 attempt"):
        Evaluator(client).evaluate(tiny_png, "a red square")
    assert len(fake_gemini.requests) == gemini_settings.gemini_max_attempts
    assert time.monotonic() - started < 2.0
    assert client.calls[-1].ok is False and client.calls[-1].attempts == 4


def test_retry_time_is_bounded_by_max_retry_s(fake_gemini, gemini_settings, tiny_png):
    # The service asks for 0.4 s between tries; with 0.5 s of retry budget only two attempts fit.
    settings = gemini_settings.model_copy(update={"gemini_max_attempts": 20, "gemini_max_retry_s": 0.5})
    fake_gemini.handler = lambda request: fg.rate_limited("0.4s")
    started = time.monotonic()
    with pytest.raises(VLMUnavailable):
        _evaluate(settings, tiny_png)
    elapsed = time.monotonic() - started
    assert len(fake_gemini.requests) == 2
    assert 0.4 <= elapsed < 1.5


def test_timeout_is_retried_then_reported(fake_gemini, gemini_settings, tiny_png):
    settings = gemini_settings.model_copy(update={"gemini_timeout_s": 0.3, "gemini_max_attempts": 2})
    fake_gemini.handler = lambda request: fg.Reply(200, fg.evaluation_reply().body, delay_s=1.0)
    with pytest.raises(VLMUnavailable, match="in time"):
        _evaluate(settings, tiny_png)
    assert len(fake_gemini.requests) == 2


def test_timeout_then_success(fake_gemini, gemini_settings, tiny_png):
    settings = gemini_settings.model_copy(update={"gemini_timeout_s": 0.3})
    fake_gemini.queue(fg.Reply(200, fg.evaluation_reply().body, delay_s=1.0), fg.evaluation_reply(0.9))
    client, evaluation = _evaluate(settings, tiny_png)
    assert evaluation.satisfaction_score == 0.9 and client.calls[-1].attempts == 2


def test_400_fails_at_once(fake_gemini, gemini_settings, tiny_png):
    fake_gemini.handler = lambda request: fg.invalid_argument("Unable to process input image.")
    with pytest.raises(GeminiRequestError, match="400 INVALID_ARGUMENT.*Unable to process input image"):
        _evaluate(gemini_settings, tiny_png)
    assert len(fake_gemini.requests) == 1


def test_unknown_model_is_a_user_error(fake_gemini, gemini_settings, tiny_png):
    fake_gemini.queue(fg.error_reply(404, "NOT_FOUND", "models/gemini-9 is not found"))
    with pytest.raises(UserError, match="EMAGE_GEMINI_MODEL"):
        _evaluate(gemini_settings, tiny_png)


@pytest.mark.parametrize(
    "reply",
    [fg.api_key_invalid(), fg.error_reply(401, "UNAUTHENTICATED"), fg.error_reply(403, "PERMISSION_DENIED")],
)
def test_rejected_key_is_a_user_error(fake_gemini, gemini_settings, tiny_png, reply):
    fake_gemini.queue(reply)
    with pytest.raises(UserError, match="GEMINI_API_KEY.*rejected") as info:
        _evaluate(gemini_settings, tiny_png)
    assert len(fake_gemini.requests) == 1
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    ("hint", "models"),
    [
        (None, ["gemini-2.5-flash", "gemini-2.5-flash", "gemini-2.5-flash-lite"]),  # half the attempts, then switch
        ("30s", ["gemini-2.5-flash", "gemini-2.5-flash-lite"]),  # quota hint beyond the budget: switch at once
    ],
)
def test_fallback_model_after_repeated_429(fake_gemini, gemini_settings, tiny_png, hint, models):
    settings = gemini_settings.model_copy(update={"gemini_fallback_model": "gemini-2.5-flash-lite"})

    def route(request):
        return fg.rate_limited(hint) if request.model == "gemini-2.5-flash" else fg.evaluation_reply(0.8)

    fake_gemini.handler = route
    started = time.monotonic()
    client, evaluation = _evaluate(settings, tiny_png)
    assert evaluation.satisfaction_score == 0.8
    assert [r.model for r in fake_gemini.requests] == models
    assert client.calls[-1].model == "gemini-2.5-flash-lite"
    assert time.monotonic() - started < 2.0  # the 30 s hint is for the main model, not the fallback


def test_fallback_also_failing_gives_up_within_bound(fake_gemini, gemini_settings, tiny_png):
    settings = gemini_settings.model_copy(update={"gemini_fallback_model": "gemini-2.5-flash-lite"})
    fake_gemini.handler = lambda request: fg.unavailable()
    with pytest.raises(VLMUnavailable, match="gemini-2.5-flash then gemini-2.5-flash-lite"):
        _evaluate(settings, tiny_png)
    assert [r.model for r in fake_gemini.requests] == ["gemini-2.5-flash"] * 2 + ["gemini-2.5-flash-lite"] * 2


def test_unreachable_endpoint_is_unavailable(gemini_settings, tiny_png):
    settings = gemini_settings.model_copy(update={"gemini_base_url": "http://127.0.0.1:9", "gemini_max_attempts": 2})
    with pytest.raises(VLMUnavailable, match="could not be reached"):
        _evaluate(settings, tiny_png)


def test_key_never_written(fake_gemini, gemini_settings, tiny_png, caplog):
    """The key travels in the x-goog-api-key header only: not in bodies, records, errors, tracebacks or logs."""
    caplog.set_level(logging.DEBUG)
    echo = fg.error_reply(400, "INVALID_ARGUMENT", f"bad request with key {FAKE_KEY}")  # a careless proxy
    fake_gemini.queue(fg.unavailable(), fg.evaluation_reply(0.5), echo, fg.api_key_invalid())
    fake_gemini.queue(fg.function_call_reply(("generate", {"prompt": "a red square"})), fg.rewrite_reply("a square"))
    client = GeminiClient(gemini_settings)
    evaluation = Evaluator(client).evaluate(tiny_png, "a red square")
    with pytest.raises(GeminiRequestError) as echoed:
        Evaluator(client).evaluate(tiny_png, "a red square")
    with pytest.raises(UserError) as rejected:
        Rewriter(client).rewrite("a red square", "a red square", [])
    recommendation = Recommendation(strategy="prompt_refinement", reason="r")
    ctx = PlanningContext(
        prompt="p", original_prompt="p", evaluation=evaluation, recommendation=recommendation, image_png=tiny_png
    )
    planner = Planner(client)
    result = planner.plan(ctx)
    planner.report([ToolReport(call=result.calls[0], ok=True, summary="done", image_png=tiny_png)])
    Rewriter(client).rewrite("a red square", "a red square", [])

    assert "***" in str(echoed.value)
    written = [json.dumps([c.model_dump() for c in client.calls]), repr(client), repr(gemini_settings), caplog.text]
    for exc in (echoed.value, rejected.value):
        written += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    assert all(FAKE_KEY not in text for text in written)
    assert len(fake_gemini.requests) == 6
    for request in fake_gemini.requests:
        assert FAKE_KEY not in request.raw.decode("utf-8", "replace") and FAKE_KEY not in request.path
        assert [name for name, value in request.headers.items() if FAKE_KEY in value] == ["x-goog-api-key"]
