"""What the planner role asks and accepts: the decision request as text, and checking the calls that come back.

Pure functions over the planning models, used by ``vlm.planner`` whichever transport carries the turn.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from emage_agent.core.errors import InvalidArgument
from emage_agent.core.planning import PlanError, PlanningContext, PlanResult, ToolCall
from emage_agent.core.resources import load_prompt
from emage_agent.core.tools import load_contracts, validate_arguments


@dataclass
class Pending:
    """A tool call of the model's last turn still owed a result."""

    name: str
    call_id: str | None
    args: dict[str, Any]
    error: str | None = None


def allowed_tools(ctx: PlanningContext) -> list[str]:
    """The tools this turn may call: the context's, else the selector's ranking, else all; known ones only."""
    known = load_contracts()
    names = ctx.allowed_tools or ctx.recommendation.allowed_tools or sorted(known)
    allowed = [n for n in dict.fromkeys(names) if n in known]
    return allowed or sorted(known)


def read_calls(calls: list[Pending], allowed: list[str], max_calls: int, text: str = "") -> PlanResult:
    """The model's calls checked against the contracts; each rejected call gets its ``error`` for the model.

    A call of a known tool outside ``allowed`` is refused too (backends whose API cannot narrow the
    choice rely on this check).
    """
    result = PlanResult(text=text)
    known = load_contracts()
    dropped: list[str] = []
    for pending in calls:
        if pending.error:  # the backend could not even read the call (arguments that are not JSON)
            result.errors.append(PlanError(kind="invalid_arguments", message=pending.error, tool=pending.name))
            continue
        if pending.name not in known:
            pending.error = f"unknown tool {pending.name!r}; the tools are {', '.join(sorted(known))}"
            result.errors.append(PlanError(kind="unknown_tool", message=pending.error, tool=pending.name))
            continue
        if pending.name not in allowed:
            pending.error = f"{pending.name} is not allowed in this step; call one of: {', '.join(allowed)}"
            result.errors.append(PlanError(kind="unknown_tool", message=pending.error, tool=pending.name))
            continue
        try:
            validate_arguments(pending.name, pending.args)
        except InvalidArgument as exc:
            pending.error = f"invalid arguments for {pending.name}: {exc}"
            result.errors.append(PlanError(kind="invalid_arguments", message=pending.error, tool=pending.name))
            continue
        if len(result.calls) >= max_calls:
            pending.error = f"not executed: at most {max_calls} call(s) per step"
            dropped.append(pending.name)
            continue
        # The model's own arguments, checked but without defaults: later stages fill what it left out.
        result.calls.append(ToolCall(name=pending.name, args=dict(pending.args), call_id=pending.call_id))
    if dropped:
        message = f"at most {max_calls} call(s) per step; dropped {', '.join(dropped)}"
        result.errors.append(PlanError(kind="too_many_calls", message=message))
    if not calls:
        message = "no function call in the answer; call one of: " + ", ".join(allowed)
        result.errors.append(PlanError(kind="no_call", message=message))
    return result


def match_reports(pending: list[Pending], reports: list[Any]) -> tuple[list[tuple[Pending, Any]], list[Any]]:
    """Each owed call paired with its report (by id, then by name), and the reports no call asked for."""
    remaining = list(reports)
    pairs: list[tuple[Pending, Any]] = []
    for p in pending:
        report = next((r for r in remaining if p.call_id and r.call.call_id == p.call_id), None)
        report = report or next((r for r in remaining if r.call.name == p.name and not r.call.call_id), None)
        report = report or next((r for r in remaining if r.call.name == p.name), None)
        if report is not None:
            remaining.remove(report)
        pairs.append((p, report))
    return pairs, remaining


def digest(png: bytes) -> str:
    """An image's identity, so a planner can tell whether the model has already seen it."""
    return hashlib.sha256(png).hexdigest()


def image_note(current: str | None, returned: list[str], seen: str | None) -> tuple[bool, str]:
    """Whether the turn must attach the current image, and what the turn text says about it.

    ``current`` is the current image's digest, ``returned`` those of the images sent back with tool
    results in this turn, ``seen`` the newest one the model was shown before. An image the model has
    already seen is not sent again (images are the most expensive part of a planner chat).
    """
    if current and current in returned:
        return False, "the current image is the one returned above"
    if current and current == seen and not returned:
        return False, "the current image is unchanged since your last proposal"
    if current:
        return True, "the current image is attached above"
    return False, "no image is available"


def render_turn(ctx: PlanningContext, feedback: str | None, allowed: list[str], image_note: str) -> str:
    """The decision request as text (the numbers the model needs, nothing more)."""
    ev = ctx.evaluation
    issues = "\n".join(
        f"- [{i.category}, severity {i.severity:.2f}] {i.description}"
        + (f" (target: {i.target})" if i.target else "")
        + (f" (box {i.box})" if i.box else "")
        for i in sorted(ev.issues, key=lambda i: -i.severity)
    )
    history = "\n".join(
        f"- step {h.step}: {h.tool} {_compact(h.args)}"
        + (f" on {h.target!r}" if h.target else "")
        + f": score {_score(h.score_before)} -> {_score(h.score_after)}"
        + (" (VETOED)" if h.vetoed else "")
        + (" (ROLLED BACK: it made the image worse)" if h.rolled_back else "")
        for h in ctx.history[-8:]
    )
    rec = ctx.recommendation
    ranked = "\n".join(
        f"{n}. {c.tool} (weight {c.weight:.2f}): {c.reason}"
        + (f"; suggested arguments {_compact(c.args)}" if c.args else "")
        for n, c in enumerate(rec.ranked, start=1)
    )
    knobs = ", ".join(f"{k} {v}" for k, v in (("guidance", rec.guidance_scale), ("strength", rec.strength)) if v)
    return load_prompt(
        "planner_turn",
        original_prompt=ctx.original_prompt,
        prompt=ctx.prompt,
        image_note=image_note,
        score=f"{ev.satisfaction_score:.2f}",
        summary=ev.summary or "(none)",
        issues=issues or "(none)",
        history=history or "(nothing yet)",
        strategy=rec.strategy,
        strategy_reason=rec.reason,
        ranked=ranked or "(no ranking)",
        knobs=f"Suggested settings: {knobs}." if knobs else "",
        allowed=", ".join(allowed),
        max_calls=max(1, ctx.max_calls),
        user_feedback="\n".join(f"- {r}" for r in ctx.user_feedback) or "(none)",
        feedback=feedback or "(none)",
    )


def _compact(args: dict[str, Any]) -> str:
    shown = {k: (v[:80] + "..." if isinstance(v, str) and len(v) > 80 else v) for k, v in args.items()}
    return json.dumps(shown, ensure_ascii=False, separators=(", ", ": "))


def _score(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"
