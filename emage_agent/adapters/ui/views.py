"""What the page shows, as plain data: gallery items, a step's image with its issue boxes, its decision.

No Gradio here: the app hands these values to its components, and tests read them directly.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from emage_agent.core.decisions import Decision
from emage_agent.core.tools import first_image_tool
from emage_agent.session import IMAGE_TOOLS, SessionStore, StepRecord, words
from emage_agent.session.chart import CHART_LEGEND, score_plot

GalleryItem = tuple[str, str]  # (image path, caption)
_LINKISH = re.compile(r":/|www\.|@", re.IGNORECASE)  # what Markdown renderers auto-link: schemes, www., e-mail


def _score(value: float | None) -> str:
    return "unscored" if value is None else f"{value:.2f}"


def image_steps(store: SessionStore) -> list[StepRecord]:
    """The steps that made an image, in order: the timeline the Steps gallery shows."""
    return [s for s in store.steps() if s.tool in IMAGE_TOOLS and s.error is None and store.image_of(s.step or 0)]


def gallery(store: SessionStore) -> tuple[list[GalleryItem], list[int]]:
    """Gallery items newest first, the score leading each caption (readable on a phone); their step numbers."""
    best, head = store.best(), store.head()
    current = store.current_image(head.step) if head and head.step else None
    items, numbers = [], []
    for rec in reversed(image_steps(store)):
        art = store.image_of(rec.step or 0)
        assert art is not None
        marks = []
        if best is not None and rec.step == best.step:
            marks.append("★ best")
        if current is not None and current.step == rec.step:
            marks.append("current")
        if rec.rolled_back:
            marks.append("rolled back")
        caption = f"{_score(rec.score)} · #{rec.step}" + (f" · {' · '.join(marks)}" if marks else "")
        items.append((str(store.dir / art.path), caption))
        numbers.append(int(rec.step or 0))
    return items, numbers


def chart(store: SessionStore) -> str:
    """The score over steps (the report's own chart and legend), for a ``gr.HTML``."""
    steps = [s for s in store.steps() if s.score is not None]
    if not steps:
        return '<p class="emage-empty">The score chart appears after the first judgement.</p>'
    threshold = store.info.options.get("threshold")
    threshold = float(threshold) if isinstance(threshold, int | float) else None
    return f'<div id="emage-chart">{score_plot(steps, store.info.best_step, threshold)}{CHART_LEGEND}</div>'


def current_image(store: SessionStore) -> str | None:
    head = store.head()
    art = store.current_image(head.step) if head and head.step else None
    return str(store.dir / art.path) if art else None


def seed_of(store: SessionStore) -> int | None:
    """The seed the session's first image was made with (chosen by the executor when none was given)."""
    first = next((s for s in store.steps() if s.tool == first_image_tool() and s.error is None), None)
    seed = first.args.get("seed") if first else None
    return int(seed) if isinstance(seed, int) else None


def boxes(store: SessionStore, rec: StepRecord) -> tuple[str, list[tuple[tuple[int, int, int, int], str]]] | None:
    """The step's image and its issues' boxes in pixels, ``(x1, y1, x2, y2)``, labelled by the issue."""
    art = store.image_of(rec.step or 0)
    if art is None:
        return None
    out = []
    for n, issue in enumerate(rec.evaluation.issues if rec.evaluation else [], start=1):
        if issue.box:
            ymin, xmin, ymax, xmax = issue.box
            box = (
                round(xmin * art.width / 1000),
                round(ymin * art.height / 1000),
                round(xmax * art.width / 1000),
                round(ymax * art.height / 1000),
            )
            out.append((box, f"{n}. {issue.target or issue.category}"))
    return str(store.dir / art.path), out


def details(store: SessionStore, rec: StepRecord) -> str:
    """The step for people (Markdown): score, what ran and why in a sentence, the issues; numbers folded away."""
    lines = [f"### Step {rec.step} · score {_score(rec.score)}", _md(words.what_ran(rec))]
    said = words.arguments(rec.tool, rec.args)
    if said:
        lines.append(f"*With* {_md(said)}")
    decision = rec.decision or Decision()
    if decision.request:
        lines.append(f"**Your request:** {_md('; '.join(decision.request))}")
    ev = rec.evaluation
    if ev is not None:
        if ev.summary:
            lines.append(f"**Judge:** {_md(ev.summary)}")
        if ev.issues:
            lines.append("**Issues**")
            for n, issue in enumerate(ev.issues, start=1):
                where = f" ({_md(issue.target)})" if issue.target else ""
                box = " [box]" if issue.box else ""
                lines.append(f"{n}. {_md(issue.description)}{where}{box}")
        else:
            lines.append("**Issues:** none found")
    lines.extend(_md(line) for line in words.alternatives(rec))
    if rec.note:
        lines.append(f"**Note:** {_md(rec.note)}")
    lines.append(_folded(rec))
    return "\n\n".join(lines)


def _folded(rec: StepRecord) -> str:
    """Weights, margins, severities, timings and the raw decision, behind a "Details" fold (escaped HTML)."""
    rows = []
    decision = rec.decision or Decision()
    if decision.prompt_side is not None or decision.image_side is not None:
        rows.append(f"issue weight on the prompt side {decision.prompt_side}, on the image side {decision.image_side}")
    if decision.reason:
        rows.append(f"selector: {decision.reason}")
    for choice in decision.ranked[:4]:
        rows.append(f"{choice.tool} weight {choice.weight}: {choice.reason}")
    for issue in rec.evaluation.issues if rec.evaluation else []:
        rows.append(f"issue {issue.category}, severity {issue.severity:.2f}: {issue.description}")
    for clamp in rec.clamps:
        rows.append(f"clamped: {clamp}")
    if rec.timings:
        rows.append("took " + ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in rec.timings.items()))
    raw = json.dumps({"tool": rec.tool, "args": rec.args, "decision": decision.stored()}, indent=1, default=str)[:4000]
    items = "".join(f"<li>{html.escape(row[:300])}</li>" for row in rows)
    return f"<details><summary>Details</summary><ul>{items}</ul><pre>{html.escape(raw)}</pre></details>"


