"""The web UI in a real headless Chromium (Debian's, driven by Playwright; no browser download).

Served on loopback over the tiny random-weight FLUX family and the stand-in Gemini endpoint, the page is
used as a person would, at 1400x1000: type a prompt, press Run, watch the judge's retry, the live preview
and the score chart while steps arrive, paint a region on the image and send feedback, revert to step 1,
open a past session (the prompt box fills). Then at 390x844, a phone: image and steps come first, the
options are folded, nothing scrolls sideways. Set ``EMAGE_UI_SCREENSHOTS=docs`` to keep the screenshots.
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
from emage_agent.core.ports import StepWatcher
from emage_agent.session import SessionStore, StepRecord
from tests.support.fake_gemini import Request, error_reply, evaluation_reply, rewrite_reply

pytest.importorskip("gradio")
playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")

BOX = [150, 300, 700, 900]
STYLE = {"category": "style", "severity": 0.8, "description": "the car should be blue", "target": "car", "box": BOX}
EVALS = [(0.5, [STYLE]), (0.7, [STYLE]), (0.9, [])]  # then 0.86 for every later judgement


class Judge:
    """The stand-in Gemini: one 503 first (the page shows the retry), then the scores in order, each after a pause."""

    def __init__(self) -> None:
        self.evals = list(EVALS)
        self.failed_once = False

    def __call__(self, request: Request) -> Any:
        if request.purpose == "evaluate" and not self.failed_once:
            self.failed_once = True
            return error_reply(503, "UNAVAILABLE", "the model is overloaded")
        if request.purpose == "evaluate":
            score, issues = self.evals.pop(0) if self.evals else (0.86, [])
            reply = evaluation_reply(score, issues, summary=f"judged {score}")
            reply.delay_s = 0.5
            return reply
        if request.purpose == "rewrite":
            return rewrite_reply("a red fox on a dark blue car")
        return None


class Unhurried:
    """The tiny executor with a pause after each denoising step, so a browser polling the page sees previews."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run(self, tool: str, args: dict[str, Any], images: Any = None, on_step: Any = None) -> Any:
        if isinstance(on_step, StepWatcher):
            watcher = on_step
            on_step = StepWatcher(lambda i, n: (time.sleep(0.35), watcher(i, n)), watcher.preview)
        return self.inner.run(tool, args, images, on_step=on_step)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def past_session(root: Path) -> str:
    """A session made earlier (yesterday, say), to be found and opened from the browser."""
    store = SessionStore.create(root, "an old lighthouse at dusk", options={"width": 64, "height": 64, "iterations": 2})
    evaluation = Evaluation(satisfaction_score=0.66, summary="the light is missing")
    record = StepRecord(
        tool="generate", args={"prompt": "an old lighthouse at dusk", "seed": 42}, evaluation=evaluation
    )
    store.commit_step(record, images={"image": Image.new("RGB", (64, 64), (30, 60, 120))})
    store.set_status("done", stopped_because="iteration_limit")
    store.close()
    return store.id


@pytest.fixture
def served(tiny_settings: Any, gemini_settings: Any, executor: Any, fake_gemini: Any, tmp_path: Path) -> Iterator:
    from emage_agent.adapters.ui.app import serve

    gemini = {k: v for k, v in gemini_settings.model_dump().items() if k.startswith("gemini_")}
    gemini["gemini_retry_initial_s"] = 1.5  # a retry long enough to be seen
    settings = tiny_settings.model_copy(update={**gemini, "session_root": tmp_path / "sessions"})
    fake_gemini.handler = Judge()
    old = past_session(tmp_path / "sessions")
    studio = Studio(Agent(settings, executor=Unhurried(executor)), tmp_path / "sessions")
    defaults = {"width": 64, "height": 64, "steps": 4, "planner": "selector", "iterations": 2}
    demo, url = serve(studio, port=free_port(), block=False, defaults=defaults)
    try:
        yield url, studio, old
    finally:
        demo.close()


def status(page: Any) -> str:
    return page.locator("#status textarea").input_value()


def captions(page: Any) -> list[str]:
    return page.locator("#steps .caption-label").all_inner_texts()


