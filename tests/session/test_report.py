"""The HTML report: its structure with html.parser, then the real page in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from PIL import Image, ImageDraw

from emage_agent.core.evaluation import Evaluation, Issue
from emage_agent.session import SessionStore, StepRecord
from emage_agent.session.report import render_report, write_report

EVIL_PROMPT = 'a cat <script>alert("owned")</script> & a "dog" \'<img src=x onerror=alert(1)>\''
EVIL_REWRITE = "a cat</div><style>body{display:none}</style> sitting on a mat"


def picture(hue: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    im = Image.new("RGB", size, (hue, 120, 255 - hue))
    ImageDraw.Draw(im).ellipse((40, 20, 120, 100), fill=(250, 220, 40))
    return im


def evaluation(score: float, *issues: Issue) -> Evaluation:
    return Evaluation(satisfaction_score=score, issues=list(issues), summary=f"Judged {score:.2f} <b>bold?</b>")


def build_session(root: Path) -> SessionStore:
    """Six steps: generate, mask, a rolled-back inpaint, a vetoed rewrite, the best regenerate, a failed edit."""
    store = SessionStore.create(root, EVIL_PROMPT, {"iterations": 5, "threshold": 0.85, "seed": 3, "budgets": {"a": 1}})
    cat = Issue(
        category="object", severity=0.8, description="the cat has <three> ears", target="cat", box=[100, 200, 600, 700]
    )
    store.commit_step(
        StepRecord(
            tool="generate",
            args={"prompt": EVIL_PROMPT, "seed": 3},
            decision={"strategy": "initial"},
            timings={"tool_s": 12.5, "evaluate_s": 3.25},
            tokens={"input": 1200, "output": 90},
        ),
        {"image": picture(10)},
    )
    store.attach_evaluation(1, evaluation(0.55, cat, Issue(category="style", severity=0.2, description="too dark")))
    store.record_calls(
        1, [{"purpose": "evaluate", "model": "gemini-2.5-flash", "latency_s": 2.5, "input_tokens": 1200}]
    )
    store.commit_step(StepRecord(tool="make_mask", args={"target": "cat"}), {"mask": picture(200).convert("L")})
    store.commit_step(
        StepRecord(
            tool="inpaint", args={"prompt": "a cat with two ears", "mask": "s2-mask"}, evaluation=evaluation(0.4)
        ),
        {"image": picture(60)},
    )
    store.mark_rolled_back(3)
    store.revert(2)
    store.set_prompt(EVIL_REWRITE)
    store.commit_step(
        StepRecord(
            tool="rewrite_prompt",
            args={"focus": "ears"},
            vetoes=[{"tool": "inpaint", "reason": "inpaint already failed on <cat>"}],
            decision={"strategy": "prompt_refinement", "reason": "prompt-side issues dominate", "prompt_side": 0.7},
        )
    )
    store.commit_step(
        StepRecord(
            tool="generate",
            args={"prompt": EVIL_REWRITE, "guidance": 4.0},
            evaluation=evaluation(0.92),
            clamps=["guidance 9.0 -> 4.0 (schedule)"],
            note="regenerated after the rewrite",
        ),
        {"image": picture(120)},
    )
    store.commit_step(
        StepRecord(tool="canny_edit", args={"strength": 0.6}, error="CUDA out of memory <oops>"),
        {"control": picture(220).convert("L")},
        make_head=False,
    )
    store.add_usage(vlm_calls=4, gpu_seconds=31.5)
    store.set_status("done", stopped_because="threshold reached")
    return store


class Page(HTMLParser):
    """Collects tags, attributes and text so the tests can check the page's structure."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag]


@pytest.fixture
def session(tmp_path: Path):
    store = build_session(tmp_path)
    yield store
    store.close()


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_report_structure(session: SessionStore) -> None:
    path = write_report(session)
    assert path == session.dir / "report.html"
    html = path.read_text(encoding="utf-8")
    page = parse(path)
    text = "".join(page.text)

    # self-contained: no scripts, no external resources, nothing that fetches
    assert page.all("script") == [] and page.all("link") == [] and page.all("iframe") == []
    assert "http://" not in html and "https://" not in html and "url(" not in html and "@import" not in html
    refs = [a["src"] for a in page.all("img")] + [a["href"] for a in page.all("a")]
    for ref in refs:
        parsed = urlparse(ref)
        assert not parsed.scheme and not parsed.netloc and not ref.startswith("/"), ref
        if not ref.startswith("#"):
            assert (session.dir / unquote(parsed.path)).is_file(), ref
    srcs = {a["src"] for a in page.all("img")}
    for step in session.steps():
        for art in step.artifacts:
            assert art.path in srcs, f"step {step.step}'s {art.role} is not shown"
    assert all(a.get("alt") for a in page.all("img"))

    # user text is escaped: it shows as text, never as markup
    assert EVIL_PROMPT in text and EVIL_REWRITE in text
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert "<style>body" not in html and page.all("style") == [{}]
    assert "the cat has <three> ears" in text and "inpaint already failed on <cat>" in text
    assert "CUDA out of memory <oops>" in text

    # a card per step, the best highlighted, the rollback marked
    cards = {a["id"]: a["class"].split() for t, a in page.tags if t == "article"}
    assert list(cards) == [f"step-{n}" for n in range(1, 7)]
    assert "best" in cards["step-5"] and sum("best" in c for c in cards.values()) == 1
    assert "rolled" in cards["step-3"] and "Rolled back" in text
    # the score plot: one point per scored step, the best one linked
    assert len(page.all("svg")) == 1 and len(page.all("circle")) == 3
    for needle in ("prompt_refinement", "prompt-side issues dominate", "guidance 9.0 -&gt; 4.0", "tool_s", "1200"):
        assert needle in html, needle
    assert "threshold reached" in text and "regenerated after the rewrite" in text
    assert re.search(r"object.*0\.80.*cat.*three", text, re.S)


