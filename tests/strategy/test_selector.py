"""Table-driven tests of the weighted strategy selector and the veto (pure functions, no GPU, no network)."""

from __future__ import annotations

import ast
import itertools
import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from emage_agent import strategy
from emage_agent.core.errors import InvalidArgument
from emage_agent.core.evaluation import Evaluation, Issue
from emage_agent.core.planning import HistoryEntry, Recommendation, ToolCall
from emage_agent.core.tools import TOOL_NAMES, get_contract, validate_arguments
from emage_agent.strategy import config as selector_config
from emage_agent.strategy import selector, threshold, veto
from emage_agent.strategy.selector import (
    CATEGORY_TOOL,
    BudgetState,
    Convergence,
    SelectorConfig,
    StopDecision,
    Verdict,
    call_target,
    clamp_arguments,
    convergence,
    effective_threshold,
    fallback_call,
    recommend,
    review,
    scheduled_guidance,
    scheduled_strength,
    should_stop,
    weigh,
)

PROMPT = "a red fox sitting on the roof of a blue car"
CFG = SelectorConfig()
FOX_BOX = [100, 200, 600, 700]


def iss(category: str, severity: float, target: str | None = None, box: list[int] | None = None, desc: str = ""):
    return Issue(category=category, severity=severity, description=desc or f"{category} issue", target=target, box=box)


def ev(score: float, *issues: Issue) -> Evaluation:
    return Evaluation(satisfaction_score=score, issues=list(issues))


def entry(tool: str, target: str | None, before: float | None = 0.5, after: float | None = 0.4, **kw) -> HistoryEntry:
    return HistoryEntry(step=kw.pop("step", 1), tool=tool, target=target, score_before=before, score_after=after, **kw)


def rec(evaluation: Evaluation, history: list[HistoryEntry] | None = None, iteration: int = 0, **cfg) -> Recommendation:
    return recommend(evaluation, history or [], SelectorConfig(**cfg), iteration, PROMPT)


def tools_of(r: Recommendation) -> list[str]:
    return [c.tool for c in r.ranked]


# Recommendations the veto tests judge against.
EV_IMG = ev(0.5, iss("object", 0.9, "the fox", FOX_BOX), iss("style", 0.5))
REC_IMG = rec(EV_IMG)  # mask/inpaint .9, canny .4
REC_PROMPT = rec(ev(0.5, iss("prompt", 0.8), iss("object", 0.3, "the car")))  # rewrite .8, generate .8, mask .3
REC_HYBRID = rec(ev(0.5, iss("prompt", 0.8), iss("spatial", 0.8)))  # rewrite .8, depth .8
REC_STOP = rec(ev(0.9))


# --- the decision tree -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "issues", "iteration", "expected"),
    [
        pytest.param(0.80, [], 0, "stop", id="score-equals-threshold"),
        pytest.param(0.80, [iss("object", 0.9, "x")], 0, "stop", id="at-threshold-despite-issues"),
        pytest.param(0.95, [iss("prompt", 1.0)], 0, "stop", id="above-threshold"),
        pytest.param(0.7999, [], 0, "hybrid", id="just-below-threshold-no-issues"),
        pytest.param(0.5, [iss("prompt", 0.8), iss("object", 0.5, "x")], 0, "prompt_refinement", id="prompt-heavier"),
        pytest.param(
            0.5, [iss("semantic", 0.5), iss("style", 0.7)], 0, "prompt_refinement", id="semantic-0.6>style-0.56"
        ),
        pytest.param(0.5, [iss("object", 0.8, "x"), iss("prompt", 0.5)], 0, "image_modification", id="image-heavier"),
        pytest.param(0.5, [iss("spatial", 0.3), iss("style", 0.3)], 0, "image_modification", id="image-only"),
        pytest.param(0.5, [iss("prompt", 0.5), iss("object", 0.51, "x")], 0, "image_modification", id="nearly-equal"),
        pytest.param(0.5, [iss("prompt", 0.5), iss("object", 0.5, "x")], 0, "hybrid", id="equal"),
        pytest.param(0.5, [iss("semantic", 0.5), iss("object", 0.6, "x")], 0, "hybrid", id="equal-after-weights"),
        pytest.param(
            0.5,
            [iss("style", 0.5), iss("spatial", 0.2), iss("prompt", 0.6)],
            0,
            "hybrid",
            id="equal-despite-float-noise",
        ),
        pytest.param(0.5, [], 0, "hybrid", id="no-issues-below-threshold"),
        pytest.param(0.5, [iss("object", 0.0, "x")], 0, "hybrid", id="only-zero-severity-issues"),
        pytest.param(0.77, [], 3, "stop", id="adaptive-threshold-0.77-at-iteration-3"),
        pytest.param(0.77, [], 2, "hybrid", id="adaptive-threshold-0.78-at-iteration-2"),
        pytest.param(0.75, [], 50, "stop", id="adaptive-threshold-floor"),
        pytest.param(0.7499, [], 50, "hybrid", id="below-adaptive-floor"),
    ],
)
def test_decision_tree(score, issues, iteration, expected):
    r = rec(ev(score, *issues), iteration=iteration)
    assert r.strategy == expected
    assert r.reason
    assert (r.ranked == []) == (expected == "stop")
    if expected == "stop":
        assert r.guidance_scale is None and r.strength is None


