"""The planner as an OpenAI-compatible chat: ``tools`` derived from the contracts, answers as ``tool_calls``.

The chat follows the same rules as the Gemini planner: the model's turns go back unchanged, every tool
call gets a ``tool`` message (executed, vetoed, invalid or skipped) right after the assistant turn that
made it, and only the newest images stay in the history. Images returned by tools travel in the next
user message, because ``tool`` messages carry text only on most servers. A server that answers with a
JSON object in plain text instead of ``tool_calls`` (some Ollama models) is read too; its results then
go back as text.
"""

from __future__ import annotations

import json
from typing import Any

from emage_agent.core.planning import PlanError, PlanningContext, PlanResult, ToolReport
from emage_agent.core.resources import load_prompt
from emage_agent.core.tools import export_tools, load_contracts
from emage_agent.vlm.openai_compat.client import OpenAIClient
from emage_agent.vlm.openai_compat.evaluator import answer_text, image_part, text_part
from emage_agent.vlm.parsing import extract_json, load_json
from emage_agent.vlm.turns import (
    Pending,
    allowed_tools,
    digest,
    image_note,
    match_reports,
    read_calls,
    render_turn,
)

MAX_IMAGES_KEPT = 3


def _arguments(raw: Any) -> tuple[dict[str, Any], str | None]:
    """A tool call's arguments (a JSON string on the wire) and why they could not be read."""
    if isinstance(raw, dict):
        return raw, None
    try:
        value = load_json(raw or "{}")
    except (TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError, and so are load_json's bounds
        return {}, f"the arguments are not JSON ({str(exc)[:200]})"
    return (value, None) if isinstance(value, dict) else ({}, "the arguments are not a JSON object")


def _calls_in_text(text: str) -> list[Pending]:
    """``{"name": ..., "arguments": {...}}`` (or ``tool``/``args``) written as text instead of a tool call."""
    data = extract_json(text)
    items = data if isinstance(data, list) else [data]
    found = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("name") or item.get("tool"), str):
            args = item.get("arguments", item.get("args", {}))
            found.append(
                Pending(str(item.get("name") or item.get("tool")), None, args if isinstance(args, dict) else {})
            )
    return found


