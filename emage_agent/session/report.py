"""A session as one self-contained HTML page: what was asked, what was tried, what it scored.

``write_report(store)`` writes ``<session>/report.html``. The page needs nothing but the
session directory: inline CSS and SVG, no scripts, no fonts or URLs from elsewhere, and
images referenced by relative paths (``images/step-003.png``), so the folder can be
zipped, mailed or served as is. Every piece of text is HTML-escaped: prompts, tool
arguments and model answers are all untrusted.
"""

from __future__ import annotations

import html
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from emage_agent.core.decisions import Decision
from emage_agent.session.chart import CHART_LEGEND, score_plot
from emage_agent.session.files import atomic_write_bytes
from emage_agent.session.records import Artifact, StepRecord
from emage_agent.session.store import SessionStore
from emage_agent.session.words import alternatives, arguments, what_ran

REPORT_NAME = "report.html"

# A ``--demo`` session: tiny random-weight models and a scripted judge; its images and scores mean nothing.
DEMO_BADGE = (
    ' <span class="badge b-st" title="tiny random-weight models and a scripted judge">DEMO</span>',
    '<p class="sub"><b>DEMO session</b>: the loop, the tools and the store are real; the models are tiny and '
    "random and the judge is scripted, so the images are noise and the scores are not judgements.</p>",
)
_CSS = """
:root{--bg:#f6f7f9;--card:#fff;--ink:#1d2330;--mute:#5d6677;--line:#e3e6ec;--accent:#3b5bdb;
--good:#2b8a3e;--warn:#e67700;--bad:#c92a2a;--gold:#f0b400;--code:#f1f3f6}
@media (prefers-color-scheme:dark){:root{--bg:#14171c;--card:#1c2028;--ink:#e6e9ef;--mute:#9aa3b2;
--line:#2c323d;--code:#232833;--accent:#7b96ff}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);line-height:1.5;font-size:15px;
font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 24px 64px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 12px}h3{font-size:16px;margin:0}
h4{font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:var(--mute);margin:14px 0 6px}
.sub{color:var(--mute);font-size:13px}.kind{font-weight:600}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:18px 20px;margin:0 0 18px;
box-shadow:0 1px 2px rgba(0,0,0,.04)}
.stats{display:flex;flex-wrap:wrap;gap:10px;margin:16px 0}
.stat{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:8px 14px;min-width:110px}
.stat b{display:block;font-size:20px}.stat span{color:var(--mute);font-size:12px}
.hero{display:grid;grid-template-columns:minmax(0,380px) 1fr;gap:22px;align-items:start}
.prompt{white-space:pre-wrap;word-break:break-word;background:var(--code);border-radius:8px;padding:8px 12px;
margin:4px 0}
ol.prompts{padding-left:0;list-style:none;margin:0}ol.prompts li{margin:0 0 10px}
.badge{display:inline-block;border-radius:999px;padding:1px 9px;font-size:12px;font-weight:600;margin-left:6px;
border:1px solid currentColor}
.b-best{color:#8a6500;background:#fff4cc}.b-rolled{color:var(--bad);background:#ffe9e9}
.b-error{color:#fff;background:var(--bad)}.b-head{color:var(--accent)}.b-st{color:var(--mute)}
.step{border-left:5px solid var(--line)}.step.best{border-left-color:var(--gold);box-shadow:0 0 0 2px var(--gold)}
.step.rolled{border-left-color:var(--bad)}.step.rolled .media{opacity:.55}
.step>header{display:flex;flex-wrap:wrap;align-items:center;gap:6px;margin-bottom:10px}
.tool{font-family:ui-monospace,Menlo,Consolas,monospace;background:var(--code);border-radius:6px;padding:1px 8px}
.score{margin-left:auto;font-size:22px;font-weight:700}
.s-good{color:var(--good)}.s-mid{color:var(--warn)}.s-bad{color:var(--bad)}
.grid{display:grid;grid-template-columns:minmax(0,240px) minmax(0,1fr);gap:18px}
.media{display:flex;flex-direction:column;gap:10px}
a{color:var(--accent)}
figure{margin:0}figure img{display:block;width:100%;height:auto;border-radius:8px;border:1px solid var(--line);
background:repeating-conic-gradient(#ddd 0 25%,#fff 0 50%) 50%/16px 16px}
figcaption{font-size:12px;color:var(--mute)}
.thumbs{display:flex;gap:10px}.thumbs figure{flex:1;min-width:0}
.frame{position:relative}figure.inherited{max-width:55%;opacity:.75}
.unscored{font-size:13px;font-weight:500;color:var(--mute)}
.box{position:absolute;border:2px solid var(--bad);border-radius:3px;
box-shadow:0 0 0 1px rgba(255,255,255,.7)}
.box span{position:absolute;top:-1px;left:-1px;background:var(--bad);color:#fff;font-size:10px;padding:0 4px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--mute);font-weight:600}
pre{background:var(--code);border-radius:8px;padding:8px 12px;margin:0;overflow:auto;font-size:12.5px;
white-space:pre-wrap;word-break:break-word}
pre.err{background:#ffe9e9;color:#7a1010}
.sev{display:inline-block;height:8px;border-radius:4px;background:var(--bad);vertical-align:middle;margin-right:6px}
.chips{display:flex;flex-wrap:wrap;gap:6px}
.chip{background:var(--code);border-radius:6px;padding:2px 8px;font-size:12px}
ul.plain{margin:0;padding-left:18px}
.veto{color:var(--bad)}
svg text{fill:var(--mute);font-size:11px}
body{overflow-wrap:anywhere}img,svg{max-width:100%}.tablewrap{overflow-x:auto;max-width:100%}
details{margin:10px 0 0}summary{cursor:pointer;color:var(--accent);font-size:13px}
p.did{margin:0 0 6px}.legend{display:flex;flex-wrap:wrap;gap:4px 16px;font-size:12px;color:var(--mute);margin:6px 0 0}
.legend span{display:inline-flex;align-items:center;gap:6px}
@media (max-width:820px){.grid,.hero{grid-template-columns:1fr}.grid .media{max-width:340px}}
@media (max-width:480px){main{padding:14px 10px 40px}.card{padding:12px}.stat{min-width:0;flex:1 1 40%}
.grid{grid-template-columns:110px minmax(0,1fr);gap:10px}.hero{gap:10px}
.tablewrap table{min-width:280px}td,th{overflow-wrap:normal;padding:4px 5px}
h1{font-size:21px}.score{font-size:18px}}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _src(art: Artifact) -> str:
    """A relative, URL-quoted path: the page works wherever the session folder goes."""
    return _e(quote(Path(art.path).as_posix()))


def _score_class(score: float | None) -> str:
    if score is None:
        return ""
    return "s-good" if score >= 0.8 else "s-mid" if score >= 0.5 else "s-bad"


def _fmt_score(score: float | None) -> str:
    return "not scored" if score is None else f"{score:.2f}"


def _json(value: Any) -> str:
    return _e(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True))


def _time(stamp: str | None) -> str:
    try:
        return datetime.fromisoformat(stamp or "").strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return _e(stamp)


def _figure(art: Artifact, caption: str, boxes: list[tuple[str, list[int]]] | None = None, cls: str = "") -> str:
    """An image linked to its full-size file; issue boxes (0..1000 coordinates) drawn over it."""
    marks = "".join(
        f'<div class="box" style="top:{b[0] / 10:.1f}%;left:{b[1] / 10:.1f}%;height:{(b[2] - b[0]) / 10:.1f}%;'
        f'width:{(b[3] - b[1]) / 10:.1f}%" title="{_e(label)}"><span>{_e(label)}</span></div>'
        for label, b in boxes or []
    )
    return (
        f'<figure class="{cls}"><a href="{_src(art)}"><div class="frame"><img src="{_src(art)}" alt="{_e(caption)}" '
        f'width="{art.width}" height="{art.height}">{marks}</div></a>'
        f"<figcaption>{_e(caption)} · {art.width}×{art.height} · {_e(art.path)}</figcaption></figure>"
    )


def _kv_chips(values: dict[str, Any], unit: str = "") -> str:
    if not values:
        return ""
    chips = "".join(f'<span class="chip">{_e(k)} <b>{_e(_scalar(v))}{unit}</b></span>' for k, v in values.items())
    return f'<div class="chips">{chips}</div>'


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else str(value)


def _issues(step: StepRecord) -> str:
    ev = step.evaluation
    if ev is None:
        return '<h4>Evaluation</h4><p class="sub">Not evaluated.</p>'
    out = ["<h4>Evaluation</h4>"]
    if ev.summary:
        out.append(f"<p>{_e(ev.summary)}</p>")
    evidence = _evidence(ev.evidence)
    if not ev.issues:
        out.append('<p class="sub">No issues found.</p>')
        return "".join(out) + evidence
    out.append(
        '<div class="tablewrap"><table><tr><th>Category</th><th>Severity</th><th>Target</th><th>Description</th></tr>'
    )
    for i, issue in enumerate(ev.issues, 1):
        bar = f'<span class="sev" style="width:{issue.severity * 40:.0f}px"></span>{issue.severity:.2f}'
        target = f"#{i} {issue.target or ''}" if issue.box else issue.target or ""
        out.append(
            f"<tr><td>{_e(issue.category)}</td><td>{bar}</td><td>{_e(target)}</td><td>{_e(issue.description)}</td></tr>"
        )
    out.append("</table></div>")
    return "".join(out) + evidence


def _evidence(items: list[dict[str, Any]]) -> str:
    """The detector's changes and boxes beside the judge's issues (boxes drawn as ``det`` on the image)."""
    if not items:
        return ""
    rows = "".join(
        f"<tr><td>{_e(i.get('kind', ''))}</td><td>{_e(i.get('object', ''))}</td><td>{_e(i.get('detail', ''))}</td>"
        f"<td>{_e(' '.join(str(b) for b in i.get('boxes', [])))}</td></tr>"
        for i in items
    )
    head = "<tr><th>Kind</th><th>Object</th><th>Detail</th><th>Boxes</th></tr>"
    return f'<h4>Detector</h4><div class="tablewrap"><table>{head}{rows}</table></div>'


def _decision(decision: Decision | None) -> str:
    """The selector's reasoning with its numbers, for the details fold."""
    if decision is None:
        return ""
    rest = {k: v for k, v in decision.stored().items() if k not in ("strategy", "reason")}
    head = f"<p><b>{_e(decision.strategy or '')}</b> {_e(decision.reason or '')}</p>"
    return f"<h4>Selector decision</h4>{head}" + (f"<pre>{_json(rest)}</pre>" if rest else "")