@pytest.mark.parametrize(
    ("cfg", "iteration", "expected"),
    [
        ({}, 0, 0.8),
        ({}, 2, 0.78),
        ({}, 5, 0.75),
        ({}, 100, 0.75),
        ({"threshold_relax_per_iteration": 0.0}, 10, 0.8),
        ({"threshold": 0.6, "threshold_max_relax": 0.1}, 20, 0.5),
    ],
)
def test_effective_threshold(cfg, iteration, expected):
    assert effective_threshold(SelectorConfig(**cfg), iteration) == pytest.approx(expected)


def test_no_issue_hybrid_rewrites_then_rerenders_with_gap_weight():
    r = rec(ev(0.6))
    assert tools_of(r) == ["rewrite_prompt", "canny_edit"]
    assert [c.weight for c in r.ranked] == [pytest.approx(0.2)] * 2


def test_recommend_needs_a_prompt():
    with pytest.raises(InvalidArgument):
        recommend(ev(0.5, iss("style", 0.5)), [], CFG, 0, "  ")


def test_recommend_does_not_mutate_its_inputs():
    evaluation, history = ev(0.5, iss("object", 0.9, "the fox")), [entry("inpaint", "the fox")]
    before = (evaluation.model_dump(), [h.model_dump() for h in history])
    recommend(evaluation, history, CFG, 1, PROMPT)
    assert (evaluation.model_dump(), [h.model_dump() for h in history]) == before


# --- tool mapping and ranking ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "tools"),
    [
        ("object", ["make_mask", "inpaint"]),
        ("spatial", ["depth_edit"]),
        ("style", ["canny_edit"]),
        ("prompt", ["rewrite_prompt", "generate"]),
        ("semantic", ["rewrite_prompt", "generate"]),
    ],
)
def test_tool_per_category(category, tools):
    r = rec(ev(0.4, iss(category, 0.7, "the fox", FOX_BOX)))
    assert tools_of(r) == tools
    assert CATEGORY_TOOL[category] == tools[-1] or category in ("prompt", "semantic")


@pytest.mark.parametrize(
    ("target", "box", "mask_args"),
    [
        ("the fox", FOX_BOX, {"target": "the fox", "box": FOX_BOX}),
        ("the fox", None, {"target": "the fox"}),
        (None, FOX_BOX, {"box": FOX_BOX}),
        (None, None, {"target": "no fox on the roof"}),
    ],
)
def test_object_issue_puts_target_and_box_in_mask_args(target, box, mask_args):
    r = rec(ev(0.4, Issue(category="object", severity=0.7, description="no fox on the roof", target=target, box=box)))
    mask, inpaint = r.ranked
    assert mask.args == mask_args
    assert inpaint.args["prompt"] == PROMPT
    validate_arguments("make_mask", mask.args)


def test_ranking_order_ties_and_reasons():
    issues = [
        iss("style", 0.5, desc="too dark"),
        iss("object", 0.9, "the fox", desc="fox missing"),
        iss("spatial", 0.6, desc="car too small"),
        iss("object", 0.6, "the car", desc="car is red"),
        iss("object", 0.6, "the bird", desc="extra bird"),
    ]
    r = rec(ev(0.3, *issues))
    assert r.strategy == "image_modification"
    got = [(c.tool, c.args.get("target"), c.weight) for c in r.ranked]
    assert got == [
        ("make_mask", "the fox", 0.9),
        ("inpaint", None, 0.9),
        ("make_mask", "the bird", 0.6),  # equal weights: masks/inpaints by target, each mask before its inpaint
        ("inpaint", None, 0.6),
        ("make_mask", "the car", 0.6),
        ("inpaint", None, 0.6),
        ("depth_edit", None, 0.6),
        ("canny_edit", None, 0.4),
    ]
    assert "fox missing" in r.ranked[0].reason and "0.90" in r.ranked[0].reason
    assert "too dark" in r.ranked[-1].reason and "0.40" in r.ranked[-1].reason
    shuffled = issues[:]
    for seed in range(5):
        random.Random(seed).shuffle(shuffled)
        assert rec(ev(0.3, *shuffled)).ranked == r.ranked


