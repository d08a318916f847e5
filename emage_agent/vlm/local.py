"""The local backend: a vision-language model in this process, its answers constrained to JSON schemas.

The model itself runs in ``emage_agent.executor.vlm_runner`` (the only place that may import torch and
transformers); this module decides what to ask and how to read it: the shared prompts, and schemas
tightened for a decoder that follows them token by token. Every free-text field has a ``maxLength`` and
every list a ``maxItems``; scores travel as whole percentages (integers, so the number grammar ends),
float knobs of the tools (strength, guidance, threshold) are left to their defaults and the selector's
suggestions, and steps, seed and size to the session's options (a small model should not pick the
cost). Thus every answer is finite, parses and validates.

``LocalClient`` is the transport under the shared roles (``vlm.transport``). It keeps no chat
(``keeps_history`` False): each planning turn carries the whole decision request (history included) and
the last tool results as text, which suits small models better than a long chat.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from emage_agent.core.errors import ExecutionFailure, UnreadableAnswer, VLMUnavailable
from emage_agent.core.evaluation import ISSUE_CATEGORIES
from emage_agent.core.settings import Settings
from emage_agent.core.tools import available_tools, load_contracts
from emage_agent.vlm.answers import EvaluationAnswer, RewriteAnswer
from emage_agent.vlm.calls import CallRecord, recorded
from emage_agent.vlm.evaluator import Evaluator
from emage_agent.vlm.planner import Planner
from emage_agent.vlm.rewriter import Rewriter
from emage_agent.vlm.transport import Picture, Reply, Request, Text, ToolResult, Turn
from emage_agent.vlm.turns import Pending

__all__ = ["Evaluator", "LocalClient", "Planner", "Rewriter", "evaluation_schema", "plan_schema"]

log = logging.getLogger("emage_agent.vlm.local")

BACKEND = "local"
MAX_ISSUES = 5
LOCAL_MAX_CALLS = 1  # one repair per turn: a small model decides one thing better than it chains several
PERCENT_NOTE = (
    "\n\nIn this answer write severity and satisfaction as whole percentages: severity 0-100 and "
    "satisfaction_percent 0-100 instead of satisfaction_score."
)


def _text(max_chars: int, min_length: int = 0) -> dict[str, Any]:
    return {"type": "string", "minLength": min_length, "maxLength": max_chars}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [{"type": "null"}, schema]}


def evaluation_schema(max_chars: int) -> dict[str, Any]:
    """The evaluation answer as the decoder sees it (percentages, bounded text and lists)."""
    issue = {
        "type": "object",
        "properties": {
            "category": {"enum": list(ISSUE_CATEGORIES)},
            "severity": {"type": "integer", "minimum": 0, "maximum": 100},
            "description": _text(max_chars, 1),
            "target": _nullable(_text(max_chars)),
            "box": _nullable(
                {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0, "maximum": 1000},
                    "minItems": 4,
                    "maxItems": 4,
                }
            ),
            "feedback_index": _nullable({"type": "integer", "minimum": 1, "maximum": 99}),
        },
        "required": ["category", "severity", "description", "target", "box", "feedback_index"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "issues": {"type": "array", "items": issue, "maxItems": MAX_ISSUES},
            "satisfaction_percent": {"type": "integer", "minimum": 0, "maximum": 100},
            "summary": _text(max_chars),
        },
        "required": ["issues", "satisfaction_percent", "summary"],
        "additionalProperties": False,
    }


def rewrite_schema(max_chars: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"prompt": _text(max_chars, 1), "rationale": _text(max_chars)},
        "required": ["prompt", "rationale"],
        "additionalProperties": False,
    }


SESSION_KNOBS = frozenset({"steps", "seed", "width", "height"})  # cost and reproducibility: the user's options


def decodable_arguments(parameters: dict[str, Any], max_chars: int) -> dict[str, Any]:
    """A tool's parameter schema for the decoder: strings capped; floats and the session's knobs (steps,
    seed, size) left out, so the session options and the tools' defaults apply."""
    props: dict[str, Any] = {}
    for name, prop in parameters.get("properties", {}).items():
        kind = prop.get("type")
        if name in SESSION_KNOBS:
            continue
        if kind == "string":
            cap = min(int(prop.get("maxLength", max_chars)), max_chars)
            props[name] = _text(cap, min(int(prop.get("minLength", 0)), cap))
        elif kind == "integer" and "minimum" in prop and "maximum" in prop:
            props[name] = {k: prop[k] for k in ("type", "minimum", "maximum")}
        elif kind == "array" and prop.get("items", {}).get("type") == "integer":
            props[name] = {k: v for k, v in prop.items() if k in ("type", "items", "minItems", "maxItems")}
    required = [r for r in parameters.get("required", []) if r in props]
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def plan_schema(allowed: list[str], max_calls: int, max_chars: int) -> dict[str, Any]:
    """One to ``max_calls`` calls, each a tool of ``allowed`` with arguments that fit its contract."""
    contracts = load_contracts()
    options = [
        {
            "type": "object",
            "properties": {
                "tool": {"enum": [name]},
                "arguments": decodable_arguments(contracts[name].parameters, max_chars),
            },
            "required": ["tool", "arguments"],
            "additionalProperties": False,
        }
        for name in allowed
    ]
    calls = {"type": "array", "items": {"anyOf": options}, "minItems": 1, "maxItems": max(1, max_calls)}
    return {"type": "object", "properties": {"calls": calls}, "required": ["calls"], "additionalProperties": False}


