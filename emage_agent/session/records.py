"""The records of the session store: what a step, an artifact, a VLM call and a session are.

Plain pydantic models, shared by the store (``emage_agent.session``), the loop and the report;
import them from ``emage_agent.session``. A step's decision, vetoes and clamps are the typed records
of ``emage_agent.core.decisions``; older sessions' dicts and strings are read into them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from emage_agent.core.decisions import Clamp, Decision, StepKind, Veto
from emage_agent.core.evaluation import Evaluation

Role = Literal["image", "mask", "control"]
Status = Literal["running", "done", "failed", "interrupted"]
ROLE_DIRS: dict[str, str] = {"image": "images", "mask": "masks", "control": "control"}
STATUSES: tuple[str, ...] = ("running", "done", "failed", "interrupted")


class Artifact(BaseModel):
    """A PNG written by a step. ``path`` is relative to the session directory."""

    id: str
    step: int
    role: Role
    path: str
    width: int
    height: int


class StepRecord(BaseModel):
    """One step. ``step``, ``parent`` and ``created_at`` are assigned by ``commit_step``;
    ``score`` defaults to the evaluation's satisfaction score; ``prompt`` to the current prompt."""

    model_config = ConfigDict(extra="forbid")

    step: int | None = None
    parent: int | None = None
    kind: StepKind = "tool"
    tool: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    prompt: str | None = None
    evaluation: Evaluation | None = None
    score: float | None = None
    vetoes: list[Veto] = Field(default_factory=list)
    decision: Decision | None = None
    clamps: list[Clamp] = Field(default_factory=list)
    rolled_back: bool = False
    error: str | None = None
    note: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    tokens: dict[str, int] = Field(default_factory=dict)
    feedback: str | None = None
    created_at: str | None = None
    artifacts: list[Artifact] = Field(default_factory=list)

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, value: Any) -> Any:
        """A kind this version does not know (a newer session's) reads as an ordinary tool step."""
        return value if value in StepKind.__args__ else "tool"  # type: ignore[attr-defined]

    @field_validator("decision", mode="before")
    @classmethod
    def _read_decision(cls, value: Any) -> Decision | None:
        return Decision.read(value)

    @field_validator("clamps", mode="before")
    @classmethod
    def _read_clamps(cls, value: Any) -> list[Clamp]:
        return [Clamp.read(c) for c in value or []]

    @field_serializer("decision")
    def _store_decision(self, value: Decision | None) -> dict[str, Any] | None:
        return value.stored() if value is not None else None

    @field_serializer("clamps")
    def _store_clamps(self, value: list[Clamp]) -> list[dict[str, Any]]:
        return [c.model_dump(mode="json", exclude_none=True) for c in value]

    @property
    def is_extra_candidate(self) -> bool:
        """A second or later candidate of one decision (``--candidates``): not an iteration of its own."""
        return self.kind == "candidate" or bool(self.decision and self.decision.candidate)


class CallRecord(BaseModel):
    """One VLM call (the fields of ``vlm.calls.CallRecord``); keys without a column (``backend``) go to ``extra``."""

    model_config = ConfigDict(extra="allow")

    purpose: str
    model: str | None = None
    latency_s: float | None = None
    attempts: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    ok: bool = True
    error: str | None = None


class SessionInfo(BaseModel):
    """Session-level state, as stored."""

    id: str
    dir: Path
    original_prompt: str
    current_prompt: str
    options: dict[str, Any]
    head_step: int | None
    best_step: int | None
    status: Status
    stopped_because: str | None
    vlm_calls: int
    gpu_seconds: float
    created_at: str
    updated_at: str
    schema_version: int

    @property
    def prompt(self) -> str:
        """The prompt in force now (``current_prompt``)."""
        return self.current_prompt
