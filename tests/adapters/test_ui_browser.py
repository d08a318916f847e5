"""The web UI in a real headless Chromium (Debian's, driven by Playwright; no browser download).

Served on loopback over the tiny random-weight FLUX family and the stand-in Gemini endpoint, the page is
used as a person would: type a prompt, press Run, watch the steps arrive one by one with their scores
and issue boxes, send feedback, revert to step 1, open a past session, and take a screenshot. Set
``EMAGE_UI_SCREENSHOT=docs/ui.png`` to keep the screenshot for the README.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from emage_agent.adapters.ui import Studio
from emage_agent.api import Agent
from emage_agent.core.evaluation import Evaluation
from emage_agent.session import SessionStore, StepRecord
from tests.support.fake_gemini import Request, evaluation_reply, rewrite_reply

pytest.importorskip("gradio")
playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")

BOX = [150, 300, 700, 900]
STYLE = {"category": "style", "severity": 0.8, "description": "the car should be blue", "target": "car", "box": BOX}
EVALS = [(0.5, [STYLE]), (0.7, [STYLE]), (0.9, []), (0.92, []), (0.86, [])]


class Judge:
    """The stand-in Gemini's answers in order, each after a short pause, so steps arrive one at a time."""

    def __init__(self) -> None:
        self.evals = list(EVALS)
        self.feedback_seen: list[str] = []

    def __call__(self, request: Request) -> Any:
        if request.purpose == "evaluate" and self.evals:
            if "make the car darker" in request.text():
                self.feedback_seen.append("make the car darker")
            score, issues = self.evals.pop(0)
            reply = evaluation_reply(score, issues, summary=f"judged {score}")
            reply.delay_s = 0.7
            return reply
        if request.purpose == "rewrite":
            return rewrite_reply("a red fox on a dark blue car")
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def past_session(root: Path) -> str:
    """A session made earlier (yesterday, say), to be found and opened from the browser."""
    store = SessionStore.create(root, "an old lighthouse at dusk", options={"width": 64, "height": 64})
    evaluation = Evaluation(satisfaction_score=0.66, summary="the light is missing")
    record = StepRecord(tool="generate", args={"prompt": "an old lighthouse at dusk"}, evaluation=evaluation)
    store.commit_step(record, images={"image": Image.new("RGB", (64, 64), (30, 60, 120))})
    store.set_status("done", stopped_because="iteration_limit")
    store.close()
    return store.id


@pytest.fixture
def served(tiny_settings: Any, gemini_settings: Any, executor: Any, fake_gemini: Any, tmp_path: Path) -> Iterator:
    from emage_agent.adapters.ui.app import serve

    gemini = {k: v for k, v in gemini_settings.model_dump().items() if k.startswith("gemini_")}
    settings = tiny_settings.model_copy(update={**gemini, "session_root": tmp_path / "sessions"})
    judge = Judge()
    fake_gemini.handler = judge
    old = past_session(tmp_path / "sessions")
    studio = Studio(Agent(settings, executor=executor), tmp_path / "sessions")
    defaults = {"width": 64, "height": 64, "steps": 2, "seed": 7, "planner": "selector", "iterations": 3}
    demo, url = serve(studio, port=free_port(), block=False, defaults=defaults)
    try:
        yield url, studio, judge, old
    finally:
        demo.close()


def captions(page: Any) -> list[str]:
    return page.locator("#steps .caption-label").all_inner_texts()


