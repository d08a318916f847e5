"""The judgement of one image against its prompt, shared by every part of EMage.

Field names are a public format: the session store, the report, the MCP tools and
other agent systems read them, so they do not change.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

IssueCategory = Literal["object", "spatial", "style", "prompt", "semantic"]
ISSUE_CATEGORIES: tuple[str, ...] = ("object", "spatial", "style", "prompt", "semantic")
# Bounds on model text kept in sessions, reports and UIs (a judge once sent a 30 MB summary).
MAX_SUMMARY_CHARS, MAX_DESCRIPTION_CHARS, MAX_TARGET_CHARS, MAX_ISSUES = 2000, 1000, 200, 24
PROMPT_SIDE: frozenset[str] = frozenset({"prompt", "semantic"})
IMAGE_SIDE: frozenset[str] = frozenset({"object", "spatial", "style"})


def cut(text: Any, limit: int) -> Any:
    """``text`` cut to ``limit`` characters, saying so; anything else as it came (pydantic judges it)."""
    if not isinstance(text, str) or len(text) <= limit:
        return text
    marker = f" [cut: {len(text)} characters]"
    return text[: limit - len(marker)] + marker


class Issue(BaseModel):
    """One thing wrong with the image. ``box`` is ``[ymin, xmin, ymax, xmax]`` in 0..1000."""

    category: IssueCategory
    severity: float = Field(ge=0.0, le=1.0)
    description: str
    target: str | None = None
    box: list[int] | None = None

    @field_validator("description", mode="before")
    @classmethod
    def _bounded_description(cls, text: Any) -> Any:
        return cut(text, MAX_DESCRIPTION_CHARS)

    @field_validator("target", mode="before")
    @classmethod
    def _bounded_target(cls, text: Any) -> Any:
        return cut(text, MAX_TARGET_CHARS)

    @field_validator("box")
    @classmethod
    def _box_shape(cls, box: list[int] | None) -> list[int] | None:
        if box is None:
            return None
        if len(box) != 4 or not all(0 <= v <= 1000 for v in box):
            raise ValueError("box must be [ymin, xmin, ymax, xmax] with values in 0..1000")
        if box[0] >= box[2] or box[1] >= box[3]:
            raise ValueError("box must have ymin < ymax and xmin < xmax")
        return box


class Evaluation(BaseModel):
    """A satisfaction score in [0, 1], the issues found and a one-sentence summary."""

    satisfaction_score: float = Field(ge=0.0, le=1.0)
    issues: list[Issue] = Field(default_factory=list)
    summary: str = ""
    # Detector verification's changes and the boxes behind them (``verification.Evidence``); empty without one.
    evidence: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("summary", mode="before")
    @classmethod
    def _bounded_summary(cls, text: Any) -> Any:
        return cut(text, MAX_SUMMARY_CHARS)

    @field_validator("issues", mode="before")
    @classmethod
    def _bounded_issues(cls, issues: Any) -> Any:
        return issues[:MAX_ISSUES] if isinstance(issues, list) else issues
