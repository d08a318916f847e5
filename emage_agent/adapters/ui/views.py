"""What the page shows, as plain data: gallery items, a step's image with its issue boxes, its decision.

No Gradio here: the app hands these values to its components, and tests read them directly.
"""

from __future__ import annotations

import html
import re
from typing import Any

from emage_agent.core.decisions import Decision
from emage_agent.session import IMAGE_TOOLS, SessionStore, StepRecord

GalleryItem = tuple[str, str]  # (image path, caption)
_LINKISH = re.compile(r":/|www\.|@", re.IGNORECASE)  # what Markdown renderers auto-link: schemes, www., e-mail


def _score(value: float | None) -> str:
    return "unscored" if value is None else f"{value:.2f}"


def image_steps(store: SessionStore) -> list[StepRecord]:
    """The steps that made an image, in order: the timeline the Steps gallery shows."""
    return [s for s in store.steps() if s.tool in IMAGE_TOOLS and s.error is None and store.image_of(s.step or 0)]


def gallery(store: SessionStore) -> tuple[list[GalleryItem], list[int]]:
    """Gallery items with the score under each image and the best and current marked; their step numbers."""
    best, head = store.best(), store.head()
    current = store.current_image(head.step) if head and head.step else None
    items, numbers = [], []
    for rec in image_steps(store):
        art = store.image_of(rec.step or 0)
        assert art is not None
        marks = []
        if best is not None and rec.step == best.step:
            marks.append("★ best")
        if current is not None and current.step == rec.step:
            marks.append("current")
        if rec.rolled_back:
            marks.append("rolled back")
        caption = f"step {rec.step} · {_score(rec.score)}" + (f" · {' · '.join(marks)}" if marks else "")
        items.append((str(store.dir / art.path), caption))
        numbers.append(int(rec.step or 0))
    return items, numbers


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
    """The step in words (Markdown): score, judge's summary, issues, decision with reasons, vetoes, clamps, timings."""
    lines = [f"### Step {rec.step}: {rec.tool} · score {_score(rec.score)}"]
    ev = rec.evaluation
    if ev is not None:
        if ev.summary:
            lines.append(f"**Judge:** {_md(ev.summary)}")
        if ev.issues:
            lines.append("**Issues**")
            for n, issue in enumerate(ev.issues, start=1):
                where = f" ({_md(issue.target)})" if issue.target else ""
                box = " [box]" if issue.box else ""
                lines.append(f"{n}. [{issue.category} {issue.severity:.1f}] {_md(issue.description)}{where}{box}")
        else:
            lines.append("**Issues:** none found")
    decision = rec.decision or Decision()
    if decision.request:
        lines.append(f"**Your request:** {_md('; '.join(decision.request))}")
    if decision.strategy:
        reason = f": {_md(decision.reason)}" if decision.reason else ""
        lines.append(f"**Decision:** {decision.strategy}{reason}")
    for choice in decision.ranked[:4]:
        lines.append(f"- {choice.tool} (weight {choice.weight}): {_md(choice.reason)}")
    for veto in rec.vetoes:
        lines.append(f"- vetoed {veto.tool}: {_md(veto.reason)}")
    for clamp in rec.clamps:
        lines.append(f"- clamped: {_md(str(clamp))}")
    if rec.note:
        lines.append(f"**Note:** {_md(rec.note)}")
    if rec.timings:
        lines.append("**Timings:** " + ", ".join(f"{k} {v:.2f}s" for k, v in rec.timings.items()))
    if rec.rolled_back:
        lines.append("*Rolled back: it scored lower than the image before it.*")
    return "\n\n".join(lines)


def feedback_lines(store: SessionStore) -> str:
    said = [f"- step {s.step}: {_md(s.feedback or '')}" for s in store.steps() if s.tool == "feedback"]
    return "**You said**\n\n" + "\n".join(said) if said else ""


def session_caption(row: dict[str, Any]) -> str:
    score = _score(row["score"])
    why = f" ({row['stopped_because']})" if row.get("stopped_because") else ""
    return f"{row['prompt'][:60]} · {score} · {row['status']}{why} · {row['date'][:16].replace('T', ' ')} · {row['id']}"


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
