"""Progress events: what a running session tells the displays (CLI, chat, MCP progress, web UI).

Each kind is a typed payload, so a display reads ``event.payload.total`` rather than guessing string
keys; ``AgentEvent.data`` is the same payload as plain JSON for displays that print or forward it.
The loop is the only writer.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from emage_agent.core.planning import ToolChoice


class StepStarted(BaseModel):
    """A tool call is about to run."""

    kind: Literal["step"] = "step"
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)


class DiffusionProgress(BaseModel):
    """One denoising step of the running image call."""

    kind: Literal["diffusion"] = "diffusion"
    step: int
    total: int


class Decided(BaseModel):
    """The selector or the loop chose something: a strategy, a tool, a kept candidate, a new bar or prompt."""

    kind: Literal["decision"] = "decision"
    strategy: str | None = None
    ranked: list[ToolChoice] = Field(default_factory=list)
    requests: list[str] = Field(default_factory=list)
    tool: str | None = None
    step: int | None = None
    threshold: float | None = None
    prompt: str | None = None


class Vetoed(BaseModel):
    """A proposed call the selector refused."""

    kind: Literal["veto"] = "veto"
    tool: str
    reason: str


class Scored(BaseModel):
    """The judge scored a step's image."""

    kind: Literal["score"] = "score"
    step: int
    score: float
    summary: str = ""
    issues: list[dict[str, Any]] = Field(default_factory=list)  # category, severity, description, target


class Waiting(BaseModel):
    """The loop waits for an answer ("asking the judge ...", "planning ..."): displays show a clock."""

    kind: Literal["wait"] = "wait"
    role: str
    step: int | None = None


class RolledBack(BaseModel):
    """A step lowered the score; the session continues from the best image."""

    kind: Literal["rollback"] = "rollback"
    step: int


class Stopped(BaseModel):
    """The run ended: threshold, budget, plateau, or a request to stop."""

    kind: Literal["stopped"] = "stopped"
    reason: str


class Warned(BaseModel):
    """Something went wrong but the session goes on (a failed tool call, a detector change, a planner outage)."""

    kind: Literal["warning"] = "warning"
    step: int | None = None
    change: str | None = None  # the detector's kind of change, when it is the detector speaking
    boxes: list[list[int]] = Field(default_factory=list)


EventPayload = Annotated[
    StepStarted | DiffusionProgress | Decided | Vetoed | Scored | Waiting | RolledBack | Stopped | Warned,
    Field(discriminator="kind"),
]
EventKind = Literal["step", "diffusion", "decision", "veto", "score", "wait", "rollback", "stopped", "warning"]


ROLE_WORDS = {"evaluate": "judge", "plan": "planner", "rewrite": "prompt rewriter"}


class RetryNote(BaseModel):
    """A VLM call failed and will be tried again. The transports attach it to their "retrying" log record
    (``extra={"emage_retry": note}``), so displays read numbers rather than parse log text."""

    backend: str
    purpose: str
    attempt: int  # the attempt that failed; the retry is attempt + 1
    max_attempts: int
    reason: str  # an HTTP status code or an exception's name, never a message from the service
    wait_s: float

    def words(self) -> str:
        """'judge unreachable (503), retry 2/5 in 4.0 s'."""
        who = ROLE_WORDS.get(self.purpose, "VLM")
        return f"{who} unreachable ({self.reason}), retry {self.attempt + 1}/{self.max_attempts} in {self.wait_s:.1f} s"


class AgentEvent(BaseModel):
    """A progress event: a line for people (``message``) and its typed payload."""

    message: str
    payload: EventPayload
    preview: bytes | None = Field(default=None, exclude=True, repr=False)  # a diffusion preview (PNG), for displays

    @property
    def kind(self) -> EventKind:
        return self.payload.kind

    @property
    def data(self) -> dict[str, Any]:
        """The payload as plain JSON, without its kind and unset fields."""
        return self.payload.model_dump(mode="json", exclude={"kind"}, exclude_none=True)
