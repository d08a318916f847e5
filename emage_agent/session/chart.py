"""The score over steps as inline SVG with its legend: drawn by report.html and the web UI alike.

Plain strings, no scripts: the best step gold, rolled-back steps hollow red, the threshold dashed.
Every piece of text in it is HTML-escaped.
"""

from __future__ import annotations

import html
from typing import Any

from emage_agent.session.records import StepRecord


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def score_plot(steps: list[StepRecord], best: int | None, threshold: float | None = None) -> str:
    """Score over steps as inline SVG; the best step gold, rolled-back steps hollow red."""
    w, h, left, right, top, bottom = 720, 210, 40, 16, 14, 30
    nums = [s.step or 0 for s in steps]
    if not nums:
        return '<p class="sub">No steps yet.</p>'
    lo, hi = min(nums), max(nums)

    def x(n: int) -> float:
        return left + (w - left - right) * ((n - lo) / (hi - lo) if hi > lo else 0.5)

    def y(v: float) -> float:
        return top + (h - top - bottom) * (1 - v)

    parts = [f'<svg viewBox="0 0 {w} {h}" width="100%" role="img" aria-label="Satisfaction score per step">']
    for v in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<line x1="{left}" x2="{w - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#8884" />')
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    if threshold is not None:
        parts.append(
            f'<line x1="{left}" x2="{w - right}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
            f'stroke="#2b8a3e" stroke-dasharray="5 4"><title>threshold {threshold:g}</title></line>'
        )
    every = max(1, len(nums) // 20)
    for i, n in enumerate(nums):
        if i % every == 0 or n == hi:
            parts.append(f'<text x="{x(n):.1f}" y="{h - 10}" text-anchor="middle">{n}</text>')
    scored = [s for s in steps if s.score is not None]
    if len(scored) > 1:
        pts = " ".join(f"{x(s.step or 0):.1f},{y(s.score or 0):.1f}" for s in scored)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="#3b5bdb" stroke-width="2" />')
    for s in scored:
        cx, cy, tip = x(s.step or 0), y(s.score or 0), f"step {s.step} · {s.tool or s.kind} · {s.score:.2f}"
        if s.step == best:
            style = 'r="8" fill="#f0b400" stroke="#8a6500" stroke-width="2"'
        elif s.rolled_back:
            style = 'r="5" fill="#fff" stroke="#c92a2a" stroke-width="2"'
        else:
            style = 'r="5" fill="#3b5bdb"'
        parts.append(f'<a href="#step-{s.step}"><circle cx="{cx:.1f}" cy="{cy:.1f}" {style}><title>{_e(tip)}</title>')
        parts.append("</circle></a>")
    parts.append("</svg>")
    return "".join(parts)


_DOT = "display:inline-block;width:12px;height:12px;border-radius:50%;"
CHART_LEGEND = (  # inline styles: the UI shows the same legend without the report's CSS
    '<div class="legend" aria-label="Chart legend" style="display:flex;flex-wrap:wrap;gap:4px 16px;font-size:12px">'
    f'<span><i style="{_DOT}background:#3b5bdb"></i> score of a step</span>'
    '<span><i style="display:inline-block;width:22px;border-top:2px dashed #2b8a3e;vertical-align:middle"></i>'
    " threshold</span>"
    f'<span><i style="{_DOT}background:#fff;border:2px solid #c92a2a"></i> rolled back</span>'
    f'<span><i style="{_DOT}background:#f0b400;border:2px solid #8a6500"></i> best</span></div>'
)