def test_prompt_refinement_ranks_rewrite_before_generate_and_focus_names_the_issues():
    r = rec(ev(0.4, iss("prompt", 0.6, desc="roof not mentioned"), iss("semantic", 0.5, desc="fox reads as dog")))
    assert tools_of(r) == ["rewrite_prompt", "generate"]
    assert r.ranked[0].weight == r.ranked[1].weight == pytest.approx(1.2)
    assert "roof not mentioned" in r.ranked[0].args["focus"] and "fox reads as dog" in r.ranked[0].args["focus"]


@pytest.mark.parametrize(
    ("failures", "top", "reason_mark"),
    [(0, "make_mask", None), (1, "make_mask", "demoted: failed 1x"), (2, "canny_edit", "demoted: failed 2x")],
)
def test_failed_tools_are_demoted_not_dropped(failures, top, reason_mark):
    history = [entry("inpaint", "the fox", step=i) for i in range(failures)]
    r = rec(ev(0.5, iss("object", 0.9, "the fox"), iss("style", 0.5)), history)
    assert r.ranked[0].tool == top
    assert {"make_mask", "inpaint", "canny_edit"} == set(tools_of(r))
    inpaint = next(c for c in r.ranked if c.tool == "inpaint")
    assert inpaint.weight == pytest.approx(0.9 * 0.5**failures)
    assert (reason_mark in inpaint.reason) if reason_mark else ("demoted" not in inpaint.reason)


def test_success_on_the_same_target_does_not_demote():
    history = [entry("inpaint", "the fox", before=0.4, after=0.6)]
    assert rec(ev(0.5, iss("object", 0.9, "the fox")), history).ranked[1].weight == pytest.approx(0.9)


# --- weights -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        ({}, "hybrid"),  # style 0.5 * 0.8 == prompt 0.4 * 1.0
        ({"style": 1.0}, "image_modification"),
        ({"prompt": 1.5}, "prompt_refinement"),
        ({"style": 0.0}, "prompt_refinement"),
    ],
)
def test_weights_respond_to_config(weights, expected):
    r = rec(ev(0.5, iss("style", 0.5), iss("prompt", 0.4)), category_weights=weights)
    assert r.strategy == expected


def test_weigh_per_category_and_side():
    w = weigh(ev(0.5, iss("object", 0.5, "a"), iss("object", 0.25, "b"), iss("semantic", 0.5), iss("style", 1.0)), CFG)
    assert w.by_category == {"object": 0.75, "spatial": 0.0, "style": 0.8, "prompt": 0.0, "semantic": 0.6}
    assert (w.prompt_side, w.image_side) == (pytest.approx(0.6), pytest.approx(1.55))


def test_partial_weight_override_keeps_other_defaults():
    assert SelectorConfig(category_weights={"style": 2.0}).category_weights == {
        "object": 1.0,
        "spatial": 1.0,
        "style": 2.0,
        "prompt": 1.0,
        "semantic": 1.2,
    }


@pytest.mark.parametrize(
    "cfg",
    [
        {"category_weights": {"colour": 1.0}},
        {"category_weights": {"style": -1.0}},
        {"safe_ranges": {"canny_edit": {"strength": (0.9, 0.3)}}},
        {"safe_ranges": {"canny_edit": {"strength": (0.01, 0.9)}}},  # below the contract's minimum
        {"safe_ranges": {"canny_edit": {"strenght": (0.3, 0.9)}}},
        {"safe_ranges": {"upscale": {"factor": (1, 4)}}},
        {"threshold": 1.5},
        {"no_such_knob": 1},
    ],
)
def test_bad_config_is_rejected(cfg):
    with pytest.raises(ValidationError):
        SelectorConfig(**cfg)


# --- schedules -----------------------------------------------------------------------------------------------------


def _contract_range(tool: str, param: str) -> tuple[float, float]:
    prop = get_contract(tool).parameters["properties"][param]
    return prop["minimum"], prop["maximum"]


@pytest.mark.parametrize(
    ("schedule", "tool", "param"),
    [
        (scheduled_guidance, "generate", "guidance"),
        (scheduled_guidance, "canny_edit", "guidance"),
        (scheduled_guidance, "depth_edit", "guidance"),
        (scheduled_guidance, "inpaint", "guidance"),
        (scheduled_strength, "canny_edit", "strength"),
        (scheduled_strength, "depth_edit", "strength"),
    ],
)
def test_schedules_decrease_and_stay_within_bounds(schedule, tool, param):
    values = [schedule(tool, i, CFG) for i in range(40)]
    assert values[1] < values[0]
    assert all(b <= a for a, b in itertools.pairwise(values))
    lo, hi = CFG.safe_ranges[tool][param]
    clo, chi = _contract_range(tool, param)
    assert all(clo <= lo <= v <= hi <= chi for v in values)
    assert values[-1] == lo  # the floor is reached, never crossed


