"""The weighted strategy selector and the veto: pure functions from data to decisions.

Gemini plans, but it can be wrong in ways that cost GPU minutes: regenerating when one object
needs inpainting, repeating an edit that just failed, pushing strength to 1. This module is the
deterministic second opinion: it weighs the issues, recommends a strategy with ranked tools,
judges every proposed call (accept, clamp or veto) and says when to stop. Inputs and outputs are
plain pydantic data, so the loop records each decision as is and the tests drive it by tables.
The only file it ever reads is the cached tool contracts, through ``contracts``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from emage_agent.contracts import TOOL_NAMES, get_contract, validate_arguments
from emage_agent.errors import InvalidArgument
from emage_agent.evaluation import IMAGE_SIDE, ISSUE_CATEGORIES, PROMPT_SIDE, Evaluation, Issue
from emage_agent.planning import HistoryEntry, Recommendation, Strategy, ToolCall, ToolChoice

VetoKind = Literal["unknown_tool", "invalid_arguments", "contradicts_strategy", "repeated_failure", "budget"]
StopReason = Literal["threshold", "iteration_limit", "plateau", "vlm_budget", "gpu_budget", "continue"]

CATEGORY_TOOL: dict[str, str] = {
    "object": "inpaint",  # preceded by make_mask on the issue's target/box
    "spatial": "depth_edit",  # keeps the 3D layout while contents move
    "style": "canny_edit",  # keeps the outlines while colour and texture change
    "prompt": "rewrite_prompt",
    "semantic": "rewrite_prompt",
}
# Ties are broken by this order: prepare before acting (rewrite before generate, mask before inpaint),
# then the most local edit first, the whole-image regeneration last.
TOOL_ORDER: tuple[str, ...] = ("rewrite_prompt", "make_mask", "inpaint", "depth_edit", "canny_edit", "generate")
_PAIR = {t: TOOL_ORDER.index("inpaint" if t == "make_mask" else t) for t in TOOL_ORDER}
STRENGTH_TOOLS = frozenset({"canny_edit", "depth_edit"})
PROMPT_ARG_TOOLS = frozenset({"generate", "canny_edit", "depth_edit", "inpaint"})
_TOL = 1e-9  # float noise allowance for the boundary comparisons (score == threshold, equal sides)
_WEIGHTS = {"object": 1.0, "spatial": 1.0, "style": 0.8, "prompt": 1.0, "semantic": 1.2}
_GUIDANCE = {"generate": 3.5, "canny_edit": 30.0, "depth_edit": 10.0, "inpaint": 30.0}  # the model cards' values
_SAFE = {
    "generate": {"guidance": (1.5, 7.0)},
    "canny_edit": {"strength": (0.3, 0.95), "guidance": (10.0, 40.0)},
    "depth_edit": {"strength": (0.3, 0.95), "guidance": (3.0, 20.0)},
    "inpaint": {"guidance": (10.0, 40.0)},
    "make_mask": {"threshold": (0.2, 0.7), "dilate": (0, 64)},
}
_COSTS = {
    "generate": (1, 30.0),
    "canny_edit": (1, 30.0),
    "depth_edit": (1, 35.0),
    "inpaint": (1, 40.0),
    "make_mask": (0, 2.0),
    "rewrite_prompt": (1, 0.0),
}


class SelectorConfig(BaseModel):
    """Every knob of the selector; the defaults are the tuned policy, tests and users may override any."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(0.8, ge=0.0, le=1.0)
    # Later iterations buy less: accept a slightly lower score as they go (0 disables).
    threshold_relax_per_iteration: float = Field(0.01, ge=0.0)
    threshold_max_relax: float = Field(0.05, ge=0.0)
    category_weights: dict[str, float] = Field(default_factory=lambda: dict(_WEIGHTS))
    veto_margin: float = Field(0.5, ge=0.0)
    failure_demotion: float = Field(0.5, ge=0.0, le=1.0)  # weight factor per earlier failure on the same target
    plateau_window: int = Field(3, ge=1)
    plateau_epsilon: float = Field(0.01, ge=0.0)
    guidance_base: dict[str, float] = Field(default_factory=lambda: dict(_GUIDANCE))
    guidance_decay: float = Field(0.93, gt=0.0, le=1.0)  # multiplied in once per iteration
    strength_base: float = Field(0.85, gt=0.0, le=1.0)
    strength_decay: float = Field(0.9, gt=0.0, le=1.0)
    max_iterations: int = Field(8, ge=0)
    max_vlm_calls: int | None = Field(None, ge=0)
    max_gpu_seconds: float | None = Field(None, ge=0.0)
    # Safe ranges lie inside the contract bounds; a value outside is clamped (and recorded), not vetoed.
    safe_ranges: dict[str, dict[str, tuple[float, float]]] = Field(
        default_factory=lambda: {t: dict(p) for t, p in _SAFE.items()}
    )
    # Per call: (VLM calls, GPU seconds). Every image tool is followed by an evaluation; seconds are estimates.
    tool_costs: dict[str, tuple[int, float]] = Field(default_factory=lambda: dict(_COSTS))

    @field_validator("category_weights", mode="before")
    @classmethod
    def _complete_weights(cls, value: dict[str, float] | None) -> dict[str, float]:
        """A partial override keeps the other defaults, so ``{"style": 2}`` is enough to favour style."""
        merged = {**_WEIGHTS, **(value or {})}
        unknown = sorted(set(merged) - set(ISSUE_CATEGORIES))
        if unknown or any(w < 0 for w in merged.values()):
            raise ValueError(f"weights must be >= 0 for the categories {ISSUE_CATEGORIES}; got {unknown or merged}")
        return merged

    @field_validator("safe_ranges", mode="after")
    @classmethod
    def _ordered_ranges(cls, value: dict[str, dict[str, tuple[float, float]]]) -> dict:
        """Overrides are per tool (``{"inpaint": {}}`` removes its ranges); each range lies inside the contract."""
        merged = {tool: dict(params) for tool, params in {**_SAFE, **value}.items()}
        for tool, params in merged.items():
            if tool not in TOOL_NAMES:
                raise ValueError(f"no tool named {tool!r}; tools are {', '.join(TOOL_NAMES)}")
            props = get_contract(tool).parameters.get("properties", {})
            for param, (lo, hi) in params.items():
                bounds = props.get(param, {})
                if (
                    param not in props
                    or lo > hi
                    or not bounds.get("minimum", lo) <= lo <= hi <= bounds.get("maximum", hi)
                ):
                    raise ValueError(f"{tool}.{param}: safe range ({lo}, {hi}) is not an ordered range inside {bounds}")
        return merged


