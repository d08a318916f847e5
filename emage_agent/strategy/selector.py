"""The weighted strategy selector: pure functions from an evaluation and the history to a decision.

Gemini plans, but it can be wrong in ways that cost GPU minutes: regenerating when one object needs
inpainting, pushing on after the score has stopped rising. This module is the deterministic second
opinion: it weighs the issues, recommends a strategy with ranked tools, says when to stop and, when
the planner cannot, gives its own next call. Judging a proposed call is the veto's job (``veto``);
the knobs and the budget are plain data (``config``); the package's face, ``emage_agent.strategy``,
exports what callers use. Inputs and outputs are plain pydantic data, so the loop records each decision
as is and the tests drive it by tables. The only file ever read is the cached tool contracts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from emage_agent.core.errors import InvalidArgument
from emage_agent.core.evaluation import IMAGE_SIDE, ISSUE_CATEGORIES, PROMPT_SIDE, Evaluation, Issue
from emage_agent.core.planning import HistoryEntry, Recommendation, Strategy, ToolCall, ToolChoice
from emage_agent.core.tools import (
    first_image_tool,
    get_tool,
    mask_tool,
    plain_repair_tool,
    registry,
    repair_tool_for,
    rewrite_tool,
    validate_arguments,
)
from emage_agent.strategy.config import TOL, BudgetState, SelectorConfig, fmt_num
from emage_agent.strategy.threshold import adaptive_threshold
from emage_agent.strategy.veto import (
    Verdict,
    VetoKind,
    call_target,
    clamp_arguments,
    entry_target,
    failed,
    failure_count,
    last_run,
    review,
    target_key,
)

__all__ = [
    "CATEGORY_TOOL",
    "PROMPT_ARG_TOOLS",
    "STRENGTH_TOOLS",
    "TOOL_ORDER",
    "BudgetState",
    "Convergence",
    "SelectorConfig",
    "SideWeights",
    "StopDecision",
    "StopReason",
    "adaptive_threshold",
    "Verdict",
    "VetoKind",
    "call_target",
    "clamp_arguments",
    "convergence",
    "repair_tool",
    "effective_threshold",
    "failed",
    "failure_count",
    "fallback_call",
    "issue_weight",
    "recommend",
    "review",
    "scheduled_guidance",
    "scheduled_strength",
    "score_trace",
    "should_stop",
    "weigh",
]

StopReason = Literal[
    "threshold", "adaptive_threshold", "iteration_limit", "plateau", "vlm_budget", "gpu_budget", "continue"
]

# Each category's repair, from the tool registry (object: make_mask + inpaint; spatial: depth_edit keeps the 3D
# layout; style: canny_edit keeps the outlines; prompt and semantic: rewrite_prompt).
CATEGORY_TOOL: dict[str, str] = {c: t for c in ISSUE_CATEGORIES if (t := plain_repair_tool(c)) is not None}
# With the instruction edit on, these categories go to it (see ``repair_tool``).
EDIT_CATEGORIES = frozenset(c for c in CATEGORY_TOOL if repair_tool_for(c, True) != CATEGORY_TOOL[c])
EDIT_ALTERNATIVE = 0.9  # weight factor of the pre-edit tool offered beside an edit
EDIT_BOX_MARGIN = 50  # a focus box grows by this much (of 1000) per side: the VLM's boxes are rough
# Ties are broken by the registry's rank: prepare before acting (rewrite before generate, mask before inpaint),
# then the most local edit first, the whole-image regeneration last.
TOOL_ORDER: tuple[str, ...] = tuple(sorted(registry(), key=lambda n: registry()[n].rank))
_PAIR = {t: TOOL_ORDER.index(registry()[t].prepares or t) for t in TOOL_ORDER}
STRENGTH_TOOLS = frozenset(t.name for t in registry().values() if t.takes_strength)
PROMPT_ARG_TOOLS = frozenset(t.name for t in registry().values() if t.takes_prompt)
_BUDGET_STOPS: dict[str, StopReason] = {
    "iterations": "iteration_limit",
    "VLM calls": "vlm_budget",
    "GPU seconds": "gpu_budget",
}


class SideWeights(BaseModel):
    """Severity x category weight, summed per side and per category: the numbers the decision tree compares."""

    prompt_side: float = 0.0
    image_side: float = 0.0
    by_category: dict[str, float] = Field(default_factory=dict)


class Convergence(BaseModel):
    """The score trace so far and whether it has stopped improving."""

    scores: list[float] = Field(default_factory=list)
    best: float | None = None
    last_delta: float | None = None
    plateau: bool = False


class StopDecision(BaseModel):
    """``reason`` is a machine-friendly code; ``detail`` says the same for people."""

    stop: bool
    reason: StopReason
    detail: str
    threshold: float | None = None  # the bar in force for this decision (lowered only when adaptive)


def issue_weight(issue: Issue, config: SelectorConfig) -> float:
    return issue.severity * config.category_weights[issue.category]


def weigh(evaluation: Evaluation, config: SelectorConfig) -> SideWeights:
    by_cat = dict.fromkeys(ISSUE_CATEGORIES, 0.0)
    for issue in evaluation.issues:
        by_cat[issue.category] += issue_weight(issue, config)
    by_cat = {c: round(w, 6) for c, w in by_cat.items()}
    prompt_side = round(sum(by_cat[c] for c in ISSUE_CATEGORIES if c in PROMPT_SIDE), 6)
    image_side = round(sum(by_cat[c] for c in ISSUE_CATEGORIES if c in IMAGE_SIDE), 6)
    return SideWeights(prompt_side=prompt_side, image_side=image_side, by_category=by_cat)


def effective_threshold(config: SelectorConfig, iteration: int) -> float:
    relax = min(config.threshold_max_relax, config.threshold_relax_per_iteration * max(iteration, 0))
    return round(config.threshold - relax, 6)


def _scheduled(config: SelectorConfig, tool: str, param: str, base: float, decay: float, iteration: int) -> float:
    """``base`` decayed once per iteration, kept inside the parameter's safe range."""
    lo, hi = config.safe_ranges.get(tool, {}).get(param, (-math.inf, math.inf))
    return round(min(max(base * decay ** max(iteration, 0), lo), hi), 4)


