"""What a step records about why it ran: the decision, the refused calls and the pulled-in arguments.

One typed owner for facts that used to travel as string-keyed dicts: the loop writes these records,
the session store keeps them as JSON, and the report, the UI, chat and the summary read the same
types. ``read`` turns what older sessions stored (plain dicts, ``tool.param a->b`` strings, unknown
keys, odd values) into the models without refusing the session.
"""

from __future__ import annotations

import re
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emage_agent.core.planning import Recommendation, ToolChoice

StepKind = Literal["tool", "initial", "upload", "feedback", "direct", "candidate", "follow_up"]
"""Why a step exists: ``tool`` the agent's own repair; ``initial`` the first image; ``upload`` the person's
picture; ``feedback`` their words; ``direct`` a tool run by hand (API, MCP); ``candidate`` a further seed
of the call before it (``--candidates``); ``follow_up`` the image made to follow a rewritten prompt."""

DecisionStrategy = Literal["initial", "upload", "direct", "stop", "prompt_refinement", "image_modification", "hybrid"]

_M = TypeVar("_M", bound=BaseModel)


def read_lenient(model: type[_M], raw: Any) -> _M:
    """``model`` from stored JSON, dropping the fields that do not validate (old sessions must still open)."""
    data = dict(raw) if isinstance(raw, dict) else {}
    while True:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            bad = {e["loc"][0] for e in exc.errors() if e["loc"] and e["loc"][0] in data}
            if not bad:
                raise
            data = {k: v for k, v in data.items() if k not in bad}


class Veto(BaseModel):
    """A tool call the selector (or the planner's own contract check) refused, and why."""

    tool: str
    reason: str


_CLAMP = re.compile(r"^(?P<tool>[A-Za-z_]\w*)\.(?P<param>\w+) (?P<before>\S+)->(?P<after>\S+)$")


class Clamp(BaseModel):
    """An argument the selector pulled into its safe range. ``text`` keeps a note that is not of that shape."""

    tool: str | None = None
    param: str | None = None
    before: float | None = None
    after: float | None = None
    text: str | None = None

    @classmethod
    def read(cls, raw: Any) -> Clamp:
        """A clamp from the selector's ``tool.param a->b`` string, a stored dict, or any older note."""
        if isinstance(raw, Clamp):
            return raw
        if isinstance(raw, dict):
            return read_lenient(cls, raw)
        text = str(raw)
        match = _CLAMP.match(text)
        if match is None:
            return cls(text=text)
        try:
            return cls(
                tool=match["tool"], param=match["param"], before=float(match["before"]), after=float(match["after"])
            )
        except ValueError:
            return cls(text=text)

    def __str__(self) -> str:
        if self.tool and self.param and self.before is not None and self.after is not None:
            return f"{self.tool}.{self.param} {self.before:g}->{self.after:g}"
        return self.text or ""


class Decision(BaseModel):
    """Why a step ran: the selector's strategy and ranking, the person's request, what the call aimed at.

    ``threshold``/``threshold_before`` are noted after the step was judged, when an adaptive session lowered
    its bar. Unknown keys from older sessions are ignored.
    """

    model_config = ConfigDict(extra="ignore")

    strategy: DecisionStrategy | None = None
    reason: str | None = None
    prompt_side: float | None = None
    image_side: float | None = None
    ranked: list[ToolChoice] = Field(default_factory=list)
    request: list[str] = Field(default_factory=list)  # the person's open feedback this step repairs
    target: str | None = None  # what the call aimed at (set by the selector), for repeat detection
    candidate: int | None = None  # the index of a further candidate (1, 2, ...) of the same call
    threshold: float | None = None
    threshold_before: float | None = None

    @classmethod
    def of(cls, rec: Recommendation, requests: list[str] | None = None) -> Decision:
        """The decision a recommendation makes, with the person's open requests if any."""
        return cls(
            strategy=rec.strategy,
            reason=rec.reason,
            prompt_side=rec.prompt_side,
            image_side=rec.image_side,
            ranked=list(rec.ranked),
            request=list(requests or []),
        )

    @classmethod
    def read(cls, raw: Any) -> Decision | None:
        """A decision from stored JSON (``None`` stays ``None``); see ``read_lenient``."""
        if raw is None or isinstance(raw, Decision):
            return raw
        return read_lenient(cls, raw)

    def stored(self) -> dict[str, Any]:
        """The JSON kept in the store: only the keys that are set, as before typed records."""
        return {k: v for k, v in self.model_dump(mode="json", exclude_none=True).items() if v != []}
