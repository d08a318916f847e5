"""Plain data that flows between the evaluator, the selector, the planner and the loop.

Kept apart from every implementation so that none of them imports another's internals:
the selector produces a ``Recommendation`` and judges ``ToolCall``s; the planner turns a
``PlanningContext`` into a ``PlanResult``; the loop records ``HistoryEntry`` items.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from emage_agent.core.evaluation import Evaluation

Strategy = Literal["stop", "prompt_refinement", "image_modification", "hybrid"]


class ToolCall(BaseModel):
    """One proposed tool call. ``call_id`` echoes the model's function-call id, if any."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    call_id: str | None = None
    target: str | None = None  # what the call aims at (set by the selector), for repeat detection


class ToolChoice(BaseModel):
    """A tool the selector ranks, with its weight, why, and suggested arguments."""

    tool: str
    weight: float
    reason: str
    args: dict[str, Any] = Field(default_factory=dict)


class Recommendation(BaseModel):
    """The selector's view of what to do next: a strategy and ranked tools."""

    strategy: Strategy
    reason: str
    prompt_side: float = 0.0
    image_side: float = 0.0
    ranked: list[ToolChoice] = Field(default_factory=list)
    guidance_scale: float | None = None
    strength: float | None = None

    @property
    def allowed_tools(self) -> list[str]:
        return [c.tool for c in self.ranked]


class HistoryEntry(BaseModel):
    """What was tried and what it scored: the compact history the planner and selector see."""

    step: int
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    target: str | None = None
    score_before: float | None = None
    score_after: float | None = None
    rolled_back: bool = False
    vetoed: bool = False


class PlanError(BaseModel):
    """A malformed planner answer, phrased so it can be sent back to the model."""

    kind: Literal["unknown_tool", "invalid_arguments", "no_call", "too_many_calls", "unreadable"]
    message: str
    tool: str | None = None


class PlanResult(BaseModel):
    """The planner's proposed calls (possibly none) and any structured error about its answer."""

    calls: list[ToolCall] = Field(default_factory=list)
    errors: list[PlanError] = Field(default_factory=list)
    text: str = ""


class PlanningContext(BaseModel):
    """Everything the planner is shown for one decision. ``image_png`` is the current image."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    prompt: str
    original_prompt: str
    evaluation: Evaluation
    recommendation: Recommendation
    history: list[HistoryEntry] = Field(default_factory=list)
    image_png: bytes | None = None
    allowed_tools: list[str] = Field(default_factory=list)
    user_feedback: list[str] = Field(default_factory=list)
    max_calls: int = 2


class ToolReport(BaseModel):
    """A tool's result sent back to the planner as a function response."""

    call: ToolCall
    ok: bool
    summary: str
    artifact_id: str | None = None
    image_png: bytes | None = None