def scheduled_guidance(tool: str, iteration: int, config: SelectorConfig) -> float | None:
    """Guidance decays with iteration: late repairs should nudge, not overpower, what already works."""
    base = config.guidance_base.get(tool)
    if base is None:
        return None
    return _scheduled(config, tool, "guidance", base, config.guidance_decay, iteration)


def scheduled_strength(tool: str, iteration: int, config: SelectorConfig) -> float | None:
    """Edit strength decays too: each later edit should keep more of an image that is already closer."""
    if tool not in STRENGTH_TOOLS:
        return None
    return _scheduled(config, tool, "strength", config.strength_base, config.strength_decay, iteration)


def _mask_args(issue: Issue) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if issue.target:
        args["target"] = issue.target[:200]
    if issue.box:
        args["box"] = list(issue.box)
    return args or {"target": issue.description.strip()[:200] or "the wrong object"}


def _edit_args(tool: str, it: int, config: SelectorConfig, prompt: str) -> dict[str, Any]:
    args: dict[str, Any] = {"prompt": prompt, "guidance": scheduled_guidance(tool, it, config)}
    if tool in STRENGTH_TOOLS:
        args["strength"] = scheduled_strength(tool, it, config)
    return args


def repair_tool(issue: Issue, config: SelectorConfig) -> str:
    """The image-side tool for one issue: the instruction edit for colour, attribute, style and small objects.

    Kontext keeps everything it is not told to change and needs no mask, so it is the finer repair where it
    fits; a large object still goes to make_mask + inpaint, spatial issues to depth_edit.
    """
    tool = CATEGORY_TOOL[issue.category]
    preferred = repair_tool_for(issue.category, config.edit_tool) or tool
    if preferred == tool:
        return tool
    if get_tool(tool).needs_mask and issue.box:  # a large object is still repainted through a mask
        ymin, xmin, ymax, xmax = issue.box
        if (ymax - ymin) * (xmax - xmin) / 1e6 > config.edit_max_area + TOL:
            return tool
    return preferred