class SideWeights(BaseModel):
    """Severity x category weight, summed per side and per category: the numbers the decision tree compares."""

    prompt_side: float = 0.0
    image_side: float = 0.0
    by_category: dict[str, float] = Field(default_factory=dict)


class BudgetState(BaseModel):
    """What has been spent so far; a limit left ``None`` falls back to the config's (``None`` there: unlimited).

    ``iteration`` counts the repair iterations already done, so 0 before the first repair.
    """

    iteration: int = Field(0, ge=0)
    vlm_calls: int = Field(0, ge=0)
    gpu_seconds: float = Field(0.0, ge=0.0)
    max_iterations: int | None = None
    max_vlm_calls: int | None = None
    max_gpu_seconds: float | None = None


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


class Verdict(BaseModel):
    """The selector's judgement of one proposed call; ``call`` carries the validated, clamped arguments."""

    accepted: bool
    call: ToolCall
    clamps: list[str] = Field(default_factory=list)
    reason: str | None = None
    kind: VetoKind | None = None
    target: str | None = None


def _num(x: float) -> str:
    return f"{x:.2f}" if round(x, 2) == x else f"{x:.4g}"


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


def _safe(config: SelectorConfig, tool: str, param: str, value: float) -> float:
    lo, hi = config.safe_ranges.get(tool, {}).get(param, (-math.inf, math.inf))
    return min(max(value, lo), hi)


def scheduled_guidance(tool: str, iteration: int, config: SelectorConfig) -> float | None:
    """Guidance decays with iteration: late repairs should nudge, not overpower, what already works."""
    base = config.guidance_base.get(tool)
    if base is None:
        return None
    return round(_safe(config, tool, "guidance", base * config.guidance_decay ** max(iteration, 0)), 4)


def scheduled_strength(tool: str, iteration: int, config: SelectorConfig) -> float | None:
    """Edit strength decays too: each later edit should keep more of an image that is already closer."""
    if tool not in STRENGTH_TOOLS:
        return None
    return round(_safe(config, tool, "strength", config.strength_base * config.strength_decay ** max(iteration, 0)), 4)


