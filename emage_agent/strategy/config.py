"""The selector's knobs and the budget it decides against: plain pydantic data, no decisions.

``SelectorConfig`` holds every tunable of the strategy selector (``selector``) and the veto (``veto``);
its defaults are the tuned policy. ``BudgetState`` is what a session has spent so far. Both are shared
by the two deciding modules, together with the float tolerance and number formatting of their messages.
The only file read here is the cached tool contracts, through ``contracts``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from emage_agent.core.evaluation import ISSUE_CATEGORIES
from emage_agent.core.tools import TOOL_NAMES, get_contract

TOL = 1e-9  # float noise allowance for the boundary comparisons (score == threshold, equal sides)

DEFAULT_WEIGHTS: dict[str, float] = {"object": 1.0, "spatial": 1.0, "style": 0.8, "prompt": 1.0, "semantic": 1.2}
DEFAULT_GUIDANCE: dict[str, float] = {  # the model cards' values, as the contracts' defaults state them
    name: float(value) for name in TOOL_NAMES if (value := get_contract(name).defaults().get("guidance")) is not None
}
DEFAULT_SAFE_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "generate": {"guidance": (1.5, 7.0)},
    "canny_edit": {"strength": (0.3, 0.95), "guidance": (10.0, 40.0)},
    "depth_edit": {"strength": (0.3, 0.95), "guidance": (3.0, 20.0)},
    "inpaint": {"guidance": (10.0, 40.0)},
    "edit": {"guidance": (1.5, 5.0)},
    "make_mask": {"threshold": (0.2, 0.7), "dilate": (0, 64)},
}
DEFAULT_TOOL_COSTS: dict[str, tuple[int, float]] = {
    "generate": (1, 30.0),
    "canny_edit": (1, 30.0),
    "depth_edit": (1, 35.0),
    "inpaint": (1, 40.0),
    "edit": (1, 35.0),
    "make_mask": (0, 2.0),
    "rewrite_prompt": (1, 0.0),
}


def fmt_num(x: float) -> str:
    """A number for a reason or detail string: two decimals when exact, else four significant digits."""
    return f"{x:.2f}" if round(x, 2) == x else f"{x:.4g}"


class SelectorConfig(BaseModel):
    """Every knob of the selector; the defaults are the tuned policy, tests and users may override any."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(0.8, ge=0.0, le=1.0)
    # Later iterations buy less: accept a slightly lower score as they go (0 disables).
    threshold_relax_per_iteration: float = Field(0.01, ge=0.0)
    threshold_max_relax: float = Field(0.05, ge=0.0)
    category_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    veto_margin: float = Field(0.5, ge=0.0)
    failure_demotion: float = Field(0.5, ge=0.0, le=1.0)  # weight factor per earlier failure on the same target
    plateau_window: int = Field(3, ge=1)
    plateau_epsilon: float = Field(0.01, ge=0.0)
    # Opt-in: lower the stop threshold while the scores plateau (see ``threshold``); off keeps it exact.
    adaptive_threshold: bool = False
    adaptive_floor: float = Field(0.6, ge=0.0, le=1.0)
    adaptive_step: float = Field(0.05, gt=0.0, le=1.0)
    adaptive_window: int = Field(2, ge=1)  # scores without gain that count as a plateau for the bar
    guidance_base: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_GUIDANCE))
    guidance_decay: float = Field(0.93, gt=0.0, le=1.0)  # multiplied in once per iteration
    strength_base: float = Field(0.85, gt=0.0, le=1.0)
    strength_decay: float = Field(0.9, gt=0.0, le=1.0)
    max_iterations: int = Field(8, ge=0)
    max_vlm_calls: int | None = Field(None, ge=0)
    max_gpu_seconds: float | None = Field(None, ge=0.0)
    # Safe ranges lie inside the contract bounds; a value outside is clamped (and recorded), not vetoed.
    safe_ranges: dict[str, dict[str, tuple[float, float]]] = Field(
        default_factory=lambda: {t: dict(p) for t, p in DEFAULT_SAFE_RANGES.items()}
    )
    # Per call: (VLM calls, GPU seconds). Every image tool is followed by an evaluation; seconds are estimates.
    tool_costs: dict[str, tuple[int, float]] = Field(default_factory=lambda: dict(DEFAULT_TOOL_COSTS))
    # The instruction edit (FLUX.1 Kontext) is optional: the agent turns it on when its model is configured.
    # On, it takes colour, attribute, style and small object issues; objects whose box covers more than
    # ``edit_max_area`` of the image still go to make_mask + inpaint, spatial issues to depth_edit.
    edit_tool: bool = False
    edit_max_area: float = Field(0.35, gt=0.0, le=1.0)

    @field_validator("category_weights", mode="before")
    @classmethod
    def _complete_weights(cls, value: dict[str, float] | None) -> dict[str, float]:
        """A partial override keeps the other defaults, so ``{"style": 2}`` is enough to favour style."""
        merged = {**DEFAULT_WEIGHTS, **(value or {})}
        unknown = sorted(set(merged) - set(ISSUE_CATEGORIES))
        if unknown or any(w < 0 for w in merged.values()):
            raise ValueError(f"weights must be >= 0 for the categories {ISSUE_CATEGORIES}; got {unknown or merged}")
        return merged

    @field_validator("safe_ranges", mode="after")
    @classmethod
    def _ordered_ranges(cls, value: dict[str, dict[str, tuple[float, float]]]) -> dict:
        """Overrides are per tool (``{"inpaint": {}}`` removes its ranges); each range lies inside the contract."""
        merged = {tool: dict(params) for tool, params in {**DEFAULT_SAFE_RANGES, **value}.items()}
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

    def usage(self, config: SelectorConfig) -> dict[str, tuple[float, float | None]]:
        """``(used, limit)`` per resource, keyed by its unit in words; ``None``: no limit here nor in ``config``."""

        def limit(own: float | None, fallback: float | None) -> float | None:
            return own if own is not None else fallback

        return {
            "iterations": (self.iteration, limit(self.max_iterations, config.max_iterations)),
            "VLM calls": (self.vlm_calls, limit(self.max_vlm_calls, config.max_vlm_calls)),
            "GPU seconds": (self.gpu_seconds, limit(self.max_gpu_seconds, config.max_gpu_seconds)),
        }