def _instruction_args(tool: str, issues: list[Issue], it: int, config: SelectorConfig) -> dict[str, Any]:
    fixes = "; ".join(i.description.strip().rstrip(".") for i in issues) or "match the prompt"
    args: dict[str, Any] = {
        "instruction": f"Fix this and keep everything else unchanged: {fixes}"[:1000],
        "guidance": scheduled_guidance(tool, it, config),
    }
    if len(issues) == 1 and issues[0].box:
        ymin, xmin, ymax, xmax = issues[0].box
        m = EDIT_BOX_MARGIN
        args["box"] = [max(ymin - m, 0), max(xmin - m, 0), min(ymax + m, 1000), min(xmax + m, 1000)]
    return args


def _opt(tool: str, weight: float, reason: str, args: dict[str, Any], target: str) -> tuple[ToolChoice, str]:
    return ToolChoice(tool=tool, weight=weight, reason=reason, args=args), target


def _options(
    evaluation: Evaluation, prompt_side: float, config: SelectorConfig, it: int, prompt: str
) -> list[tuple[ToolChoice, str]]:
    """One choice per (tool, target) with the summed weight of the issues it fixes, and the target it acts on."""
    # Sorted so that the order the judge listed its issues in changes nothing downstream.
    weighed = sorted(
        (i for i in evaluation.issues if issue_weight(i, config) > 0),
        key=lambda i: (-issue_weight(i, config), i.category, i.target or "", str(i.box), i.description),
    )
    out: list[tuple[ToolChoice, str]] = []
    if prompt_issues := [i for i in weighed if i.category in PROMPT_SIDE]:
        focus = "; ".join(i.description.strip() for i in prompt_issues)[:1000] or "make the prompt match the intent"
        why = f"{len(prompt_issues)} prompt/semantic issue(s), weight {fmt_num(prompt_side)}: {focus}"
        out.append(_opt(rewrite_tool(), prompt_side, why, {"focus": focus}, prompt))
    groups: dict[tuple[str, str], list[Issue]] = {}
    for issue in (i for i in weighed if i.category in IMAGE_SIDE):
        tool = repair_tool(issue, config)
        if get_tool(tool).needs_mask:
            target = call_target(mask_tool(), _mask_args(issue)) or ""
        elif get_tool(tool).takes_instruction:  # one instruction per object, so each edit stays a single, clear change
            target = issue.target or issue.description.strip()
        else:
            target = prompt
        groups.setdefault((tool, target), []).append(issue)
    for (tool, target), issues in groups.items():
        weight = round(sum(issue_weight(i, config) for i in issues), 6)
        descriptions = "; ".join(i.description.strip() for i in issues)
        why = f"{len(issues)} {issues[0].category} issue(s), weight {fmt_num(weight)}: {descriptions}"
        masker = mask_tool()
        if get_tool(tool).needs_mask:
            out.append(_opt(masker, weight, f"mask {target!r} for {tool}; {why}", _mask_args(issues[0]), target))
            why = f"repaint only {target!r}; {why}"
        if get_tool(tool).takes_instruction:
            args = _instruction_args(tool, issues, it, config)
            out.append(_opt(tool, weight, f"{tool} {target!r} by instruction; {why}", args, args["instruction"]))
            # The tool the issue had before edit stays a close second, so a planner choosing it is not vetoed.
            alt, alt_weight = CATEGORY_TOOL[issues[0].category], round(weight * EDIT_ALTERNATIVE, 6)
            alt_masked = get_tool(alt).needs_mask
            alt_target = (call_target(masker, _mask_args(issues[0])) or "") if alt_masked else prompt
            if alt_masked:
                reason = f"mask {alt_target!r} for {alt} (alternative to {tool}); {why}"
                out.append(_opt(masker, alt_weight, reason, _mask_args(issues[0]), alt_target))
            alt_args = _edit_args(alt, it, config, prompt)
            out.append(_opt(alt, alt_weight, f"alternative to {tool}; {why}", alt_args, alt_target))
            continue
        out.append(_opt(tool, weight, why, _edit_args(tool, it, config, prompt), target))
    return out