def call_target(
    tool: str,
    args: dict[str, Any],
    history: Sequence[HistoryEntry] = (),
    recommendation: Recommendation | None = None,
    prompt: str | None = None,
) -> str | None:
    """What a call acts on, so "the same action again" is recognisable; the loop should record it as the target.

    make_mask: its target (or box); inpaint: the latest mask's target; rewrite_prompt: the prompt being
    rewritten (or its focus); prompt-taking tools: their prompt.
    """
    if args.get("target"):
        return str(args["target"])
    if tool == "make_mask":
        return f"box {list(args['box'])}" if args.get("box") else None
    if tool == "inpaint":
        for entry in reversed(history):
            if entry.tool == "make_mask" and not entry.vetoed:
                return entry.target or call_target("make_mask", entry.args)
        masks = [c for c in recommendation.ranked if c.tool == "make_mask"] if recommendation else []
        return call_target("make_mask", masks[0].args) if masks else None
    if tool == "rewrite_prompt":
        return prompt or args.get("focus")
    return args.get("prompt")


def _last_run(history: Sequence[HistoryEntry]) -> int | None:
    """The index of the latest entry that actually ran."""
    return next((i for i in range(len(history) - 1, -1, -1) if not history[i].vetoed), None)


def _entry_target(history: Sequence[HistoryEntry], index: int) -> str | None:
    """The recorded target, else the one derived from the entry's args and what came before it."""
    entry = history[index]
    return entry.target or call_target(entry.tool, entry.args, history[:index])


def _key(target: str | None) -> str | None:
    return " ".join(target.split()).casefold() if target else None


def failed(entry: HistoryEntry) -> bool:
    """An action that ran and did not raise the score, or whose result was rolled back."""
    if entry.vetoed:
        return False
    if entry.rolled_back:
        return True
    return entry.score_before is not None and entry.score_after is not None and entry.score_after <= entry.score_before


def failure_count(tools: Sequence[str], target: str | None, history: Sequence[HistoryEntry]) -> int:
    key = _key(target)
    if key is None:
        return 0
    return sum(
        1 for i, e in enumerate(history) if e.tool in tools and failed(e) and _key(_entry_target(history, i)) == key
    )


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


def _opt(tool: str, weight: float, reason: str, args: dict[str, Any], target: str) -> tuple[ToolChoice, str]:
    return ToolChoice(tool=tool, weight=weight, reason=reason, args=args), target


def _options(evaluation: Evaluation, config: SelectorConfig, it: int, prompt: str) -> list[tuple[ToolChoice, str]]:
    """One choice per (tool, target) with the summed weight of the issues it fixes, and the target it acts on."""
    # Sorted so that the order the judge listed its issues in changes nothing downstream.
    weighed = sorted(
        (i for i in evaluation.issues if issue_weight(i, config) > 0),
        key=lambda i: (-issue_weight(i, config), i.category, i.target or "", str(i.box), i.description),
    )
    out: list[tuple[ToolChoice, str]] = []
    if prompt_issues := [i for i in weighed if i.category in PROMPT_SIDE]:
        weight = weigh(evaluation, config).prompt_side
        focus = "; ".join(i.description.strip() for i in prompt_issues)[:1000] or "make the prompt match the intent"
        why = f"{len(prompt_issues)} prompt/semantic issue(s), weight {_num(weight)}: {focus}"
        out.append(_opt("rewrite_prompt", weight, why, {"focus": focus}, prompt))
    groups: dict[tuple[str, str], list[Issue]] = {}
    for issue in (i for i in weighed if i.category in IMAGE_SIDE):
        tool = CATEGORY_TOOL[issue.category]
        target = (call_target("make_mask", _mask_args(issue)) or "") if tool == "inpaint" else prompt
        groups.setdefault((tool, target), []).append(issue)
    for (tool, target), issues in groups.items():
        weight = round(sum(issue_weight(i, config) for i in issues), 6)
        descriptions = "; ".join(i.description.strip() for i in issues)
        why = f"{len(issues)} {issues[0].category} issue(s), weight {_num(weight)}: {descriptions}"
        if tool == "inpaint":
            out.append(_opt("make_mask", weight, f"mask {target!r} for inpaint; {why}", _mask_args(issues[0]), target))
            why = f"repaint only {target!r}; {why}"
        out.append(_opt(tool, weight, why, _edit_args(tool, it, config, prompt), target))
    return out