class Planner:
    """``plan(ctx)`` -> ``PlanResult``; ``report(reports)`` feeds results back; ``reset()`` starts over."""

    def __init__(self, client: OpenAIClient) -> None:
        self.client = client
        self._tools = export_tools("openai")
        self._system = load_prompt("planner", tools=", ".join(sorted(load_contracts())))
        self.reset()

    def reset(self) -> None:
        self.history: list[dict[str, Any]] = [{"role": "system", "content": self._system}]
        self._pending: list[Pending] = []
        self._tool_messages: list[dict[str, Any]] = []
        self._outbox: list[dict[str, Any]] = []  # content parts for the next user message
        self._outbox_images: list[str] = []
        self._seen_image: str | None = None

    def plan(self, ctx: PlanningContext, feedback: str | None = None) -> PlanResult:
        allowed = allowed_tools(ctx)
        reason = f"not executed: {feedback}" if feedback else "not executed: superseded by a new request"
        owed_tools, owed_text = self._answers([(p, {"ok": False, "result": p.error or reason}) for p in self._pending])
        tool_messages = self._tool_messages + owed_tools
        carry = self._outbox + owed_text  # nothing changes until the model has answered
        parts = list(carry)
        current = digest(ctx.image_png) if ctx.image_png else None
        attach, note = image_note(current, self._outbox_images, self._seen_image)
        if attach and ctx.image_png:
            parts += [text_part("The current image:"), image_part(ctx.image_png)]
        parts.append(text_part(render_turn(ctx, feedback, allowed, note)))
        messages = prune_images([*self.history, *tool_messages, {"role": "user", "content": parts}], MAX_IMAGES_KEPT)
        response = self.client.chat_tools("plan", messages, self._tools)
        message = response.choices[0].message
        raw_calls = list(getattr(message, "tool_calls", None) or [])
        text = answer_text(response)
        if not raw_calls and not text:
            self._tool_messages, self._outbox, self._pending = tool_messages, carry, []
            finish = getattr(response.choices[0], "finish_reason", None)
            why = f"the model returned no content (finish_reason={finish})"
            return PlanResult(errors=[PlanError(kind="unreadable", message=why)])
        turn: dict[str, Any] = {"role": "assistant", "content": text or None}
        calls: list[Pending] = []
        if raw_calls:
            turn["tool_calls"] = []
            for n, call in enumerate(raw_calls):
                call_id = getattr(call, "id", None) or f"call_{len(self.history)}_{n}"
                fn = call.function
                turn["tool_calls"].append(
                    {"id": call_id, "type": "function", "function": {"name": fn.name, "arguments": fn.arguments}}
                )
                args, error = _arguments(fn.arguments)
                calls.append(
                    Pending(
                        fn.name or "", call_id, args, f"invalid arguments for {fn.name}: {error}" if error else None
                    )
                )
        else:
            calls = _calls_in_text(text)
        self.history = [*messages, turn]
        self._seen_image = current or (self._outbox_images or [self._seen_image])[-1]
        self._tool_messages, self._outbox, self._outbox_images = [], [], []
        self._pending = calls
        return read_calls(calls, allowed, max(1, ctx.max_calls), text if raw_calls else "")

    def report(self, reports: list[ToolReport]) -> None:
        """Queue the tools' results (``tool`` messages) and their images (next user message) for ``plan``."""
        pairs, remaining = match_reports(self._pending, reports)
        payloads: list[tuple[Pending, dict[str, Any]]] = []
        extras: list[dict[str, Any]] = []
        for pending, report in pairs:
            if report is None:
                payloads.append((pending, {"ok": False, "result": pending.error or "not executed"}))
                continue
            payload: dict[str, Any] = {"ok": report.ok, "result": report.summary}
            if report.artifact_id:
                payload["artifact_id"] = report.artifact_id
            payloads.append((pending, payload))
            if report.image_png:
                extras += [text_part(f"Image returned by {pending.name}:"), image_part(report.image_png)]
                self._outbox_images.append(digest(report.image_png))
        for report in remaining:  # run by the agent on its own (no call of the model's to answer)
            state = "succeeded" if report.ok else "failed"
            extras.append(text_part(f"The agent also ran {report.call.name}: {state}: {report.summary}"))
            if report.image_png:
                extras.append(image_part(report.image_png))
                self._outbox_images.append(digest(report.image_png))
        tool_messages, text_answers = self._answers(payloads)
        self._pending = []
        self._tool_messages += tool_messages
        self._outbox += text_answers + extras

    @staticmethod
    def _answers(payloads: list[tuple[Pending, dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``tool`` messages for real tool calls; text parts for calls the model wrote as text."""
        tools, texts = [], []
        for pending, payload in payloads:
            content = json.dumps(payload, ensure_ascii=False)
            if pending.call_id:
                tools.append({"role": "tool", "tool_call_id": pending.call_id, "content": content})
            else:
                texts.append(text_part(f"Result of {pending.name}: {content}"))
        return tools, texts


def prune_images(messages: list[dict[str, Any]], keep: int) -> list[dict[str, Any]]:
    """Only the newest ``keep`` images stay (tokens); older ones become a short note. Inputs are not mutated."""
    seen, out = 0, []
    for message in reversed(messages):
        content = message.get("content")
        if message.get("role") != "user" or not isinstance(content, list):
            out.append(message)
            continue
        parts, changed = [], False
        for part in reversed(content):
            if part.get("type") == "image_url":
                seen += 1
                if seen > keep:
                    part, changed = text_part("[an earlier image, omitted]"), True
            parts.append(part)
        out.append({**message, "content": parts[::-1]} if changed else message)
    return out[::-1]
