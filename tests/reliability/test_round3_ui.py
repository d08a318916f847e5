"""Round 3 in the web UI, in real headless Chromium: HTML in a judge's error, a non-image upload, a dangling
entry in the sessions folder, and the upload cache's bound."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from emage_agent.api import Agent
from emage_agent.core.errors import ExecutionFailure
from emage_agent.core.settings import Settings
from tests.reliability.support import stored_session
from tests.support.scripted import ScriptedExecutor, ScriptedRewriter

pytest.importorskip("gradio")
playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")


class Beacon:
    """A loopback server that counts every fetch: an image a page should never have loaded."""

    def __init__(self) -> None:
        beacon = self
        self.hits = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                beacon.hits += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class HostileJudge:
    """A judge whose failure carries an image and a link, as a hostile server's error text would."""

    def __init__(self, beacon: str) -> None:
        self.message = f'judge down <img src="{beacon}/pixel.png"> <a href="http://evil.example/">click here</a>'

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        raise ExecutionFailure(self.message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Beacon, Path]]:
    from emage_agent.adapters.ui import Studio
    from emage_agent.adapters.ui.app import serve

    root = tmp_path / "sessions"
    stored_session(root)
    (root / "gone").symlink_to(tmp_path / "nowhere")  # a dangling entry
    beacon = Beacon()
    settings = Settings(_env_file=None, session_root=root, device="cpu", kontext_model="none", detector="none")
    agent = Agent(
        settings, root=root, executor=ScriptedExecutor(), evaluator=HostileJudge(beacon.url),
        rewriter=ScriptedRewriter(), planner_factory=lambda: None,
    )  # fmt: skip
    defaults = {"width": 64, "height": 64, "steps": 2, "seed": 7, "planner": "selector", "iterations": 1}
    demo, url = serve(Studio(agent, root), port=free_port(), block=False, defaults=defaults)
    try:
        yield url, beacon, tmp_path
    finally:
        demo.close()
        beacon.server.shutdown()


def test_hostile_text_uploads_and_listing(served: tuple[str, Beacon, Path]) -> None:
    """Items 4 and 13: model text is shown as text (no image fetched, no live link) in the one status area; a
    non-image upload gets EMage's one line; a dangling entry leaves the session list whole."""
    from emage_agent.adapters.ui.app import UPLOAD_CACHE

    url, beacon, tmp_path = served
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.set_default_timeout(30_000)
        page.goto(url)
        playwright.expect(page.locator("#sessions .caption-label")).to_have_count(1)  # the dangling entry is skipped

        page.get_by_label("Prompt").fill("a red fox on a blue car")
        page.get_by_role("button", name="Run", exact=True).click()
        status = page.locator("#status textarea")
        playwright.expect(status).to_have_value(re.compile("judge down"), timeout=30_000)
        page.wait_for_timeout(500)
        assert page.locator("a[href*='evil.example']").count() == 0
        assert page.locator("#status a").count() == 0 and page.locator(".toast-body a").count() == 0
        assert page.locator(f"img[src*='{beacon.url}']").count() == 0
        assert beacon.hits == 0
        assert "click here" in status.input_value()  # shown, as text

        bogus = tmp_path / "notes.png"
        bogus.write_text("this is not a picture")
        page.get_by_role("button", name="Options").click()
        page.locator("#start-image input[type=file]").set_input_files(str(bogus))
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Run", exact=True).click()
        playwright.expect(status).to_have_value(re.compile("not a readable image"))
        assert "preprocess" not in page.locator("body").inner_text()
        browser.close()
    assert UPLOAD_CACHE[1] <= 24 * 3600  # uploads are deleted once old, not kept for ever
