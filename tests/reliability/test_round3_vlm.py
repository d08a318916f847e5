"""Round 3 against the real SDKs on loopback: a judge that drips its answer, nests JSON 100,000 deep or sends a
30 MB summary. google-genai and openai run unmodified against stand-in servers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from emage_agent.core.errors import VLMUnavailable
from emage_agent.core.evaluation import MAX_SUMMARY_CHARS
from emage_agent.core.settings import Settings
from emage_agent.vlm.evaluator import Evaluator
from emage_agent.vlm.gemini import GeminiClient
from emage_agent.vlm.openai_compat import OpenAIClient, Planner
from tests.support import fake_gemini as fg
from tests.support import fake_openai as fo
from tests.support.fixtures_gemini import make_png
from tests.vlm.test_openai_backend import context


class Drip:
    """A server that answers every POST with ``body``, one byte every ``gap_s`` (each read is quick)."""

    def __init__(self, body: bytes, gap_s: float) -> None:
        drip = self
        self.body, self.gap_s, self.posts = body, gap_s, 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                drip.posts += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(drip.body)))
                self.end_headers()
                try:
                    for i in range(len(drip.body)):
                        self.wfile.write(drip.body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(drip.gap_s)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def drip_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Drip]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = Drip(json.dumps(request.param).encode(), gap_s=0.02)
    yield server
    server.close()


GEMINI_EVAL = fg.evaluation_reply(0.7, [], "fine").body
OPENAI_EVAL = fo.evaluation_reply(0.7, [], "fine").body


@pytest.mark.parametrize("drip_server", [GEMINI_EVAL], indirect=True)
def test_gemini_drip_feed_meets_the_whole_request_deadline(drip_server: Drip) -> None:
    """Item 3: a valid answer a byte at a time (every read quick) ends at the 1 s deadline, not after ~8 s."""
    assert len(drip_server.body) * drip_server.gap_s > 5  # the old per-read timeout let all of it through
    settings = Settings(
        _env_file=None, gemini_api_key=fg.FAKE_KEY, gemini_base_url=drip_server.url, gemini_api_version="v1beta",
        gemini_timeout_s=1.0, gemini_max_attempts=2, gemini_max_retry_s=1.5, gemini_retry_initial_s=0.01,
    )  # fmt: skip
    started = time.monotonic()
    with pytest.raises(VLMUnavailable) as info:
        Evaluator(GeminiClient(settings)).evaluate(make_png(), "a red fox")
    elapsed = time.monotonic() - started
    assert elapsed < 4.5, elapsed  # two attempts of 1 s each, plus a little
    assert "1s in all" in str(info.value) and "retries 1.5s" in str(info.value)


@pytest.mark.parametrize("drip_server", [OPENAI_EVAL], indirect=True)
def test_openai_drip_feed_meets_the_whole_request_deadline(drip_server: Drip) -> None:
    """Item 3: the same on the OpenAI-compatible backend."""
    assert len(drip_server.body) * drip_server.gap_s > 5
    settings = Settings(
        _env_file=None, openai_base_url=f"{drip_server.url}/v1", openai_model="m", openai_timeout_s=1.0,
        openai_max_attempts=2, openai_max_retry_s=1.5, openai_retry_initial_s=0.01,
    )  # fmt: skip
    started = time.monotonic()
    with pytest.raises(VLMUnavailable) as info:
        Evaluator(OpenAIClient(settings)).evaluate(make_png(), "a red fox")
    elapsed = time.monotonic() - started
    assert elapsed < 4.5, elapsed
    assert "did not answer in time" in str(info.value) and "1s in all" in str(info.value)


DEEP = "[" * 50_000 + "]" * 50_000  # 100,000 brackets, under the length bound: the depth bound must catch it


def test_deep_tool_arguments_go_back_to_the_model(openai_settings: Settings, fake_openai: Any) -> None:
    """Item 5: 100,000 brackets in a tool call's arguments are the model's mistake, sent back; no RecursionError."""
    fake_openai.queue(fo.tool_call_reply(("canny_edit", '{"prompt": ' + DEEP + "}")))
    result = Planner(OpenAIClient(openai_settings)).plan(context(make_png(), ["canny_edit"]))
    assert result.calls == []
    assert [e.kind for e in result.errors] == ["invalid_arguments"]
    assert "nests 50001 levels" in result.errors[0].message


def test_deep_evaluation_text_is_asked_again(openai_settings: Settings, fake_openai: Any) -> None:
    """Item 5: an evaluation of 100,000 brackets is malformed: asked again, then read from the second answer."""
    fake_openai.queue(fo.text_reply('{"satisfaction_score": 0.5, "x": ' + DEEP + "}"), fo.evaluation_reply(0.6))
    evaluation = Evaluator(OpenAIClient(openai_settings)).evaluate(make_png(), "a red fox")
    assert evaluation.satisfaction_score == 0.6 and len(fake_openai.requests) == 2


def test_gemini_deep_structured_answer_is_asked_again(gemini_settings: Settings, fake_gemini: Any) -> None:
    """Item 5: a Gemini body nested 100,000 deep (the SDK's decoder overflows) is asked again, not a crash."""
    deep_body = '{"candidates": [{"content": {"parts": [{"text": "x"}], "role": "model"}, "x": ' + DEEP + "}]}"
    fake_gemini.queue(fg.Reply(body=deep_body), fg.evaluation_reply(0.65))
    evaluation = Evaluator(GeminiClient(gemini_settings)).evaluate(make_png(), "a red fox")
    assert evaluation.satisfaction_score == 0.65 and len(fake_gemini.requests) == 2


def test_a_huge_summary_is_cut_where_it_lands(gemini_settings: Settings, fake_gemini: Any) -> None:
    """Item 6: a 5 MB summary and 500 issues are cut to their bounds before anything stores or shows them."""
    issue = {"category": "style", "severity": 0.5, "description": "d" * 50_000, "target": "t" * 5_000}
    fake_gemini.queue(fg.evaluation_reply(0.4, [issue] * 500, "s" * 5_000_000))
    evaluation = Evaluator(GeminiClient(gemini_settings)).evaluate(make_png(), "a red fox")
    assert len(evaluation.summary) <= MAX_SUMMARY_CHARS and "cut: 5000000 characters" in evaluation.summary
    assert len(evaluation.issues) <= 24
    assert all(len(i.description) <= 1000 and len(i.target or "") <= 200 for i in evaluation.issues)
    assert len(evaluation.model_dump_json()) < 100_000