KIND_LABELS = {
    "initial": "first image",
    "upload": "your picture",
    "feedback": "your feedback",
    "direct": "tool run by hand",
    "candidate": "further candidate",
    "follow_up": "follows the rewritten prompt",
}  # every step kind but the agent's own repairs ("tool"), as the step card names it


def _step_card(store: SessionStore, s: StepRecord, best: int | None, head: int | None, calls: list[dict]) -> str:
    classes = ["card", "step"] + ["best"] * (s.step == best) + ["rolled"] * s.rolled_back
    badges = (
        ('<span class="badge b-best">★ Best</span>' if s.step == best else "")
        + ('<span class="badge b-head">Head</span>' if s.step == head else "")
        + ('<span class="badge b-rolled">↩ Rolled back</span>' if s.rolled_back else "")
        + ('<span class="badge b-error">Error</span>' if s.error else "")
    )
    arts = {a.role: a for a in s.artifacts}
    boxes = [(f"#{i}", iss.box) for i, iss in enumerate(s.evaluation.issues if s.evaluation else [], 1) if iss.box]
    found = [e for e in (s.evaluation.evidence if s.evaluation else []) if e.get("kind") == "detections"]
    boxes += [(f"det {e.get('object', '')}", b) for e in found for b in e.get("boxes", []) if len(b) == 4]
    media = []
    if "image" in arts:
        media.append(_figure(arts["image"], f"Step {s.step} image", boxes))
    elif s.parent and (inherited := store.current_image(s.parent)):
        media.append(_figure(inherited, f"Image in force (step {inherited.step})", cls="inherited"))
    thumbs = [_figure(arts[r], f"{r.title()}") for r in ("mask", "control") if r in arts]
    if thumbs:
        media.append(f'<div class="thumbs">{"".join(thumbs)}</div>')
    parent = f'parent <a href="#step-{s.parent}">step {s.parent}</a>' if s.parent else "first step"
    kind = f'<span class="kind">{_e(KIND_LABELS.get(s.kind, s.kind))}</span> · ' if s.kind != "tool" else ""
    said = arguments(s.tool, s.args)
    body = [f'<p class="did">{_e(what_ran(s))}</p>']
    if said:
        body.append(f'<p class="sub">With {_e(said)}.</p>')
    body.extend(f'<p class="sub">{_e(line)}</p>' for line in alternatives(s))
    if s.feedback:
        body.append(f'<h4>Your feedback</h4><div class="prompt">{_e(s.feedback)}</div>')
    body.append(_issues(s))
    if s.note:
        body.append(f"<h4>Note</h4><p>{_e(s.note)}</p>")
    if s.error:
        body.append(f'<h4>Error</h4><pre class="err">{_e(s.error)}</pre>')
    fold = [f'<p class="sub">{kind}{parent} · {_time(s.created_at)}</p>']
    fold.append(f"<h4>Tool · {_e(s.tool or 'none')}</h4><pre>{_json(s.args)}</pre>")
    if s.clamps:
        items = "".join(f"<li>{_e(str(c))}</li>" for c in s.clamps)
        fold.append(f'<h4>Clamped arguments</h4><ul class="plain">{items}</ul>')
    if s.vetoes:
        items = "".join(f'<li class="veto"><b>{_e(v.tool)}</b>: {_e(v.reason)}</li>' for v in s.vetoes)
        fold.append(f'<h4>Vetoed</h4><ul class="plain">{items}</ul>')
    fold.append(_decision(s.decision))
    if s.timings:
        fold.append("<h4>Timings</h4>" + _kv_chips(s.timings, " s"))
    if s.tokens:
        fold.append("<h4>Tokens</h4>" + _kv_chips(s.tokens))
    if calls:
        rows = "".join(
            f"<tr><td>{_e(c['purpose'])}</td><td>{_e(c['extra'].get('backend') or '')}</td>"
            f"<td>{_e(c['model'])}</td><td>{_e(_fmt_latency(c['latency_s']))}</td>"
            f"<td>{_e(_tokens(c))}</td>"
            f"<td>{'ok' if c['ok'] else _e(c['error'] or 'failed')}</td></tr>"
            for c in calls
        )
        fold.append(
            '<h4>VLM calls</h4><div class="tablewrap"><table><tr><th>Purpose</th><th>Backend</th><th>Model</th>'
            f"<th>Latency</th><th>Tokens</th><th>Result</th></tr>{rows}</table></div>"
        )
    body.append(
        f"<details><summary>Details: arguments, decision, timings, VLM calls</summary>{''.join(fold)}</details>"
    )
    return (
        f'<article class="{" ".join(classes)}" id="step-{s.step}"><header><h3>Step {s.step}</h3>'
        f'<span class="tool">{_e(s.tool or s.kind)}</span>{badges}'
        f'<span class="score {_score_class(s.score) or "unscored"}">{_fmt_score(s.score)}</span></header>'
        f'<div class="grid"><div class="media">{"".join(media)}</div><div>{"".join(body)}</div></div></article>'
    )


