"""The veto: judge one proposed tool call (accept, clamp or veto) against the selector's recommendation.

Gemini plans, but it can be wrong in ways that cost GPU minutes: repeating an edit that just failed,
pushing strength to 1, acting against the strategy, spending past the budget. ``review`` is the check
every call passes before it runs. It reads the history the same way the selector's ranking does, so the
facts about a call (what it acts on, whether it already failed there) live here and ``selector`` uses them.
Pure functions on plain pydantic data; the only file read is the cached tool contracts, through ``contracts``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from emage_agent.core.errors import InvalidArgument
from emage_agent.core.planning import HistoryEntry, Recommendation, ToolCall
from emage_agent.core.tools import (
    first_image_tool,
    get_contract,
    get_tool,
    is_tool,
    mask_tool,
    rewrite_tool,
    tool_names,
    validate_arguments,
)
from emage_agent.strategy.config import TOL, BudgetState, SelectorConfig, fmt_num

VetoKind = Literal["unknown_tool", "invalid_arguments", "contradicts_strategy", "repeated_failure", "budget"]


class Verdict(BaseModel):
    """The selector's judgement of one proposed call; ``call`` carries the validated, clamped arguments."""

    accepted: bool
    call: ToolCall
    clamps: list[str] = Field(default_factory=list)
    reason: str | None = None
    kind: VetoKind | None = None
    target: str | None = None


def call_target(
    tool: str,
    args: dict[str, Any],
    history: Sequence[HistoryEntry] = (),
    recommendation: Recommendation | None = None,
    prompt: str | None = None,
) -> str | None:
    """What a call acts on, so "the same action again" is recognisable; the loop should record it as the target.

    make_mask: its target (or box); inpaint: the latest mask's target; rewrite_prompt: the prompt being
    rewritten (or its focus); edit: its instruction; prompt-taking tools: their prompt.
    """
    if args.get("target"):
        return str(args["target"])
    traits = get_tool(tool) if is_tool(tool) else None
    if traits is None:
        return args.get("prompt")
    if traits.makes_mask:
        return f"box {list(args['box'])}" if args.get("box") else None
    if traits.needs_mask:
        masker = mask_tool()
        for entry in reversed(history):
            if entry.tool == masker and not entry.vetoed:
                return entry.target or call_target(masker, entry.args)
        masks = [c for c in recommendation.ranked if c.tool == masker] if recommendation else []
        return call_target(masker, masks[0].args) if masks else None
    if traits.rewrites_prompt:
        return prompt or args.get("focus")
    if traits.takes_instruction:
        return args.get("instruction")
    return args.get("prompt")


def last_run(history: Sequence[HistoryEntry]) -> int | None:
    """The index of the latest entry that actually ran."""
    return next((i for i in range(len(history) - 1, -1, -1) if not history[i].vetoed), None)


def entry_target(history: Sequence[HistoryEntry], index: int) -> str | None:
    """The recorded target, else the one derived from the entry's args and what came before it."""
    entry = history[index]
    return entry.target or call_target(entry.tool, entry.args, history[:index])


def target_key(target: str | None) -> str | None:
    """A target normalised for comparison: whitespace collapsed, case folded."""
    return " ".join(target.split()).casefold() if target else None


def failed(entry: HistoryEntry) -> bool:
    """An action that ran and did not raise the score, or whose result was rolled back."""
    if entry.vetoed:
        return False
    if entry.rolled_back:
        return True
    return entry.score_before is not None and entry.score_after is not None and entry.score_after <= entry.score_before


def failure_count(tools: Sequence[str], target: str | None, history: Sequence[HistoryEntry]) -> int:
    """How many times one of ``tools`` already failed on ``target``."""
    key = target_key(target)
    if key is None:
        return 0
    return sum(
        1
        for i, e in enumerate(history)
        if e.tool in tools and failed(e) and target_key(entry_target(history, i)) == key
    )


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
    if not is_tool(call.name):
        reason = f"unknown tool {call.name!r}; tools are {', '.join(tool_names())}"
        return Verdict(accepted=False, call=call, kind="unknown_tool", reason=reason)
    if not get_tool(call.name).available(config.edit_tool):
        others = " or ".join(t for t in tool_names(config.edit_tool) if get_tool(t).edits_image)
        reason = f"{call.name} is switched off (no FLUX.1 Kontext model: EMAGE_KONTEXT_MODEL=none); use {others}"
        return Verdict(accepted=False, call=call, kind="unknown_tool", reason=reason)
    try:
        args = validate_arguments(call.name, call.args)
        if "low_threshold" in args and args["low_threshold"] >= args.get("high_threshold", math.inf):
            raise InvalidArgument("must exceed low_threshold", field="high_threshold")
    except InvalidArgument as exc:
        return Verdict(accepted=False, call=call, kind="invalid_arguments", reason=str(exc))
    args, clamps = clamp_arguments(call.name, args, config)
    checked = call.model_copy(update={"args": args})
    target = call_target(call.name, args, history, recommendation, prompt)

    def veto(kind: VetoKind, reason: str) -> Verdict:
        return Verdict(accepted=False, call=checked, clamps=clamps, reason=reason, kind=kind, target=target)

    usage = budget.usage(config)
    vlm, gpu = config.tool_costs.get(call.name, (0, 0.0))
    for what, need in (("VLM calls", vlm), ("GPU seconds", gpu)):
        used, limit = usage[what]
        if need > 0 and limit is not None and used + need > limit:
            reason = (
                f"{call.name} needs {fmt_num(need)} {what}; {fmt_num(max(limit - used, 0))} of {fmt_num(limit)} left"
            )
            return veto("budget", reason)
    if n := failure_count((call.name,), target, history):
        reason = f"{call.name} on {target!r} already failed {n}x to raise the score; try another tool or target"
        return veto("repeated_failure", reason)
    if recommendation.strategy == "stop":
        return veto("contradicts_strategy", f"the selector recommends stopping: {recommendation.reason}")
    weight = max((c.weight for c in recommendation.ranked if c.tool == call.name), default=0.0)
    top = max(recommendation.ranked, key=lambda c: c.weight, default=None)
    if top is not None and call.name == recommendation.ranked[0].tool:  # the selector's own next step
        weight = max(weight, top.weight)
    if (
        call.name == first_image_tool()
        and (last := last_run(history)) is not None
        and history[last].tool == rewrite_tool()
        and recommendation.strategy != "image_modification"
    ):  # the rewrite just run is carried out by a generate
        weight = max([weight] + [c.weight for c in recommendation.ranked if c.tool == rewrite_tool()])
    if top is not None and top.weight - weight > config.veto_margin + TOL:
        reason = (
            f"{call.name} (weight {fmt_num(weight)}) contradicts the {recommendation.strategy} strategy, "
            f"whose heaviest tool is {top.tool} (weight {fmt_num(top.weight)}; margin {fmt_num(config.veto_margin)})"
        )
        return veto("contradicts_strategy", reason)
    return Verdict(accepted=True, call=checked, clamps=clamps, target=target)