def test_each_step_card_says_why_the_step_exists(tmp_path: Path) -> None:
    """Steps the agent did not choose as a repair (first image, candidates, feedback, by hand) say so on their card."""
    store = SessionStore.create(tmp_path, "a fox", {})
    steps = [
        ("initial", "generate", {"image": picture(10)}),
        ("candidate", "generate", {"image": picture(40)}),
        ("feedback", "feedback", {}),
        ("tool", "canny_edit", {"image": picture(80)}),
        ("follow_up", "generate", {"image": picture(90)}),
        ("direct", "make_mask", {"mask": picture(100).convert("L")}),
        ("upload", "upload", {"image": picture(120)}),
    ]
    for kind, tool, images in steps:
        store.commit_step(
            StepRecord(kind=kind, tool=tool, feedback="darker <b>" if tool == "feedback" else None), images
        )
    html = render_report(store)
    cards = re.findall(r'<article class="[^"]*" id="step-(\d+)">(.*?)</article>', html, re.S)
    labels = {int(n): re.findall(r'<span class="kind">([^<]*)</span>', body) for n, body in cards}
    assert labels == {
        1: ["first image"],
        2: ["further candidate"],
        3: ["your feedback"],
        4: [],  # the agent's own repair needs no label
        5: ["follows the rewritten prompt"],
        6: ["tool run by hand"],
        7: ["your picture"],
    }
    assert "darker &lt;b&gt;" in html
    store.close()


def test_report_of_an_empty_session(tmp_path: Path) -> None:
    store = SessionStore.create(tmp_path, "nothing yet", {})
    html = render_report(store)
    assert "No steps yet" in html and "<article" not in html
    store.close()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


IMAGES_HOOK = """<script>addEventListener("load", () => {
  const bad = [...document.images].filter((i) => !(i.complete && i.naturalWidth > 0)).map((i) => i.src);
  document.body.dataset.images = document.images.length + ":" + (bad.length ? "broken " + bad.join(" ") : "ok");
});</script>"""


def _run_chromium(binary: str, tmp: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        *extra,
        url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_report_in_a_headless_browser(session: SessionStore, tmp_path: Path) -> None:
    binary = _chromium()
    if binary is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium) for the headless-browser check")
    report = write_report(session)
    shot = tmp_path / "report.png"
    run = _run_chromium(binary, tmp_path, report.as_uri(), "--window-size=1280,4000", f"--screenshot={shot}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.is_file() and Image.open(shot).size == (1280, 4000)
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # the page itself runs no script and logs nothing

    # Test hook only: a copy of the page beside it with a script that records whether every image loaded.
    probe = session.dir / "report-probe.html"
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", IMAGES_HOOK + "</body>"), encoding="utf-8")
    run = _run_chromium(binary, tmp_path, probe.as_uri(), "--dump-dom")
    assert run.returncode == 0, run.stderr[-2000:]
    body = next(a for t, a in _parse_text(run.stdout).tags if t == "body")
    expected = len(parse(report).all("img"))
    assert expected >= sum(len(s.artifacts) for s in session.steps()) + 1  # every artifact, plus the best on top
    assert body.get("data-images") == f"{expected}:ok"
    assert [line for line in run.stderr.splitlines() if ":CONSOLE" in line] == []
    probe.unlink()


def _parse_text(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def test_report_reads_as_sentences_with_the_numbers_folded(session: SessionStore) -> None:
    page = _parse_text(render_report(session))
    text = " ".join(page.text)
    assert "Step 4 rewrote the prompt, because the judge's issues were about what the prompt asked for." in text
    assert "Step 3 repainted one region of the image" in text and "so it was rolled back" in text
    assert "Ruled out repainted one region of the image: inpaint already failed on <cat>." in text
    assert len(page.all("details")) == len(page.all("article")) == 6  # every card folds its arguments and JSON
    assert "threshold" in text and "rolled back" in text and "best" in text  # the chart's legend
    assert len(page.all("svg")) == 1  # the legend is drawn with CSS, the chart is the one SVG


PHONE = {"width": 390, "height": 844}


def test_report_fits_a_phone_without_sideways_scroll(session: SessionStore, tmp_path: Path) -> None:
    """Playwright drives Debian's Chromium at 390x844: no horizontal overflow, folds closed, the legend shown."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium")
    report = write_report(session)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=flags)
        page = browser.new_page(viewport=PHONE)
        page.goto(report.as_uri())
        widths = page.evaluate("[document.documentElement.scrollWidth, document.body.scrollWidth, innerWidth]")
        assert widths[0] <= PHONE["width"] and widths[1] <= PHONE["width"], widths
        assert page.locator(".legend").is_visible() and page.locator("svg[role=img]").bounding_box()["width"] <= 390
        assert not page.locator("article pre").first.is_visible()  # the raw JSON waits behind its fold
        page.locator("article summary").first.click()
        assert page.locator("article pre").first.is_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # opened, still no sideways
        height = page.evaluate("document.documentElement.scrollHeight")
        page.locator("article summary").first.click()
        shot = tmp_path / "report-phone.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert Image.open(shot).size[0] == PHONE["width"]
    print(f"report height at 390 px: {height} px for {len(session.steps())} steps")
    if target := os.environ.get("EMAGE_REPORT_SCREENSHOT"):
        shutil.copyfile(shot, target)