@pytest.mark.parametrize(("tool", "expected"), [("make_mask", None), ("rewrite_prompt", None), ("generate", None)])
def test_strength_only_for_edit_tools(tool, expected):
    assert scheduled_strength(tool, 0, CFG) is expected


def test_recommendation_guidance_and_strength_diminish_with_iteration():
    evaluation = ev(0.3, iss("style", 0.9))
    early, late = rec(evaluation, iteration=0), rec(evaluation, iteration=4)
    assert early.guidance_scale == 30.0 and early.strength == 0.85
    assert late.guidance_scale < early.guidance_scale and late.strength < early.strength
    assert late.ranked[0].args["strength"] == late.strength


# --- convergence and stopping ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "plateau"),
    [
        ([], False),
        ([0.5], False),
        ([0.5, 0.5, 0.5], False),  # a window of 3 needs a score before it
        ([0.5, 0.5, 0.5, 0.5], True),
        ([0.5, 0.6, 0.6, 0.6], False),
        ([0.5, 0.5, 0.505, 0.51], True),  # a gain of exactly epsilon is no gain
        ([0.5, 0.5, 0.5, 0.52], False),
        ([0.6, 0.4, 0.45, 0.5], True),  # recovering below the best so far
        ([0.4, 0.5, 0.6, 0.7, 0.7, 0.7], False),
        ([0.4, 0.5, 0.7, 0.7, 0.7, 0.7], True),
    ],
)
def test_plateau(scores, plateau):
    c = convergence(scores, CFG)
    assert c.plateau is plateau
    assert c.best == (max(scores) if scores else None)


def test_convergence_from_history_skips_vetoed_and_unscored_entries():
    history = [
        entry("generate", PROMPT, before=0.3, after=0.5, step=1),
        entry("canny_edit", PROMPT, before=None, after=None, vetoed=True, step=2),
        entry("rewrite_prompt", PROMPT, before=0.5, after=None, step=3),
        entry("generate", "p2", before=0.5, after=0.45, rolled_back=True, step=4),
    ]
    c = convergence(history, CFG)
    assert (c.scores, c.best, c.last_delta, c.plateau) == ([0.3, 0.5, 0.45], 0.5, pytest.approx(-0.05), False)


FLAT = [entry("canny_edit", f"p{i}", before=0.5, after=0.5, step=i) for i in range(4)]


@pytest.mark.parametrize(
    ("score", "history", "budget", "cfg", "reason"),
    [
        pytest.param(0.85, [], BudgetState(), {}, "threshold", id="threshold"),
        pytest.param(0.8, [], BudgetState(), {}, "threshold", id="threshold-boundary"),
        pytest.param(
            0.9, FLAT, BudgetState(iteration=8, vlm_calls=99, max_vlm_calls=1), {}, "threshold", id="success-first"
        ),
        pytest.param(0.5, [], BudgetState(iteration=8), {}, "iteration_limit", id="config-iteration-limit"),
        pytest.param(0.5, [], BudgetState(iteration=2, max_iterations=2), {}, "iteration_limit", id="budget-limit"),
        pytest.param(0.5, [], BudgetState(vlm_calls=10, max_vlm_calls=10), {}, "vlm_budget", id="vlm"),
        pytest.param(0.5, [], BudgetState(vlm_calls=5), {"max_vlm_calls": 5}, "vlm_budget", id="vlm-from-config"),
        pytest.param(0.5, [], BudgetState(gpu_seconds=600, max_gpu_seconds=600), {}, "gpu_budget", id="gpu"),
        pytest.param(0.5, FLAT, BudgetState(iteration=4), {}, "plateau", id="plateau"),
        pytest.param(0.5, [], BudgetState(iteration=7, vlm_calls=9, max_vlm_calls=10), {}, "continue", id="continue"),
        pytest.param(0.5, FLAT, BudgetState(), {"plateau_window": 5}, "continue", id="window-not-full"),
    ],
)
def test_should_stop(score, history, budget, cfg, reason):
    decision = should_stop(score, history, SelectorConfig(**cfg), budget)
    assert decision.reason == reason
    assert decision.stop is (reason != "continue")
    assert decision.detail


def test_stop_detail_is_human_readable():
    assert should_stop(0.85, [], CFG, BudgetState()).detail == "score 0.85 >= 0.80"


# --- the veto ------------------------------------------------------------------------------------------------------