def recommend(
    evaluation: Evaluation, history: list[HistoryEntry], config: SelectorConfig, iteration: int, prompt: str
) -> Recommendation:
    """The decision tree: stop at the (adaptive) threshold, else follow whichever side weighs more, hybrid on a tie."""
    w = weigh(evaluation, config)
    score, thr, it = evaluation.satisfaction_score, effective_threshold(config, iteration), max(iteration, 0)
    sides = {"prompt_side": w.prompt_side, "image_side": w.image_side}
    if score >= thr - _TOL:
        return Recommendation(strategy="stop", reason=f"score {_num(score)} >= threshold {_num(thr)}", **sides)
    if not prompt.strip():
        raise InvalidArgument("the current prompt is needed to suggest tool arguments", field="prompt")
    options = _options(evaluation, config, it, prompt)
    compare = f"prompt-side {_num(w.prompt_side)} vs image-side {_num(w.image_side)}"
    if math.isclose(w.prompt_side, w.image_side, abs_tol=_TOL):
        strategy: Strategy = "hybrid"
        reason = f"{compare} are equal: rewrite the prompt, then edit the image with it"
        if w.prompt_side <= _TOL:  # below threshold, nothing named: sharpen the prompt, re-render the same layout
            gap = round(thr - score, 6)
            reason = f"no weighed issues but score {_num(score)} < threshold {_num(thr)}: rewrite, then re-render"
            focus = "the image scores below the threshold without a named issue: make the prompt more concrete"
            canny = _edit_args("canny_edit", it, config, prompt)
            options = [_opt("rewrite_prompt", gap, reason, {"focus": focus}, prompt)]
            options.append(_opt("canny_edit", gap, "re-render keeping the composition", canny, prompt))
    elif w.prompt_side > w.image_side:
        strategy, reason = "prompt_refinement", f"{compare}: rewrite the prompt, then generate"
        gen = _edit_args("generate", it, config, prompt)
        options.append(_opt("generate", w.prompt_side, "regenerate with the rewritten prompt", gen, prompt))
    else:
        strategy, reason = "image_modification", f"{compare}: edit the image where it is wrong"
    # A preparatory call just run (make_mask, rewrite_prompt) sinks and its follow-up (the inpaint on that mask's
    # target; the best other tool after a rewrite) goes first, so the next step completes the action.
    index = _last_run(history)
    last = None if index is None else history[index]
    mask = _key(_entry_target(history, index)) if last and last.tool == "make_mask" else None
    keyed: list[tuple[int, ToolChoice, str]] = []
    for choice, target in options:
        tools = ("make_mask", "inpaint") if choice.tool in ("make_mask", "inpaint") else (choice.tool,)
        if n := failure_count(tools, target, history):  # demote, never drop: the planner may still know better
            weight = round(choice.weight * config.failure_demotion**n, 6)
            choice = choice.model_copy(update={"weight": weight, "reason": f"{choice.reason} (demoted: failed {n}x)"})
        done = (
            last is not None and choice.tool == last.tool and (choice.tool == "rewrite_prompt" or _key(target) == mask)
        )
        follow = mask is not None and choice.tool == "inpaint" and _key(target) == mask
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
    plateau = len(scores) > win and max(scores[-win:]) - max(scores[:-win]) <= config.plateau_epsilon + _TOL
    delta = round(scores[-1] - scores[-2], 6) if len(scores) > 1 else None
    return Convergence(scores=scores, best=max(scores), last_delta=delta, plateau=plateau)


def _limit(own: float | None, fallback: float | None) -> float | None:
    return own if own is not None else fallback


def should_stop(
    evaluation_score: float, history: list[HistoryEntry], config: SelectorConfig, budget: BudgetState
) -> StopDecision:
    """Success first, then hard limits, then the plateau. ``history`` holds the step that produced the score."""
    thr = effective_threshold(config, budget.iteration)
    if evaluation_score >= thr - _TOL:
        return StopDecision(stop=True, reason="threshold", detail=f"score {_num(evaluation_score)} >= {_num(thr)}")
    checks: list[tuple[StopReason, float, float | None, str]] = [
        ("iteration_limit", budget.iteration, _limit(budget.max_iterations, config.max_iterations), "iterations"),
        ("vlm_budget", budget.vlm_calls, _limit(budget.max_vlm_calls, config.max_vlm_calls), "VLM calls"),
        ("gpu_budget", budget.gpu_seconds, _limit(budget.max_gpu_seconds, config.max_gpu_seconds), "GPU seconds"),
    ]
    for reason, used, limit, what in checks:
        if limit is not None and used >= limit:
            return StopDecision(stop=True, reason=reason, detail=f"{_num(used)} of {_num(limit)} {what} used")
    conv = convergence(history, config)
    if conv.plateau:
        detail = f"no gain > {_num(config.plateau_epsilon)} in the last {config.plateau_window} scores"
        return StopDecision(stop=True, reason="plateau", detail=f"{detail}; best {_num(conv.best or 0.0)}")
    return StopDecision(stop=False, reason="continue", detail=f"score {_num(evaluation_score)} < {_num(thr)}")