def recommend(
    evaluation: Evaluation, history: list[HistoryEntry], config: SelectorConfig, iteration: int, prompt: str
) -> Recommendation:
    """The decision tree: stop at the (adaptive) threshold, else follow whichever side weighs more, hybrid on a tie."""
    w = weigh(evaluation, config)
    score, thr, it = evaluation.satisfaction_score, effective_threshold(config, iteration), max(iteration, 0)
    sides = {"prompt_side": w.prompt_side, "image_side": w.image_side}
    if score >= thr - TOL:
        return Recommendation(strategy="stop", reason=f"score {fmt_num(score)} >= threshold {fmt_num(thr)}", **sides)
    if not prompt.strip():
        raise InvalidArgument("the current prompt is needed to suggest tool arguments", field="prompt")
    options = _options(evaluation, w.prompt_side, config, it, prompt)
    compare = f"prompt-side {fmt_num(w.prompt_side)} vs image-side {fmt_num(w.image_side)}"
    if math.isclose(w.prompt_side, w.image_side, abs_tol=TOL):
        strategy: Strategy = "hybrid"
        reason = f"{compare} are equal: rewrite the prompt, then edit the image with it"
        if w.prompt_side <= TOL:  # below threshold, nothing named: sharpen the prompt, re-render the same layout
            gap = round(thr - score, 6)
            reason = f"no weighed issues but score {fmt_num(score)} < threshold {fmt_num(thr)}: rewrite, then re-render"
            focus = "the image scores below the threshold without a named issue: make the prompt more concrete"
            rerender = CATEGORY_TOOL["style"]  # keeps the outlines: the composition stays
            options = [_opt(rewrite_tool(), gap, reason, {"focus": focus}, prompt)]
            again = _edit_args(rerender, it, config, prompt)
            options.append(_opt(rerender, gap, "re-render keeping the composition", again, prompt))
    elif w.prompt_side > w.image_side:
        strategy, reason = "prompt_refinement", f"{compare}: rewrite the prompt, then generate"
        generate = first_image_tool()
        gen = _edit_args(generate, it, config, prompt)
        options.append(_opt(generate, w.prompt_side, "regenerate with the rewritten prompt", gen, prompt))
    else:
        strategy, reason = "image_modification", f"{compare}: edit the image where it is wrong"
    # A preparatory call just run (make_mask, rewrite_prompt) sinks and its follow-up (the inpaint on that mask's
    # target; the best other tool after a rewrite) goes first, so the next step completes the action.
    index = last_run(history)
    last = None if index is None else history[index]
    masker = mask_tool()
    masked = registry()[masker].prepares or masker
    mask = target_key(entry_target(history, index)) if last and last.tool == masker else None
    keyed: list[tuple[int, ToolChoice, str]] = []
    for choice, target in options:
        tools = (masker, masked) if choice.tool in (masker, masked) else (choice.tool,)
        if n := failure_count(tools, target, history):  # demote, never drop: the planner may still know better
            weight = round(choice.weight * config.failure_demotion**n, 6)
            choice = choice.model_copy(update={"weight": weight, "reason": f"{choice.reason} (demoted: failed {n}x)"})
        done = (
            last is not None
            and choice.tool == last.tool
            and (get_tool(choice.tool).rewrites_prompt or target_key(target) == mask)
        )
        follow = mask is not None and choice.tool == masked and target_key(target) == mask
        if done or follow:
            note = "just run" if done else "follows the make_mask just run"
            choice = choice.model_copy(update={"reason": f"{choice.reason} ({note})"})
        keyed.append((1 if done else -1 if follow else 0, choice, target))
    # Then heavier first; on a tie by TOOL_ORDER, with each make_mask right before the inpaint on its target.
    keyed.sort(key=lambda o: (o[0], -o[1].weight, _PAIR[o[1].tool], o[2], TOOL_ORDER.index(o[1].tool)))
    ranked = [choice for _, choice, _ in keyed]
    guidance = next((c.args["guidance"] for c in ranked if c.args.get("guidance") is not None), None)
    strength = next((c.args["strength"] for c in ranked if c.args.get("strength") is not None), None)
    return Recommendation(
        strategy=strategy, reason=reason, ranked=ranked, guidance_scale=guidance, strength=strength, **sides
    )