def call(name: str, **args) -> ToolCall:
    return ToolCall(name=name, args=args)


AFTER_REWRITE = [entry("rewrite_prompt", PROMPT, before=0.5, after=None)]


def case(id: str, proposed: ToolCall, recommendation: Recommendation, kind: str | None, history=(), budget=None, **cfg):
    return pytest.param(proposed, recommendation, list(history), budget or BudgetState(), cfg, kind, id=id)


@pytest.mark.parametrize(
    ("proposed", "recommendation", "history", "budget", "cfg", "kind"),
    [
        case("unknown-tool", call("upscale", prompt="x"), REC_IMG, "unknown_tool"),
        case("out-of-contract", call("canny_edit", prompt=PROMPT, strength=1.5), REC_IMG, "invalid_arguments"),
        case("missing-prompt", call("generate"), REC_PROMPT, "invalid_arguments"),
        case("extra-argument", call("inpaint", prompt="x", target="the fox"), REC_IMG, "invalid_arguments"),
        case(
            "canny-thresholds-reversed",
            call("canny_edit", prompt="x", low_threshold=200, high_threshold=100),
            REC_IMG,
            "invalid_arguments",
        ),
        case("generate-vs-image-modification", call("generate", prompt="x"), REC_IMG, "contradicts_strategy"),
        case("unranked-tool", call("depth_edit", prompt="x"), REC_IMG, "contradicts_strategy"),
        case("within-margin-boundary", call("canny_edit", prompt="x"), REC_IMG, None),  # 0.9 - 0.4 == margin
        case("outside-margin", call("canny_edit", prompt="x"), REC_IMG, "contradicts_strategy", veto_margin=0.49),
        case("wide-margin", call("generate", prompt="x"), REC_IMG, None, veto_margin=1.0),
        case("top-choice", call("make_mask", target="the fox"), REC_IMG, None),
        case("inpaint", call("inpaint", prompt="x"), REC_IMG, None),
        case("generate-in-refinement", call("generate", prompt="x"), REC_PROMPT, None),
        case("generate-in-hybrid-without-rewrite", call("generate", prompt="x"), REC_HYBRID, "contradicts_strategy"),
        case("generate-after-rewrite-in-hybrid", call("generate", prompt="x"), REC_HYBRID, None, AFTER_REWRITE),
        case(
            "generate-after-rewrite-in-image-modification",
            call("generate", prompt="x"),
            REC_IMG,
            "contradicts_strategy",
            AFTER_REWRITE,
        ),
        case("after-stop", call("rewrite_prompt"), REC_STOP, "contradicts_strategy"),
        case("repeat", call("canny_edit", prompt=PROMPT), REC_IMG, "repeated_failure", [entry("canny_edit", PROMPT)]),
        case(
            "vlm", call("generate", prompt="x"), REC_PROMPT, "budget", budget=BudgetState(vlm_calls=3, max_vlm_calls=3)
        ),
        case(
            "vlm-from-config",
            call("rewrite_prompt"),
            REC_PROMPT,
            "budget",
            budget=BudgetState(vlm_calls=4),
            max_vlm_calls=4,
        ),
        case(
            "gpu",
            call("inpaint", prompt="x"),
            REC_IMG,
            "budget",
            budget=BudgetState(gpu_seconds=570, max_gpu_seconds=600),
        ),
        case(
            "gpu-just-enough",
            call("inpaint", prompt="x"),
            REC_IMG,
            None,
            budget=BudgetState(gpu_seconds=560, max_gpu_seconds=600),
        ),
        case(
            "mask-needs-no-vlm",
            call("make_mask", target="the fox"),
            REC_IMG,
            None,
            budget=BudgetState(vlm_calls=9, max_vlm_calls=9),
        ),
        case(
            "rewrite-needs-no-gpu",
            call("rewrite_prompt"),
            REC_PROMPT,
            None,
            budget=BudgetState(gpu_seconds=9, max_gpu_seconds=9),
        ),
    ],
)
def test_review_veto_kinds(proposed, recommendation, history, budget, cfg, kind):
    verdict = review(proposed, recommendation, history, budget, SelectorConfig(**cfg), prompt=PROMPT)
    assert verdict.kind == kind
    assert verdict.accepted is (kind is None)
    assert (verdict.reason is None) is (kind is None)
    if kind in (None, "contradicts_strategy", "repeated_failure", "budget"):
        assert verdict.call.args == validate_arguments(proposed.name, verdict.call.args)  # complete and valid
    else:
        assert verdict.call == proposed


