"""The planner: a Gemini chat that turns an evaluation into FLUX tool calls via function calling.

Why a chat and not one-shot calls: the model sees what it tried, what each tool returned (the image
included) and what scored worse, so it does not repeat a failed repair. Three rules keep the chat valid:
the model's turns go back UNCHANGED (Gemini 3 rejects a function-calling turn whose thought signature was
dropped); every function call gets a function response in the next user turn (executed, vetoed, invalid
or skipped); all tools are always declared and ``allowed_function_names`` narrows the choice, so earlier
calls in the history always refer to declared functions. Model mistakes come back as ``PlanError``s.
"""

from __future__ import annotations

from typing import Any

from emage_agent.core.planning import PlanError, PlanningContext, PlanResult, ToolReport
from emage_agent.core.resources import load_prompt
from emage_agent.core.tools import available_tools, export_tools
from emage_agent.vlm.gemini.client import GeminiClient, types
from emage_agent.vlm.turns import Pending, allowed_tools, digest, image_note, read_calls, render_turn

MAX_IMAGES_KEPT = 3


def function_declarations(names: list[str] | None = None) -> list[types.FunctionDeclaration]:
    """The contracts of ``names`` (default: all) as Gemini declarations (JSON Schema passed through untouched)."""
    return [types.FunctionDeclaration(**d) for d in export_tools("gemini", names)]


def supports_function_response_media(model: str) -> bool:
    """Gemini 3 takes images inside function responses; earlier models get them as a plain part."""
    return "gemini-3" in model


def _png(data: bytes) -> types.Part:
    return types.Part.from_bytes(data=data, mime_type="image/png")


class Planner:
    """``plan(ctx)`` -> ``PlanResult``; ``report(reports)`` feeds results back; ``reset()`` starts over."""

    def __init__(self, client: GeminiClient) -> None:
        self.client = client
        names = available_tools(client.settings)  # a switched-off tool is not declared
        self._declarations = function_declarations(names)
        self._system = load_prompt("planner", tools=", ".join(sorted(names)))
        self.reset()

    def reset(self) -> None:
        self.history: list[types.Content] = []
        self._pending: list[Pending] = []
        self._outbox: list[types.Part] = []
        self._outbox_images: list[str] = []
        self._seen_image: str | None = None  # digest of the newest image the model has been shown

    def plan(self, ctx: PlanningContext, feedback: str | None = None) -> PlanResult:
        allowed = allowed_tools(ctx)
        reason = f"not executed: {feedback}" if feedback else "not executed: superseded by a new request"
        owed = [self._response(p, {"ok": False, "result": p.error or reason}) for p in self._pending]
        carry = owed + self._outbox  # nothing changes until the model has answered (a failure keeps it all)
        parts = list(carry)
        current = digest(ctx.image_png) if ctx.image_png else None
        attach, note = image_note(current, self._outbox_images, self._seen_image)
        if attach and ctx.image_png:
            parts += [types.Part(text="The current image:"), _png(ctx.image_png)]
        parts.append(types.Part(text=render_turn(ctx, feedback, allowed, note)))
        contents = prune_images([*self.history, types.Content(role="user", parts=parts)], MAX_IMAGES_KEPT)
        response = self.client.generate("plan", contents, self._config(allowed))
        candidates = response.candidates or []
        content = candidates[0].content if candidates else None
        if content is None or not content.parts:
            self._outbox, self._pending = carry, []  # the owed responses go with the next request
            block = response.prompt_feedback.block_reason if response.prompt_feedback else None
            finish = candidates[0].finish_reason if candidates else None
            why = f"the model returned no content (block_reason={block}, finish_reason={finish})"
            return PlanResult(errors=[PlanError(kind="unreadable", message=why)])
        self.history = [*contents, content]  # the model's turn exactly as received: signatures intact
        self._seen_image = current or (self._outbox_images or [self._seen_image])[-1]
        self._outbox, self._outbox_images, self._pending = [], [], []
        return self._read(content, allowed, max(1, ctx.max_calls))

    def report(self, reports: list[ToolReport]) -> None:
        """Queue the tools' results as function responses (with their images) for the next ``plan``."""
        media = supports_function_response_media(self.client.model)
        remaining = list(reports)
        responses: list[types.Part] = []
        extras: list[types.Part] = []
        for pending in self._pending:
            report = next((r for r in remaining if pending.call_id and r.call.call_id == pending.call_id), None)
            report = report or next((r for r in remaining if r.call.name == pending.name and not r.call.call_id), None)
            report = report or next((r for r in remaining if r.call.name == pending.name), None)
            if report is None:
                responses.append(self._response(pending, {"ok": False, "result": pending.error or "not executed"}))
                continue
            remaining.remove(report)
            payload = {"ok": report.ok, "result": report.summary}
            if report.artifact_id:
                payload["artifact_id"] = report.artifact_id
            inline = report.image_png if media else None
            responses.append(self._response(pending, payload, inline))
            if report.image_png and not media:
                extras += [types.Part(text=f"Image returned by {pending.name}:"), _png(report.image_png)]
            if report.image_png:
                self._outbox_images.append(digest(report.image_png))
        for report in remaining:  # run by the agent on its own (no call of the model's to answer)
            state = "succeeded" if report.ok else "failed"
            extras.append(types.Part(text=f"The agent also ran {report.call.name}: {state}: {report.summary}"))
            if report.image_png:
                extras.append(_png(report.image_png))
                self._outbox_images.append(digest(report.image_png))
        self._pending = []
        self._outbox += responses + extras

    def _config(self, allowed: list[str]) -> types.GenerateContentConfig:
        calling = types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=allowed)
        return types.GenerateContentConfig(
            system_instruction=self._system,
            tools=[types.Tool(function_declarations=self._declarations)],
            tool_config=types.ToolConfig(function_calling_config=calling),
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )

    @staticmethod
    def _response(pending: Pending, payload: dict[str, Any], png: bytes | None = None) -> types.Part:
        media = [types.FunctionResponsePart.from_bytes(data=png, mime_type="image/png")] if png else None
        response = types.FunctionResponse(id=pending.call_id, name=pending.name, response=payload, parts=media)
        return types.Part(function_response=response)

    def _read(self, content: types.Content, allowed: list[str], max_calls: int) -> PlanResult:
        parts = content.parts or []
        calls = [Pending(c.name or "", c.id, dict(c.args or {})) for c in (p.function_call for p in parts) if c]
        self._pending = calls
        text = "".join(p.text for p in parts if p.text and not p.thought)
        return read_calls(calls, allowed, max_calls, text)


def prune_images(contents: list[types.Content], keep: int) -> list[types.Content]:
    """Only the newest ``keep`` images stay in user turns (tokens); model turns are never touched."""
    seen, out = 0, []
    for content in reversed(contents):
        if content.role == "model" or not content.parts:
            out.append(content)
            continue
        parts, changed = [], False
        for part in reversed(content.parts):
            fr = part.function_response
            if part.inline_data is not None:
                seen += 1
                if seen > keep:
                    part, changed = types.Part(text="[an earlier image, omitted]"), True
            elif fr is not None and fr.parts:
                seen += len(fr.parts)
                if seen > keep:
                    part, changed = types.Part(function_response=fr.model_copy(update={"parts": None})), True
            parts.append(part)
        out.append(content.model_copy(update={"parts": parts[::-1]}) if changed else content)
    return out[::-1]