def clamp_arguments(tool: str, args: dict[str, Any], config: SelectorConfig) -> tuple[dict[str, Any], list[str]]:
    """Pull numbers into the safe ranges, recording ``tool.param from->to`` for each change."""
    out, clamps, props = dict(args), [], get_contract(tool).parameters.get("properties", {})
    for param, (lo, hi) in sorted(config.safe_ranges.get(tool, {}).items()):
        value = out.get(param)
        if isinstance(value, bool) or not isinstance(value, int | float) or lo <= value <= hi:
            continue
        new = lo if value < lo else hi
        if props.get(param, {}).get("type") == "integer":  # stay an integer, and inside the range
            new = math.ceil(new) if value < lo else math.floor(new)
        out[param] = new
        clamps.append(f"{tool}.{param} {value}->{new}")
    return out, clamps


def review(
    call: ToolCall,
    recommendation: Recommendation,
    history: list[HistoryEntry],
    budget: BudgetState,
    config: SelectorConfig,
    *,
    prompt: str | None = None,
) -> Verdict:
    """Accept, clamp or veto one proposed call. Checks run from the most to the least certain ground."""
    if call.name not in TOOL_NAMES:
        reason = f"unknown tool {call.name!r}; tools are {', '.join(TOOL_NAMES)}"
        return Verdict(accepted=False, call=call, kind="unknown_tool", reason=reason)
    try:
        args = validate_arguments(call.name, call.args)
        if call.name == "canny_edit" and args["low_threshold"] >= args["high_threshold"]:
            raise InvalidArgument("must exceed low_threshold", field="high_threshold")
    except InvalidArgument as exc:
        return Verdict(accepted=False, call=call, kind="invalid_arguments", reason=str(exc))
    args, clamps = clamp_arguments(call.name, args, config)
    checked = call.model_copy(update={"args": args})
    target = call_target(call.name, args, history, recommendation, prompt)

    def veto(kind: VetoKind, reason: str) -> Verdict:
        return Verdict(accepted=False, call=checked, clamps=clamps, reason=reason, kind=kind, target=target)

    vlm, gpu = config.tool_costs.get(call.name, (0, 0.0))
    for used, need, limit, what in (
        (budget.vlm_calls, vlm, _limit(budget.max_vlm_calls, config.max_vlm_calls), "VLM calls"),
        (budget.gpu_seconds, gpu, _limit(budget.max_gpu_seconds, config.max_gpu_seconds), "GPU seconds"),
    ):
        if need > 0 and limit is not None and used + need > limit:
            reason = f"{call.name} needs {_num(need)} {what}; {_num(max(limit - used, 0))} of {_num(limit)} left"
            return veto("budget", reason)
    if n := failure_count((call.name,), target, history):
        reason = f"{call.name} on {target!r} already failed {n}x to raise the score; try another tool or target"
        return veto("repeated_failure", reason)
    if recommendation.strategy == "stop":
        reason = f"the selector recommends stopping: {recommendation.reason}"
        return veto("contradicts_strategy", reason)
    weight = max((c.weight for c in recommendation.ranked if c.tool == call.name), default=0.0)
    top = max(recommendation.ranked, key=lambda c: c.weight, default=None)
    if recommendation.ranked and call.name == recommendation.ranked[0].tool:  # the selector's own next step
        weight = max(weight, top.weight if top else 0.0)
    if (
        call.name == "generate"
        and (last := _last_run(history)) is not None
        and history[last].tool == "rewrite_prompt"
        and recommendation.strategy != "image_modification"
    ):
        weight = max([weight] + [c.weight for c in recommendation.ranked if c.tool == "rewrite_prompt"])
    if top is not None and top.weight - weight > config.veto_margin + _TOL:
        reason = (
            f"{call.name} (weight {_num(weight)}) contradicts the {recommendation.strategy} strategy, "
            f"whose heaviest tool is {top.tool} (weight {_num(top.weight)}; margin {_num(config.veto_margin)})"
        )
        return veto("contradicts_strategy", reason)
    return Verdict(accepted=True, call=checked, clamps=clamps, target=target)


def fallback_call(recommendation: Recommendation, prompt: str | None = None) -> ToolCall:
    """The selector's own top choice with complete, contract-checked arguments.

    ``prompt`` (the current, possibly rewritten prompt) replaces the one the recommendation was made with.
    """
    if not recommendation.ranked:
        raise ValueError(f"no fallback call for a {recommendation.strategy!r} recommendation with no ranked tools")
    choice = recommendation.ranked[0]
    args = dict(choice.args)
    if prompt is not None and choice.tool in PROMPT_ARG_TOOLS:
        args["prompt"] = prompt
    return ToolCall(name=choice.tool, args=validate_arguments(choice.tool, args))