def feedback_lines(store: SessionStore) -> str:
    said = [f"- step {s.step}: {_md(s.feedback or '')}" for s in store.steps() if s.tool == "feedback"]
    return "**You said**\n\n" + "\n".join(said) if said else ""


def session_caption(row: dict[str, Any]) -> str:
    """Score and status first (they fit on a phone), then the date and the prompt."""
    score = _score(row["score"])
    why = f" ({row['stopped_because']})" if row.get("stopped_because") else ""
    prompt = row["prompt"] if len(row["prompt"]) <= 80 else row["prompt"][:79] + "…"
    return f"{score} · {row['status']}{why} · {row['date'][:16].replace('T', ' ')} · {prompt}"


def _md(text: str) -> str:
    """Text from the judge or a person, shown as text: no HTML, no Markdown links or images, and no bare URL
    that the renderer would turn into a live link (a zero-width space breaks ``://`` and ``www.``)."""
    text = html.escape(text).replace("[", "\\[").replace("]", "\\]").replace("*", "\\*").replace("_", "\\_")
    return _LINKISH.sub(lambda m: m.group(0)[:-1] + "\u200b" + m.group(0)[-1], text)


MAX_SHOWN = 2000  # characters of one message the page shows


def plain(text: str | None) -> str:
    """Model or user text for a Markdown component (the status line): bounded, escaped, shown as text."""
    text = text or ""
    return _md(text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + " …")


def toast(text: str | None) -> str:
    """A message for a ``gr.Error`` toast, which Gradio renders as HTML: bounded and escaped."""
    text = " ".join((text or "").split())
    return html.escape(text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + " …")