def score_trace(history: Sequence[HistoryEntry]) -> list[float]:
    """The scores in order: the first step's score before, then every score after (rolled back or not)."""
    scores: list[float] = []
    for entry in (e for e in history if not e.vetoed):
        if not scores and entry.score_before is not None:
            scores.append(entry.score_before)
        if entry.score_after is not None:
            scores.append(entry.score_after)
    return scores


def convergence(history: Sequence[HistoryEntry] | Sequence[float], config: SelectorConfig) -> Convergence:
    """Plateau: the best of the last ``window`` scores beats the best before them by no more than epsilon."""
    entries = [h for h in history if isinstance(h, HistoryEntry)]
    scores = score_trace(entries) if entries else [float(s) for s in history]  # type: ignore[arg-type]
    if not scores:
        return Convergence()
    win = config.plateau_window
    plateau = len(scores) > win and max(scores[-win:]) - max(scores[:-win]) <= config.plateau_epsilon + TOL
    delta = round(scores[-1] - scores[-2], 6) if len(scores) > 1 else None
    return Convergence(scores=scores, best=max(scores), last_delta=delta, plateau=plateau)


def should_stop(
    evaluation_score: float, history: list[HistoryEntry], config: SelectorConfig, budget: BudgetState
) -> StopDecision:
    """Success first, then hard limits, then the plateau. ``history`` holds the step that produced the score."""
    thr = effective_threshold(config, budget.iteration)
    lowered = False
    if config.adaptive_threshold:
        adaptive = adaptive_threshold(score_trace(history), config).threshold
        lowered = adaptive < thr - TOL
        thr = min(thr, adaptive)
    if evaluation_score >= thr - TOL:
        if lowered:
            detail = f"score {fmt_num(evaluation_score)} >= {fmt_num(thr)} (lowered from {fmt_num(config.threshold)})"
            return StopDecision(stop=True, reason="adaptive_threshold", detail=detail, threshold=thr)
        detail = f"score {fmt_num(evaluation_score)} >= {fmt_num(thr)}"
        return StopDecision(stop=True, reason="threshold", detail=detail, threshold=thr)
    for what, (used, limit) in budget.usage(config).items():
        if limit is not None and used >= limit:
            detail = f"{fmt_num(used)} of {fmt_num(limit)} {what} used"
            return StopDecision(stop=True, reason=_BUDGET_STOPS[what], detail=detail, threshold=thr)
    conv = convergence(history, config)
    if conv.plateau:
        detail = f"no gain > {fmt_num(config.plateau_epsilon)} in the last {config.plateau_window} scores"
        detail = f"{detail}; best {fmt_num(conv.best or 0.0)}"
        return StopDecision(stop=True, reason="plateau", detail=detail, threshold=thr)
    detail = f"score {fmt_num(evaluation_score)} < {fmt_num(thr)}"
    return StopDecision(stop=False, reason="continue", detail=detail, threshold=thr)


def fallback_call(
    recommendation: Recommendation, prompt: str | None = None, defaults: Callable[[str], dict[str, Any]] | None = None
) -> ToolCall:
    """The selector's own top choice with complete, contract-checked arguments.

    ``prompt`` (the current, possibly rewritten prompt) replaces the one the recommendation was made with.
    ``defaults(tool)`` gives the session's own values (size, steps) that come before the contract's defaults.
    """
    if not recommendation.ranked:
        raise ValueError(f"no fallback call for a {recommendation.strategy!r} recommendation with no ranked tools")
    choice = recommendation.ranked[0]
    args = {**(defaults(choice.tool) if defaults else {}), **choice.args}
    if prompt is not None and choice.tool in PROMPT_ARG_TOOLS:
        args["prompt"] = prompt
    return ToolCall(name=choice.tool, args=validate_arguments(choice.tool, args))