@pytest.mark.parametrize(
    ("tool", "args", "clamps", "expected"),
    [
        ("canny_edit", {"strength": 0.99}, ["canny_edit.strength 0.99->0.95"], {"strength": 0.95}),
        ("canny_edit", {"strength": 0.1}, ["canny_edit.strength 0.1->0.3"], {"strength": 0.3}),
        (
            "canny_edit",
            {"strength": 1, "guidance": 50},
            ["canny_edit.guidance 50->40.0", "canny_edit.strength 1->0.95"],
            {"strength": 0.95, "guidance": 40.0},
        ),  # JSON 1 for a number stays a number
        ("depth_edit", {"guidance": 25.0}, ["depth_edit.guidance 25.0->20.0"], {"guidance": 20.0}),
        ("generate", {"guidance": 12}, ["generate.guidance 12->7.0"], {"guidance": 7.0}),
        ("make_mask", {"dilate": 100}, ["make_mask.dilate 100->64"], {"dilate": 64}),
        ("make_mask", {"threshold": 0.05}, ["make_mask.threshold 0.05->0.2"], {"threshold": 0.2}),
        ("depth_edit", {"strength": 0.5}, [], {"strength": 0.5}),
    ],
)
def test_out_of_safe_range_arguments_are_clamped_and_recorded(tool, args, clamps, expected):
    if tool != "make_mask":
        args = {"prompt": PROMPT, **args}
    verdict = review(ToolCall(name=tool, args=args), REC_IMG, [], BudgetState(), SelectorConfig(veto_margin=100))
    assert verdict.accepted and verdict.kind is None
    assert verdict.clamps == clamps
    for key, value in expected.items():
        assert verdict.call.args[key] == value
        if get_contract(tool).parameters["properties"][key]["type"] == "integer":
            assert type(verdict.call.args[key]) is int


@pytest.mark.parametrize("tool", TOOL_NAMES)
def test_safe_ranges_lie_inside_contracts_and_contain_the_defaults(tool):
    """So a call with only the required arguments is never clamped."""
    for param, (lo, hi) in CFG.safe_ranges.get(tool, {}).items():
        clo, chi = _contract_range(tool, param)
        assert clo <= lo <= hi <= chi
    required = {"prompt": PROMPT} if tool in selector.PROMPT_ARG_TOOLS else {}
    minimal = validate_arguments(tool, {"instruction": "make it blue"} if tool == "edit" else required)
    assert clamp_arguments(tool, minimal, CFG) == (minimal, [])


@pytest.mark.parametrize(
    ("before", "after", "rolled_back", "vetoed", "repeated"),
    [
        (0.5, 0.45, False, False, True),
        (0.5, 0.5, False, False, True),  # an unchanged score did not rise
        (0.5, 0.6, False, False, False),
        (0.5, 0.6, True, False, True),  # rolled back counts as failed whatever the score
        (0.5, 0.4, False, True, False),  # a vetoed entry never ran
        (None, None, False, False, False),  # not scored: unknown, not failed
        (0.5, None, False, False, False),
    ],
)
def test_repeated_failure_only_when_the_score_did_not_rise(before, after, rolled_back, vetoed, repeated):
    history = [entry("canny_edit", PROMPT, before=before, after=after, rolled_back=rolled_back, vetoed=vetoed)]
    verdict = review(call("canny_edit", prompt=PROMPT), REC_IMG, history, BudgetState(), CFG)
    assert (verdict.kind == "repeated_failure") is repeated


MARGIN = SelectorConfig(veto_margin=100)  # isolates the repeated-failure check from the strategy check


@pytest.mark.parametrize(
    ("proposed", "history", "prompt", "repeated"),
    [
        (
            call("canny_edit", prompt="  A red FOX sitting on the roof of a blue car "),
            [entry("canny_edit", PROMPT)],
            None,
            True,
        ),
        (call("canny_edit", prompt="a fox on a car, watercolour"), [entry("canny_edit", PROMPT)], None, False),
        (call("depth_edit", prompt=PROMPT), [entry("canny_edit", PROMPT)], None, False),  # other tool
        (
            call("canny_edit", prompt=PROMPT),
            [HistoryEntry(step=1, tool="canny_edit", args={"prompt": PROMPT}, score_before=0.5, score_after=0.4)],
            None,
            True,
        ),
        (call("make_mask", target="The fox"), [entry("make_mask", "the fox", rolled_back=True)], None, True),
        (call("make_mask", target="the car"), [entry("make_mask", "the fox", rolled_back=True)], None, False),
        (
            call("inpaint", prompt=PROMPT),
            [
                entry("make_mask", "the fox", None, None),
                entry("inpaint", "the fox"),
                entry("make_mask", "the fox", None, None),
            ],
            None,
            True,
        ),
        (
            call("inpaint", prompt=PROMPT),
            [
                entry("make_mask", "the fox", None, None),
                entry("inpaint", "the fox"),
                entry("make_mask", "the car", None, None),
            ],
            None,
            False,
        ),
        (call("inpaint", prompt=PROMPT), [entry("inpaint", "the fox")], None, True),  # mask from the recommendation
        (call("rewrite_prompt", focus="x"), [entry("rewrite_prompt", PROMPT)], PROMPT, True),
        (call("rewrite_prompt", focus="x"), [entry("rewrite_prompt", PROMPT)], "a fox on a car", False),
    ],
)
def test_repeated_failure_matches_tool_and_target(proposed, history, prompt, repeated):
    verdict = review(proposed, REC_IMG, history, BudgetState(), MARGIN, prompt=prompt)
    assert (verdict.kind == "repeated_failure") is repeated, verdict.reason
    assert verdict.accepted is not repeated