def test_run_watch_steer_and_browse_in_a_real_browser(served: Any, tmp_path: Path) -> None:
    url, studio, judge, old = served
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(30_000)
        page.goto(url)
        page.get_by_label("Prompt").fill("a red fox on a blue car")
        page.get_by_role("button", name="Run", exact=True).click()

        # the steps arrive one by one while the run goes on, each with its score
        seen: list[list[str]] = []
        deadline = time.monotonic() + 60
        while "finished" not in page.locator("#status").inner_text() and time.monotonic() < deadline:
            now = captions(page)
            if now and (not seen or now != seen[-1]):
                seen.append(now)
            page.wait_for_timeout(50)
        assert "finished" in page.locator("#status").inner_text()
        if captions(page) != seen[-1]:  # the last step and "finished" can arrive in one update
            seen.append(captions(page))
        counts = [len(c) for c in seen]
        assert [n for i, n in enumerate(counts) if i == 0 or n != counts[i - 1]] == [1, 2, 3], seen
        assert seen[0] == ["step 1 · 0.50 · ★ best · current"]
        final = captions(page)
        assert final == ["step 1 · 0.50", "step 2 · 0.70", "step 3 · 0.90 · ★ best · current"]
        assert "threshold" in page.locator("#status").inner_text()
        downloads = page.locator("#downloads")
        playwright.expect(downloads).to_contain_text(re.compile(r"report\s*\.html"))
        playwright.expect(downloads).to_contain_text(re.compile(r"\d{8}T\d+-[0-9a-f]+\s*\.zip"))
        playwright.expect(downloads).to_contain_text(re.compile(r"step-003\s*\.png"))  # the best image

        # a step's issues: as a list in the details and as a labelled box on its image
        page.locator("#steps button.thumbnail-item").nth(0).click()
        details = page.locator("#details")
        playwright.expect(details).to_contain_text("Step 1: generate · score 0.50")
        playwright.expect(details).to_contain_text("the car should be blue (car) [box]")
        playwright.expect(page.locator("#issues .legend")).to_contain_text("1. car")
        assert page.locator("#issues img").count() >= 2  # the image and the box drawn over it
        playwright.expect(downloads).to_contain_text(re.compile(r"report\s*\.html"))  # picking keeps the downloads

        # feedback on an image the judge already likes still makes a new image, carrying the words
        page.get_by_label("Feedback").fill("make the car darker")
        page.get_by_role("button", name="Send", exact=True).click()
        playwright.expect(page.locator("#steps .caption-label")).to_have_count(4, timeout=60_000)
        playwright.expect(page.locator("#status")).to_contain_text("finished", timeout=60_000)
        assert judge.feedback_seen, "the words must reach the judge"
        playwright.expect(details).to_contain_text("Your request: make the car darker")
        assert captions(page)[3].startswith("step 5 · 0.86")

        # revert to step 1: the head moves there, later steps stay in the timeline
        page.locator("#steps button.thumbnail-item").nth(0).click()
        playwright.expect(details).to_contain_text("Step 1: generate")
        page.get_by_role("button", name="Revert to this step").click()
        playwright.expect(page.locator("#status")).to_contain_text("reverted to step 1")
        playwright.expect(page.locator("#steps .caption-label").nth(0)).to_contain_text("current")
        assert len(captions(page)) == 4
        playwright.expect(page.locator("#issues .legend")).to_contain_text("1. car")
        shot = tmp_path / "ui.png"
        page.screenshot(path=str(shot), full_page=True)

        # a path is not feedback: refused with one line, nothing runs
        page.get_by_label("Feedback").fill("../../etc/passwd")
        page.get_by_role("button", name="Send", exact=True).click()
        playwright.expect(page.get_by_text("looks like a file path").first).to_be_visible()
        assert len(captions(page)) == 4

        # the sessions browser lists both sessions and opens the past one
        sessions = page.locator("#sessions .caption-label")
        playwright.expect(sessions).to_have_count(2)
        listed = sessions.all_inner_texts()
        assert any("an old lighthouse at dusk · 0.66 · done (iteration_limit)" in c for c in listed), listed
        page.locator("#sessions button.thumbnail-item").filter(has_text="an old lighthouse").click()
        playwright.expect(page.locator("#status")).to_contain_text(old)
        playwright.expect(details).to_contain_text("the light is missing")
        assert captions(page) == ["step 1 · 0.66 · ★ best · current"]
        browser.close()

    assert Image.open(shot).size[0] >= 1400
    with studio.open_store(old) as store:
        assert [s.tool for s in store.steps()] == ["generate"]  # opening a session changes nothing
    if target := os.environ.get("EMAGE_UI_SCREENSHOT"):
        shutil.copyfile(shot, target)
