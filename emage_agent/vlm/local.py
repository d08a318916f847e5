"""The local backend: a vision-language model in this process, its answers constrained to JSON schemas.

The model itself runs in ``emage_agent.executor.vlm_runner`` (the only place that may import torch and
transformers); this module decides what to ask and how to read it: the shared prompts, and schemas
tightened for a decoder that follows them token by token. Every free-text field has a ``maxLength`` and
every list a ``maxItems``; scores travel as whole percentages (integers, so the number grammar ends),
float knobs of the tools (strength, guidance, threshold) are left to their defaults and the selector's
suggestions, and steps, seed and size to the session's options (a small model should not pick the
cost). Thus every answer is finite, parses and validates.

The planner is stateless between turns apart from the last tool results: each turn carries the whole
decision request (history included), which suits small models better than a long chat.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from emage_agent.core.errors import EmageError, ExecutionFailure, UnreadableAnswer
from emage_agent.core.evaluation import ISSUE_CATEGORIES, Evaluation, Issue
from emage_agent.core.planning import PlanningContext, PlanResult, ToolReport
from emage_agent.core.resources import load_prompt
from emage_agent.core.settings import Settings
from emage_agent.core.tools import available_tools, load_contracts
from emage_agent.vlm.answers import apply_feedback, clean_remarks, evaluator_instructions, rewrite_instructions
from emage_agent.vlm.calls import CallRecord
from emage_agent.vlm.parsing import evaluation_from_dict
from emage_agent.vlm.rewriting import Rewrite, fallback_rewrite, finish_rewrite
from emage_agent.vlm.turns import Pending, allowed_tools, match_reports, read_calls, render_turn

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
    """The runner (loaded on first use) behind a call log like the remote backends'."""

    backend = BACKEND

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
        started = time.monotonic()
        try:
            gen = self.runner.generate(system, text, list(images), schema, self.settings.local_vlm_max_new_tokens)
            record.input_tokens, record.output_tokens = gen.input_tokens, gen.output_tokens
            record.total_tokens = gen.input_tokens + gen.output_tokens
            if not gen.finished:
                raise UnreadableAnswer(
                    f"the local {purpose} answer did not finish within {gen.output_tokens} tokens "
                    "(raise EMAGE_LOCAL_VLM_MAX_NEW_TOKENS or lower EMAGE_LOCAL_VLM_MAX_CHARS)"
                )
            try:
                data = json.loads(gen.text, strict=False)  # control characters inside strings are harmless here
            except json.JSONDecodeError as exc:
                raise UnreadableAnswer(f"the local {purpose} answer is not JSON ({exc}): {gen.text[:200]!r}") from None
        except EmageError as exc:
            record.error = str(exc)
            raise
        finally:
            record.latency_s = round(time.monotonic() - started, 4)
            self.calls.append(record)
        record.ok = True
        return data


class Evaluator:
    """``evaluate(png, prompt)`` -> ``Evaluation`` from the local model's constrained answer."""

    def __init__(self, client: LocalClient) -> None:
        self.client = client

    def evaluate(
        self, image_png: bytes, prompt: str, original_prompt: str | None = None, feedback: list[str] | None = None
    ) -> Evaluation:
        remarks = clean_remarks(feedback)
        text = evaluator_instructions(prompt, original_prompt, remarks) + PERCENT_NOTE
        data = self.client.answer("evaluate", text, evaluation_schema(self.client.max_chars), [image_png])
        data["satisfaction_score"] = data.pop("satisfaction_percent", 0) / 100
        for issue in data.get("issues", []):
            issue["severity"] = issue.get("severity", 50) / 100
        found = evaluation_from_dict(data)
        if found is None:  # pragma: no cover - the schema makes the score required
            raise UnreadableAnswer("the local evaluation has no score")
        evaluation, tied = found
        return apply_feedback(evaluation, tied, remarks) if remarks else evaluation


class Rewriter:
    """``rewrite(...)`` -> ``Rewrite``; the offline rewrite when the local model fails."""

    def __init__(self, client: LocalClient) -> None:
        self.client = client

    def rewrite(self, prompt: str, original_prompt: str, issues: list[Issue], focus: str | None = None) -> Rewrite:
        text = rewrite_instructions(prompt, original_prompt, issues, focus)
        try:
            data = self.client.answer("rewrite", text, rewrite_schema(self.client.max_chars))
            return finish_rewrite(data, original_prompt, BACKEND)
        except ExecutionFailure as exc:
            log.warning("local rewrite failed (%s); using the offline rewrite", exc)
            return fallback_rewrite(prompt, original_prompt, issues, focus, "local model failed")


class Planner:
    """``plan(ctx)`` -> ``PlanResult`` from one constrained answer; ``report`` keeps the results for the next turn."""

    def __init__(self, client: LocalClient) -> None:
        self.client = client
        self._system = load_prompt("planner", tools=", ".join(sorted(available_tools(client.settings))))
        self.reset()

    def reset(self) -> None:
        self._pending: list[Pending] = []
        self._results: list[str] = []

    def plan(self, ctx: PlanningContext, feedback: str | None = None) -> PlanResult:
        allowed = allowed_tools(ctx)
        note = "the current image is attached" if ctx.image_png else "no image is available"
        turn = render_turn(ctx, feedback, allowed, note)
        if self._results:
            turn = "Results of your previous calls:\n" + "\n".join(self._results) + "\n\n" + turn
        turn += '\n\nAnswer with JSON: {"calls": [{"tool": "<name>", "arguments": {...}}]}.'
        images = [ctx.image_png] if ctx.image_png else []
        schema = plan_schema(allowed, LOCAL_MAX_CALLS, self.client.max_chars)
        data = self.client.answer("plan", turn, schema, images, system=self._system)
        calls = [
            Pending(str(c.get("tool", "")), f"local-{n}", dict(c.get("arguments") or {}))
            for n, c in enumerate(data.get("calls", []))
        ]
        self._results, self._pending = [], calls
        return read_calls(calls, allowed, max(1, ctx.max_calls))

    def report(self, reports: list[ToolReport]) -> None:
        pairs, remaining = match_reports(self._pending, reports)
        for pending, report in pairs:
            state = "not executed" if report is None else ("succeeded" if report.ok else "failed")
            detail = report.summary if report is not None else (pending.error or "")
            self._results.append(f"- {pending.name}: {state}: {detail}")
        self._results += [f"- the agent also ran {r.call.name}: {r.summary}" for r in remaining]
        self._pending = []