@pytest.mark.parametrize(
    ("tool", "args", "history", "expected"),
    [
        ("make_mask", {"target": "the fox", "box": FOX_BOX}, [], "the fox"),
        ("make_mask", {"box": FOX_BOX}, [], f"box {FOX_BOX}"),
        ("inpaint", {"prompt": PROMPT}, [entry("make_mask", "the dog", None, None)], "the dog"),
        ("inpaint", {"prompt": PROMPT}, [], "the fox"),  # REC_IMG's mask
        ("generate", {"prompt": "p"}, [], "p"),
        ("rewrite_prompt", {"focus": "f"}, [], PROMPT),
    ],
)
def test_call_target(tool, args, history, expected):
    assert call_target(tool, args, history, REC_IMG, PROMPT) == expected
    assert review(ToolCall(name=tool, args=args), REC_IMG, history, BudgetState(), MARGIN, prompt=PROMPT).target == (
        expected
    )


# --- fallback ------------------------------------------------------------------------------------------------------


FALLBACK_CASES = [
    pytest.param(ev(0.5, iss("object", 0.9, "the fox", FOX_BOX)), "make_mask", id="object"),
    pytest.param(ev(0.5, iss("object", 0.9, desc="a fox is missing")), "make_mask", id="object-without-target"),
    pytest.param(ev(0.5, iss("spatial", 0.9)), "depth_edit", id="spatial"),
    pytest.param(ev(0.5, iss("style", 0.9)), "canny_edit", id="style"),
    pytest.param(ev(0.5, iss("prompt", 0.9)), "rewrite_prompt", id="prompt"),
    pytest.param(ev(0.5, iss("semantic", 0.9, desc="x" * 3000)), "rewrite_prompt", id="long-description"),
    pytest.param(ev(0.5, iss("prompt", 0.5), iss("object", 0.5, "a")), "rewrite_prompt", id="hybrid"),
    pytest.param(ev(0.5), "rewrite_prompt", id="no-issues"),
]


@pytest.mark.parametrize(("evaluation", "tool"), FALLBACK_CASES)
@pytest.mark.parametrize("iteration", [0, 3, 30])
def test_fallback_call_is_complete_valid_and_passes_review(evaluation, tool, iteration):
    r = recommend(evaluation, [], CFG, iteration, PROMPT)
    fallback = fallback_call(r)
    assert fallback.name == tool == r.ranked[0].tool
    assert validate_arguments(fallback.name, fallback.args) == fallback.args
    verdict = review(fallback, r, [], BudgetState(iteration=iteration), CFG, prompt=PROMPT)
    assert verdict.accepted and verdict.clamps == []


EV_HEAVY_SPATIAL = ev(0.5, iss("spatial", 1.0), iss("object", 0.3, "the fox"))
EV_REFINE = ev(0.5, iss("prompt", 0.8), iss("object", 0.3, "the car"))
EV_HYBRID = ev(0.5, iss("prompt", 0.8), iss("spatial", 0.5), iss("style", 0.375))


