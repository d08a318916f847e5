"""A step in plain words: what ran and why, in a sentence, for people (the UI and report.html).

The weights, margins and side-by-side numbers stay in the stored decision; displays put them behind
a "details" fold. Returns plain text: every display escapes it where it lands.
"""

from __future__ import annotations

from typing import Any

from emage_agent.core.decisions import Decision
from emage_agent.core.tools import get_tool, is_tool
from emage_agent.session.records import StepRecord

STEP_WORDS = {"upload": "took the picture you gave", "feedback": "noted your words"}  # steps that are no tool


def did(tool: str) -> str:
    """What a step's tool did, in words (the registry's ``did``), for any step kind."""
    return get_tool(tool).did if is_tool(tool) else STEP_WORDS.get(tool, f"ran {tool}")


WHY = {
    "initial": "it is the session's first image",
    "upload": "the session starts from it",
    "prompt_refinement": "the judge's issues were about what the prompt asked for",
    "image_modification": "the judge's issues were in the picture itself",
    "hybrid": "the issues were as much in the prompt as in the picture",
    "direct": "it was asked for directly",
    "stop": "the score reached the threshold",
}
ARG_WORDS = {"prompt": "prompt", "strength": "strength", "guidance": "guidance", "steps": "denoising steps"}


def _clip(text: Any, limit: int = 160) -> str:
    value = " ".join(str(text).split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


def what_ran(rec: StepRecord) -> str:
    """One sentence: what the step did and why (``Step 3 edited the image by instruction, because ...``)."""
    tool = rec.tool or rec.kind
    done = did(tool)
    decision = rec.decision or Decision()
    why = WHY.get(decision.strategy or "", "")
    if decision.request:
        why = "you asked: " + "; ".join(_clip(r, 80) for r in decision.request)
    elif not why and decision.strategy:
        why = f"the planner chose it ({_clip(decision.strategy, 40)})"
    sentence = f"Step {rec.step} {done}" + (f", because {why}" if why else "") + "."
    if rec.error:
        sentence += f" It failed: {_clip(rec.error)}"
    if rec.rolled_back:
        sentence += " It scored lower than the image before it, so it was rolled back."
    return sentence


def arguments(tool: str | None, args: dict[str, Any]) -> str:
    """The arguments a person cares about, as a phrase (``prompt "a red fox", strength 0.60``); '' when none."""
    parts = []
    for key, label in ARG_WORDS.items():
        value = args.get(key)
        if value is None:
            continue
        shown = (
            f"“{_clip(value, 120)}”"
            if isinstance(value, str)
            else f"{value:.2f}"
            if isinstance(value, float)
            else value
        )
        parts.append(f"{label} {shown}")
    if args.get("width") and args.get("height"):  # the image-making calls and an upload carry a size
        parts.append(f"size {args['width']}×{args['height']}")
    if args.get("seed") is not None:
        parts.append(f"seed {args['seed']}")
    if args.get("target"):
        parts.append(f"target “{_clip(args['target'], 60)}”")
    return ", ".join(parts)


def alternatives(rec: StepRecord, limit: int = 3) -> list[str]:
    """The other tools considered and the ones ruled out, one sentence each."""
    lines = []
    ranked = (rec.decision or Decision()).ranked
    for choice in ranked[1 : 1 + limit]:
        lines.append(f"Also considered: {did(choice.tool)} ({_clip(choice.reason, 100)}).")
    for veto in rec.vetoes:
        lines.append(f"Ruled out {did(veto.tool)}: {_clip(veto.reason, 140)}.")
    return lines
