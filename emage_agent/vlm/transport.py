"""The one request interface every VLM backend implements, so the roles above it are written once.

The evaluator, planner and rewriter (``vlm.evaluator``, ``vlm.planner``, ``vlm.rewriter``) build a
``Request`` of plain turns (text, pictures, tool results) with an answer schema or a list of tools, and
read a ``Reply`` (text, the SDK's parsed answer, tool calls). A transport (``GeminiClient``,
``OpenAIClient``, ``LocalClient``) owns everything particular to its backend: the wire format, the
answer-format ladders, thought signatures, constrained decoding, its retries and how its errors are
translated into EMage's three kinds. As in pydantic-ai, a backend implements only ``request``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from emage_agent.core.errors import UnreadableAnswer, VLMUnavailable
from emage_agent.vlm.calls import CallRecord
from emage_agent.vlm.turns import Pending

OMITTED = "[an earlier image, omitted]"


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Picture:
    png: bytes


@dataclass(frozen=True)
class ToolResult:
    """The answer to one of the model's tool calls; ``png`` is the image the tool made (``omitted``: pruned)."""

    name: str
    call_id: str | None
    payload: dict[str, Any]
    png: bytes | None = None
    omitted: bool = False
    ran: bool = True  # False: the call was not executed (vetoed, invalid, superseded)


Part = Text | Picture | ToolResult


@dataclass
class Turn:
    """One message. A model turn keeps ``raw``, the backend's own object, so it goes back unchanged."""

    role: Literal["user", "model"]
    parts: list[Part] = field(default_factory=list)
    raw: Any = None


@dataclass
class Request:
    """What a role asks: turns, and either an ``answer`` schema or the ``tools`` the model may call."""

    purpose: str  # evaluate, plan, rewrite, objects: the call log's purpose
    turns: list[Turn]
    answer: type[BaseModel] | None = None
    tools: list[str] | None = None  # the allowed tools (all are declared; these narrow the choice)
    system: str | None = None
    max_calls: int = 1


@dataclass
class Reply:
    """What came back. ``turn`` is None when the model returned nothing (``empty`` says why)."""

    text: str = ""
    parsed: Any = None  # the answer as the backend decoded it (a model or a dict), if it did
    calls: list[Pending] = field(default_factory=list)
    turn: Turn | None = None
    empty: str = ""


class Transport(Protocol):
    """A backend: one ``request`` with its retries, and the call log the session books."""

    backend: str
    model: str
    calls: list[CallRecord]
    label: str  # how the rewrite's fallback names it ("Gemini", "the server", "the local model")
    parses_answers: bool  # True: answers arrive decoded (``Reply.parsed``); False: as JSON in the text
    keeps_history: bool  # True: a chat (the planner sends its history); False: every turn stands alone
    answers_objects: bool  # asked for the prompt's objects (detector verification)
    tools: list[str]  # the tools these settings switch on (``core.tools.available_tools``): all a planner may offer

    def request(self, request: Request) -> Reply: ...

    def scrub(self, text: str) -> str: ...


FALLBACK_ERRORS = (VLMUnavailable, UnreadableAnswer)  # what the rewrite survives with the offline rule


def prune_images(turns: list[Turn], keep: int) -> list[Turn]:
    """Only the newest ``keep`` images stay in user turns (tokens); model turns are never touched."""
    seen, out = 0, []
    for turn in reversed(turns):
        if turn.role == "model" or not turn.parts:
            out.append(turn)
            continue
        parts: list[Part] = []
        changed = False
        for part in reversed(turn.parts):
            if isinstance(part, Picture):
                seen += 1
                if seen > keep:
                    part, changed = Text(OMITTED), True
            elif isinstance(part, ToolResult) and part.png is not None:
                seen += 1
                if seen > keep:
                    part, changed = ToolResult(part.name, part.call_id, part.payload, None, True, part.ran), True
            parts.append(part)
        out.append(Turn(turn.role, parts[::-1], turn.raw) if changed else turn)
    return out[::-1]


def split_results(parts: list[Part], inline_images: bool) -> list[tuple[str, Any]]:
    """The parts in wire order: ``("result", ToolResult)``, ``("text", str)``, ``("png", bytes)``.

    Images returned by tools follow the run of results they came with (``Image returned by ...``), unless
    the backend takes them inside the result itself (``inline_images``).
    """
    out: list[tuple[str, Any]] = []
    held: list[tuple[str, Any]] = []
    for part in parts:
        if isinstance(part, ToolResult):
            out.append(("result", part))
            if not inline_images and (part.png is not None or part.omitted):
                held += [("text", f"Image returned by {part.name}:")]
                held += [("png", part.png)] if part.png is not None else [("text", OMITTED)]
            continue
        out += held
        held = []
        out.append(("text", part.text) if isinstance(part, Text) else ("png", part.png))
    return out + held