@pytest.mark.parametrize(
    ("evaluation", "last", "target", "order"),
    [
        pytest.param(EV_IMG, "make_mask", "the fox", ["inpaint", "canny_edit", "make_mask"], id="inpaint-after-mask"),
        pytest.param(EV_IMG, "make_mask", "the car", ["make_mask", "inpaint", "canny_edit"], id="other-mask"),
        pytest.param(EV_IMG, "inpaint", "the fox", ["make_mask", "inpaint", "canny_edit"], id="after-inpaint"),
        pytest.param(EV_HEAVY_SPATIAL, "make_mask", "the fox", ["inpaint", "depth_edit", "make_mask"], id="heavier"),
        pytest.param(
            EV_REFINE,
            "rewrite_prompt",
            PROMPT,
            ["generate", "make_mask", "inpaint", "rewrite_prompt"],
            id="generate-after-rewrite",
        ),  # fmt: skip
        pytest.param(
            EV_HYBRID,
            "rewrite_prompt",
            PROMPT,
            ["depth_edit", "canny_edit", "rewrite_prompt"],
            id="hybrid-edit-after-rewrite",
        ),  # fmt: skip
    ],
)
def test_preparatory_call_just_run_sinks_and_its_follow_up_goes_first(evaluation, last, target, order):
    history = [entry("generate", PROMPT, 0.3, 0.5, step=1), entry(last, target, None, None, step=2)]
    r = recommend(evaluation, history, CFG, 1, PROMPT)
    assert tools_of(r) == order
    fallback = fallback_call(r, prompt="a rewritten prompt")
    assert fallback.name == order[0]
    if "prompt" in fallback.args:
        assert fallback.args["prompt"] == "a rewritten prompt"
    assert review(fallback, r, history, BudgetState(), CFG, prompt=PROMPT).accepted


def test_fallback_for_stop_is_a_programming_error():
    with pytest.raises(ValueError, match="stop"):
        fallback_call(REC_STOP)


# --- plain data and purity -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "decision",
    [
        REC_IMG,
        review(call("canny_edit", prompt=PROMPT, strength=1.0), REC_IMG, [], BudgetState(), CFG),
        review(call("generate", prompt="x"), REC_IMG, [], BudgetState(), CFG),
        should_stop(0.5, FLAT, CFG, BudgetState()),
        convergence([0.1, 0.2], CFG),
        weigh(ev(0.5, iss("style", 0.5)), CFG),
        CFG,
        BudgetState(iteration=1, vlm_calls=2, gpu_seconds=3.5, max_vlm_calls=10),
    ],
    ids=lambda d: type(d).__name__,
)
def test_every_decision_round_trips_as_json(decision):
    assert type(decision).model_validate_json(decision.model_dump_json()) == decision
    assert isinstance(decision, Recommendation | Verdict | StopDecision | Convergence) or decision.model_dump()


ALLOWED_IMPORTS = {
    "__future__",
    "math",
    "typing",
    "collections.abc",
    "pydantic",
    "emage_agent.core.evaluation",
    "emage_agent.core.planning",
    "emage_agent.core.tools",
    "emage_agent.core.errors",
    "emage_agent.strategy.config",
    "emage_agent.strategy.veto",
    "emage_agent.strategy",
    "emage_agent.strategy.selector",
    "emage_agent.strategy.threshold",
}


@pytest.mark.parametrize("module", [strategy, selector, selector_config, veto, threshold], ids=lambda m: m.__name__)
def test_selector_imports_nothing_that_does_io(module):
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    module_level = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            module_level |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module_level.add(node.module)
    assert module_level <= ALLOWED_IMPORTS
    nested = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) and n not in tree.body]
    assert nested == []  # no import hidden inside a function
    io_calls = {"open", "print", "input", "exec", "eval", "__import__"}
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not called & io_calls


@pytest.mark.parametrize(
    ("scores", "expected", "moves"),
    [
        ([0.5], 0.8, []),
        ([0.5, 0.6, 0.7], 0.8, []),  # rising: the bar stays
        ([0.5, 0.5, 0.5], 0.75, [2]),
        ([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 0.6, [2, 3, 4, 5]),  # never below the floor
        ([0.5, 0.55, 0.5, 0.9], 0.8, []),
    ],
)
def test_adaptive_threshold_follows_the_trace(scores: list[float], expected: float, moves: list[int]) -> None:
    from emage_agent.strategy.threshold import adaptive_threshold

    config = SelectorConfig(threshold=0.8, adaptive_threshold=True, plateau_epsilon=0.01)
    trace = adaptive_threshold(scores, config)
    assert trace.threshold == pytest.approx(expected)
    assert [a.after_score for a in trace.adjustments] == moves


def test_should_stop_names_the_adaptive_threshold_only_when_it_was_lowered() -> None:
    budget = BudgetState(iteration=1, max_iterations=5)
    flat = [HistoryEntry(step=i, tool="canny_edit", score_before=0.7, score_after=0.7) for i in range(2, 4)]
    on = SelectorConfig(threshold=0.8, adaptive_threshold=True, threshold_relax_per_iteration=0.0)
    off = on.model_copy(update={"adaptive_threshold": False})
    stop = should_stop(0.76, flat, on, budget)
    assert (stop.stop, stop.reason, stop.threshold) == (True, "adaptive_threshold", 0.75)
    assert should_stop(0.76, flat, off, budget).stop is False
    assert should_stop(0.85, flat, on, budget).reason == "adaptive_threshold"
    assert should_stop(0.85, [], on, budget).reason == "threshold"