def no_sideways_scroll(page: Any, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def keep(shot: Path, name: str) -> None:
    if folder := os.environ.get("EMAGE_UI_SCREENSHOTS"):
        shutil.copyfile(shot, Path(folder) / name)


def test_run_watch_steer_and_browse_in_a_real_browser(served: Any, tmp_path: Path) -> None:
    url, studio, old = served
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(url)
        page.get_by_label("Prompt").fill("a red fox on a blue car")
        page.get_by_role("button", name="Run", exact=True).click()

        # while it runs: the judge's retry in the status, previews forming, the chart gaining points
        retry, widths, points, strips = False, set(), [], []
        deadline = time.monotonic() + 90
        while "finished" not in status(page) and time.monotonic() < deadline:
            retry = retry or "retrying in" in status(page)
            widths.add(page.evaluate("(document.querySelector('#image img') || {}).naturalWidth || 0"))
            points.append(page.locator("#chart circle").count())
            strips.append(len(captions(page)))
            page.wait_for_timeout(40)
        text = status(page)
        assert "finished" in text and "seed " in text, text
        assert retry, "the judge's 503 and the retry must show in the status while it happens"
        assert 256 in widths, widths  # a preview (the latents' colours, 256 px) replaced the image mid-diffusion
        assert page.evaluate("document.querySelector('#image img').naturalWidth") == 64  # then the final image
        assert page.locator("#chart circle").count() == 3 and {1, 2} <= set(points), points  # one point per judgement
        assert len(captions(page)) == 3 and 1 in strips, strips  # steps arrived one by one
        assert captions(page) == ["0.90 · #3 · ★ best · current", "0.70 · #2", "0.50 · #1"]  # newest first
        with studio.open_store(page.locator("#session-id textarea, #session-id input").first.input_value()) as store:
            seed = store.steps()[0].args["seed"]
        assert f"seed {seed}" in text  # the seed box was empty: the executor chose one, the page shows it

        # a step: its issues as a box on the image and its decision in words, the numbers folded
        page.locator("#steps button.thumbnail-item").nth(2).click()
        details = page.locator("#details")
        playwright.expect(details).to_contain_text("Step 1 · score 0.50")
        playwright.expect(details).to_contain_text("Step 1 made a new image, because it is the session's first image")
        playwright.expect(page.locator("#issues .legend")).to_contain_text("1. car")
        assert not page.locator("#details details pre").is_visible()

        # a mistake: one status line, and every panel keeps its content (no red error badges)
        page.get_by_role("button", name="Send feedback").click()
        empty = "Not done: feedback: is empty; write what the image should show or what to change"
        playwright.expect(page.locator("#status textarea")).to_have_value(empty)
        assert len(captions(page)) == 3 and page.locator(".error").count() == 0

        # paint a region on the newest image and send feedback: the next repair is limited to it
        page.locator("#steps button.thumbnail-item").nth(0).click()
        canvas = page.locator("#mask canvas").first
        box = canvas.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
        page.mouse.down()
        for k in range(1, 11):
            page.mouse.move(box["x"] + box["width"] * (0.3 + 0.04 * k), box["y"] + box["height"] * (0.3 + 0.03 * k))
        page.mouse.up()
        page.get_by_label("Feedback").fill("make the car darker")
        page.get_by_role("button", name="Send feedback").click()
        playwright.expect(page.locator("#steps .caption-label")).to_have_count(4, timeout=60_000)
        playwright.expect(page.locator("#status textarea")).to_have_value(
            re.compile(re.escape("finished")), timeout=60_000
        )
        sid = page.locator("#session-id textarea, #session-id input").first.input_value()
        with studio.open_store(sid) as store:
            painted = [s for s in store.steps() if s.tool == "make_mask" and s.note == "the region you painted"]
            assert len(painted) == 1, [(s.tool, s.note) for s in store.steps()]
            mask = store.load_image(f"s{painted[0].step}-mask")
            mask = mask.convert("L")
            assert mask.getpixel((26, 26)) == 255  # on the stroke (from 30 % to 70 % across, 30 % to 60 % down)
            assert mask.getpixel((60, 3)) == mask.getpixel((3, 60)) == 0  # far from it: kept as it was
            assert store.info.options.get("region") is None  # for that repair only
        playwright.expect(details).to_contain_text("because you asked: make the car darker")
        shot = tmp_path / "ui-desktop.png"
        page.screenshot(path=str(shot), full_page=True)

        # revert to step 1: it becomes current, later steps stay
        page.locator("#steps button.thumbnail-item").nth(3).click()
        playwright.expect(details).to_contain_text("Step 1 ·")
        page.get_by_role("button", name="Revert to this step").click()
        playwright.expect(page.locator("#status textarea")).to_have_value(re.compile(re.escape("Reverted to step 1")))
        playwright.expect(page.locator("#steps .caption-label").nth(3)).to_contain_text("current")

        # the history lists both sessions; opening the old one fills the prompt and its options
        cards = page.locator("#sessions .caption-label")
        playwright.expect(cards).to_have_count(2)
        assert any(
            "0.66 · done (iteration_limit)" in c and "an old lighthouse at dusk" in c for c in cards.all_inner_texts()
        )
        page.locator("#sessions button.thumbnail-item").filter(has_text="an old lighthouse").click()
        playwright.expect(page.locator("#status textarea")).to_have_value(re.compile(re.escape(old)))
        playwright.expect(page.get_by_label("Prompt")).to_have_value("an old lighthouse at dusk")
        page.locator("button:has-text('Options')").first.click()  # unfold the options: they were filled too
        playwright.expect(page.get_by_label("Seed (empty: random)")).to_have_value("42")
        playwright.expect(page.get_by_label("Width")).to_have_value("64")
        assert captions(page) == ["0.66 · #1 · ★ best · current"]
        no_sideways_scroll(page, 1400)

        # a phone: the image and its steps come before the options, which are folded; nothing scrolls sideways
        phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        phone.goto(url)
        phone.locator("#sessions button.thumbnail-item").filter(has_text="a red fox").click()
        playwright.expect(phone.locator("#steps .caption-label")).to_have_count(4)
        where = {"image": "#image", "steps": "#steps", "feedback": "#mask", "options": "button:has-text('Options')"}
        tops = {name: phone.locator(sel).first.bounding_box()["y"] for name, sel in where.items()}
        assert tops["image"] < tops["steps"] < tops["feedback"] < tops["options"], tops
        assert tops["steps"] < 844, tops  # the image and the start of the steps on the first screen
        assert not phone.get_by_label("Iterations").is_visible()  # folded away
        assert "0.90" in phone.locator("#steps .caption-label").nth(1).inner_text()  # the score fits the caption
        no_sideways_scroll(phone, 390)
        phone.evaluate("window.scrollTo(0, 0)")
        phone_shot = tmp_path / "ui-phone.png"
        phone.screenshot(path=str(phone_shot))
        browser.close()

    assert Image.open(shot).size[0] == 1400 and Image.open(phone_shot).size[0] in (390, 780, 1170)
    keep(shot, "ui-desktop.png")
    keep(phone_shot, "ui-phone.png")