class LocalClient:
    """The runner (loaded on first use) behind a call log like the remote backends', and the transport."""

    backend = BACKEND
    label = "the local model"
    parses_answers = True  # the grammar makes every answer decode
    keeps_history = False
    answers_objects = False

    def __init__(self, settings: Settings, runner: Any = None) -> None:
        self.settings = settings
        self.model = settings.local_vlm_model
        self.max_chars = settings.local_vlm_max_chars
        self.calls: list[CallRecord] = []
        self._runner = runner

    def __repr__(self) -> str:
        return f"LocalClient(model={self.model!r}, calls={len(self.calls)})"

    @property
    def runner(self) -> Any:
        """The in-process model (``executor.vlm_runner``); its ``nbytes()`` belongs in the memory plan."""
        if self._runner is None:
            from emage_agent.executor.vlm_runner import VLMRunner

            self._runner = VLMRunner(self.settings, self.model)
        return self._runner

    def answer(
        self, purpose: str, text: str, schema: dict[str, Any], images: list[bytes] = (), system: str | None = None
    ) -> dict[str, Any]:
        """The decoded JSON answer; ``UnreadableAnswer`` when the decoder ran out of tokens first."""
        record = CallRecord(purpose=purpose, model=self.model, backend=BACKEND, attempts=1)
        with recorded(self.calls, record):
            try:
                gen = self.runner.generate(system, text, list(images), schema, self.settings.local_vlm_max_new_tokens)
            except ExecutionFailure as exc:  # the model could not run (memory, device): the judge is unavailable
                if isinstance(exc, UnreadableAnswer | VLMUnavailable):
                    raise
                raise VLMUnavailable(f"the local model failed: {exc}") from None
            record.input_tokens, record.output_tokens = gen.input_tokens, gen.output_tokens
            record.total_tokens = gen.input_tokens + gen.output_tokens
            if not gen.finished:
                raise UnreadableAnswer(
                    f"the local {purpose} answer did not finish within {gen.output_tokens} tokens "
                    "(raise EMAGE_LOCAL_VLM_MAX_NEW_TOKENS or lower EMAGE_LOCAL_VLM_MAX_CHARS)"
                )
            try:
                return json.loads(gen.text, strict=False)  # control characters inside strings are harmless here
            except json.JSONDecodeError as exc:
                raise UnreadableAnswer(f"the local {purpose} answer is not JSON ({exc}): {gen.text[:200]!r}") from None

    def scrub(self, text: str) -> str:
        """Nothing to hide: the local backend holds no key."""
        return text

    @property
    def tools(self) -> list[str]:
        """The tools these settings switch on: all a planner over this transport may offer."""
        return available_tools(self.settings)

    def request(self, request: Request) -> Reply:
        """The transport interface: the last user turn as one prompt, decoded under the matching grammar."""
        text, images = prompt_of(request.turns[-1])
        if request.tools is not None:
            text += '\n\nAnswer with JSON: {"calls": [{"tool": "<name>", "arguments": {...}}]}.'
            schema = plan_schema(request.tools, LOCAL_MAX_CALLS, self.max_chars)
            data = self.answer(request.purpose, text, schema, images[-1:], system=request.system)
            calls = [
                Pending(str(c.get("tool", "")), f"local-{n}", dict(c.get("arguments") or {}))
                for n, c in enumerate(data.get("calls", []))
            ]
            return Reply(calls=calls, turn=Turn("model", raw=data))
        if request.answer is EvaluationAnswer:
            data = self.answer(request.purpose, text + PERCENT_NOTE, evaluation_schema(self.max_chars), images)
            data["satisfaction_score"] = data.pop("satisfaction_percent", 0) / 100
            for issue in data.get("issues", []):
                issue["severity"] = issue.get("severity", 50) / 100
            return Reply(parsed=data)
        if request.answer is RewriteAnswer:
            return Reply(parsed=self.answer(request.purpose, text, rewrite_schema(self.max_chars), images))
        name = request.answer.__name__ if request.answer else "free text"
        raise ExecutionFailure(f"the local backend has no grammar for a {request.purpose} answer ({name})")


def prompt_of(turn: Turn) -> tuple[str, list[bytes]]:
    """One user turn as a prompt: the last tool results first, then the texts; and its pictures."""
    results: list[str] = []
    texts: list[str] = []
    images: list[bytes] = []
    for part in turn.parts:
        if isinstance(part, ToolResult):
            detail = str(part.payload.get("result", ""))
            state = "not executed" if not part.ran else ("succeeded" if part.payload.get("ok") else "failed")
            results.append(f"- {part.name}: {state}: {'' if detail == 'not executed' else detail}")
        elif isinstance(part, Text):
            texts.append(part.text)
        elif isinstance(part, Picture):
            images.append(part.png)
    head = "Results of your previous calls:\n" + "\n".join(results) + "\n\n" if results else ""
    return head + "\n\n".join(texts), images