def _tokens(call: dict[str, Any]) -> str:
    parts = [(k, call.get(f"{k}_tokens")) for k in ("input", "output", "total")]
    return " · ".join(f"{k} {v}" for k, v in parts if v is not None)


def _fmt_latency(value: float | None) -> str:
    return "" if value is None else f"{value:.2f} s"


def _prompts(info: Any, steps: list[StepRecord]) -> str:
    """The original prompt, then each rewrite in the order it came into force."""
    items = [f'<li><span class="sub">original</span><div class="prompt">{_e(info.original_prompt)}</div></li>']
    last = info.original_prompt
    for s in steps:
        if s.prompt is not None and s.prompt != last:
            items.append(
                f'<li><span class="sub">from <a href="#step-{s.step}">step {s.step}</a> ({_e(s.tool or s.kind)})</span>'
                f'<div class="prompt">{_e(s.prompt)}</div></li>'
            )
            last = s.prompt
    if info.current_prompt != last:
        items.append(f'<li><span class="sub">current</span><div class="prompt">{_e(info.current_prompt)}</div></li>')
    return f'<ol class="prompts">{"".join(items)}</ol>'


def render_report(store: SessionStore) -> str:
    """The report page as a string (``write_report`` saves it)."""
    info, steps = store.info, store.steps()
    best = next((s for s in steps if s.step == info.best_step), None)
    calls = store.calls()
    threshold = info.options.get("threshold")
    threshold = float(threshold) if isinstance(threshold, int | float) else None
    stats = [
        ("status", info.status),
        ("best score", _fmt_score(best.score if best else None)),
        ("best step", best.step if best else "–"),
        ("steps", len(steps)),
        ("tool runs", sum(1 for s in steps if s.tool)),
        ("VLM calls", info.vlm_calls or len(calls)),
        *((f"{purpose} by", f"{u['backend'] or '?'} · {u['model']}") for purpose, u in store.vlm_used().items()),
        ("GPU seconds", f"{info.gpu_seconds:.1f}"),
    ]
    stat_html = "".join(f'<div class="stat"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for k, v in stats)
    hero = '<p class="sub">No scored image yet.</p>'
    final = store.current_image(best.step) if best and best.step else None
    if best and final:
        hero = (
            f'<div class="hero">{_figure(final, f"Best image (step {final.step})")}<div>'
            f'<h3>Best: <a href="#step-{best.step}">step {best.step}</a> · '
            f'<span class="{_score_class(best.score)}">{_fmt_score(best.score)}</span></h3>'
            f'<h4>Prompt</h4><div class="prompt">{_e(best.prompt)}</div>'
            + (f"<h4>Judgement</h4><p>{_e(best.evaluation.summary)}</p>" if best.evaluation else "")
            + "</div></div>"
        )
    stopped = f" · stopped because: {_e(info.stopped_because)}" if info.stopped_because else ""
    demo = DEMO_BADGE if info.options.get("demo") else ("", "")
    cards = "".join(
        _step_card(store, s, info.best_step, info.head_step, [c for c in calls if c["step"] == s.step]) for s in steps
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>EMage · {_e(info.original_prompt[:60])}</title><style>{_CSS}</style></head><body><main>"
        f'<h1>EMage session{demo[0]}</h1><p class="sub">{_e(info.id)} · started {_time(info.created_at)} · '
        f'updated {_time(info.updated_at)} <span class="badge b-st">{_e(info.status)}</span>{stopped}</p>'
        f'{demo[1]}<div class="stats">{stat_html}</div>'
        f'<section class="card">{hero}</section>'
        f'<h2>Prompt</h2><section class="card">{_prompts(info, steps)}</section>'
        f'<h2>Score over steps</h2><section class="card">{score_plot(steps, info.best_step, threshold)}'
        f"{CHART_LEGEND}</section>"
        f'<h2>Options</h2><section class="card">{_kv_chips(info.options)}</section>'
        f"<h2>Steps</h2>{cards or '<p class=sub>No steps yet.</p>'}"
        "</main></body></html>\n"
    )


def write_report(store: SessionStore) -> Path:
    """Write ``<session>/report.html`` atomically and return its path."""
    path = store.dir / REPORT_NAME
    atomic_write_bytes(path, render_report(store).encode("utf-8"))
    return path
