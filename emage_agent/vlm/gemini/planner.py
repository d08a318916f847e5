"""The planner: a Gemini chat that turns an evaluation into FLUX tool calls via function calling.

Why a chat and not one-shot calls: the model sees what it tried, what each tool returned (the image
included) and what scored worse, so it does not repeat a failed repair. Three rules keep the chat valid:
the model's turns go back UNCHANGED (Gemini 3 rejects a function-calling turn whose thought signature was
dropped); every function call gets a function response in the next user turn (executed, vetoed, invalid
or skipped); all tools are always declared and ``allowed_function_names`` narrows the choice, so earlier
calls in the history always refer to declared functions. Model mistakes come back as ``PlanError``s.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from emage_agent.contracts import export_tools, load_contracts, validate_arguments
from emage_agent.errors import InvalidArgument
from emage_agent.planning import PlanError, PlanningContext, PlanResult, ToolCall, ToolReport
from emage_agent.resources import load_prompt
from emage_agent.vlm.gemini.client import GeminiClient, types

MAX_IMAGES_KEPT = 3


def function_declarations() -> list[types.FunctionDeclaration]:
    """The tool contracts as Gemini declarations (JSON Schema passed through untouched)."""
    return [types.FunctionDeclaration(**d) for d in export_tools("gemini")]


def supports_function_response_media(model: str) -> bool:
    """Gemini 3 takes images inside function responses; earlier models get them as a plain part."""
    return "gemini-3" in model


def _digest(png: bytes) -> str:
    return hashlib.sha256(png).hexdigest()


def _png(data: bytes) -> types.Part:
    return types.Part.from_bytes(data=data, mime_type="image/png")


@dataclass
class _Pending:
    """A function call of the model's last turn still owed a function response."""

    name: str
    call_id: str | None
    args: dict[str, Any]
    error: str | None = None


class Planner:
    """``plan(ctx)`` -> ``PlanResult``; ``report(reports)`` feeds results back; ``reset()`` starts over."""

    def __init__(self, client: GeminiClient) -> None:
        self.client = client
        self._declarations = function_declarations()
        self._system = load_prompt("planner", tools=", ".join(sorted(load_contracts())))
        self.reset()

    def reset(self) -> None:
        self.history: list[types.Content] = []
        self._pending: list[_Pending] = []
        self._outbox: list[types.Part] = []
        self._outbox_images: list[str] = []
        self._seen_image: str | None = None  # digest of the newest image the model has been shown

    def plan(self, ctx: PlanningContext, feedback: str | None = None) -> PlanResult:
        allowed = self._allowed(ctx)
        reason = f"not executed: {feedback}" if feedback else "not executed: superseded by a new request"
        owed = [self._response(p, {"ok": False, "result": p.error or reason}) for p in self._pending]
        carry = owed + self._outbox  # nothing changes until the model has answered (a failure keeps it all)
        parts = list(carry)
        image_note = "no image is available"
        current = _digest(ctx.image_png) if ctx.image_png else None
        if current and current in self._outbox_images:
            image_note = "the current image is the one returned above"
        elif current and current == self._seen_image and not self._outbox_images:
            image_note = "the current image is unchanged since your last proposal"
        elif ctx.image_png:
            parts += [types.Part(text="The current image:"), _png(ctx.image_png)]
            image_note = "the current image is attached above"
        parts.append(types.Part(text=render_turn(ctx, feedback, allowed, image_note)))
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
                self._outbox_images.append(_digest(report.image_png))
        for report in remaining:  # run by the agent on its own (no call of the model's to answer)
            state = "succeeded" if report.ok else "failed"
            extras.append(types.Part(text=f"The agent also ran {report.call.name}: {state}: {report.summary}"))
            if report.image_png:
                extras.append(_png(report.image_png))
                self._outbox_images.append(_digest(report.image_png))
        self._pending = []
        self._outbox += responses + extras

    def _allowed(self, ctx: PlanningContext) -> list[str]:
        known = load_contracts()
        names = ctx.allowed_tools or ctx.recommendation.allowed_tools or sorted(known)
        allowed = [n for n in dict.fromkeys(names) if n in known]
        return allowed or sorted(known)

    def _config(self, allowed: list[str]) -> types.GenerateContentConfig:
        calling = types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=allowed)
        return types.GenerateContentConfig(
            system_instruction=self._system,
            tools=[types.Tool(function_declarations=self._declarations)],
            tool_config=types.ToolConfig(function_calling_config=calling),
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )

    @staticmethod
    def _response(pending: _Pending, payload: dict[str, Any], png: bytes | None = None) -> types.Part:
        media = [types.FunctionResponsePart.from_bytes(data=png, mime_type="image/png")] if png else None
        response = types.FunctionResponse(id=pending.call_id, name=pending.name, response=payload, parts=media)
        return types.Part(function_response=response)

    def _read(self, content: types.Content, allowed: list[str], max_calls: int) -> PlanResult:
        parts = content.parts or []
        result = PlanResult(text="".join(p.text for p in parts if p.text and not p.thought))
        known = load_contracts()
        dropped: list[str] = []
        for call in (p.function_call for p in parts if p.function_call):
            pending = _Pending(call.name or "", call.id, dict(call.args or {}))
            self._pending.append(pending)
            if pending.name not in known:
                pending.error = f"unknown tool {pending.name!r}; the tools are {', '.join(sorted(known))}"
                result.errors.append(PlanError(kind="unknown_tool", message=pending.error, tool=pending.name))
                continue
            try:
                validate_arguments(pending.name, pending.args)
            except InvalidArgument as exc:
                pending.error = f"invalid arguments for {pending.name}: {exc}"
                result.errors.append(PlanError(kind="invalid_arguments", message=pending.error, tool=pending.name))
                continue
            if len(result.calls) >= max_calls:
                pending.error = f"not executed: at most {max_calls} call(s) per step"
                dropped.append(pending.name)
                continue
            # The model's own arguments, checked but without defaults: later stages fill what it left out.
            result.calls.append(ToolCall(name=pending.name, args=dict(pending.args), call_id=pending.call_id))
        if dropped:
            message = f"at most {max_calls} call(s) per step; dropped {', '.join(dropped)}"
            result.errors.append(PlanError(kind="too_many_calls", message=message))
        if not self._pending:
            message = "no function call in the answer; call one of: " + ", ".join(allowed)
            result.errors.append(PlanError(kind="no_call", message=message))
        return result


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


def render_turn(ctx: PlanningContext, feedback: str | None, allowed: list[str], image_note: str) -> str:
    """The decision request as text (the numbers the model needs, nothing more)."""
    ev = ctx.evaluation
    issues = "\n".join(
        f"- [{i.category}, severity {i.severity:.2f}] {i.description}"
        + (f" (target: {i.target})" if i.target else "")
        + (f" (box {i.box})" if i.box else "")
        for i in sorted(ev.issues, key=lambda i: -i.severity)
    )
    history = "\n".join(
        f"- step {h.step}: {h.tool} {_compact(h.args)}"
        + (f" on {h.target!r}" if h.target else "")
        + f": score {_score(h.score_before)} -> {_score(h.score_after)}"
        + (" (VETOED)" if h.vetoed else "")
        + (" (ROLLED BACK: it made the image worse)" if h.rolled_back else "")
        for h in ctx.history[-8:]
    )
    rec = ctx.recommendation
    ranked = "\n".join(
        f"{n}. {c.tool} (weight {c.weight:.2f}): {c.reason}"
        + (f"; suggested arguments {_compact(c.args)}" if c.args else "")
        for n, c in enumerate(rec.ranked, start=1)
    )
    knobs = ", ".join(f"{k} {v}" for k, v in (("guidance", rec.guidance_scale), ("strength", rec.strength)) if v)
    return load_prompt(
        "planner_turn",
        original_prompt=ctx.original_prompt,
        prompt=ctx.prompt,
        image_note=image_note,
        score=f"{ev.satisfaction_score:.2f}",
        summary=ev.summary or "(none)",
        issues=issues or "(none)",
        history=history or "(nothing yet)",
        strategy=rec.strategy,
        strategy_reason=rec.reason,
        ranked=ranked or "(no ranking)",
        knobs=f"Suggested settings: {knobs}." if knobs else "",
        allowed=", ".join(allowed),
        max_calls=max(1, ctx.max_calls),
        user_feedback="\n".join(f"- {r}" for r in ctx.user_feedback) or "(none)",
        feedback=feedback or "(none)",
    )


def _compact(args: dict[str, Any]) -> str:
    shown = {k: (v[:80] + "..." if isinstance(v, str) and len(v) > 80 else v) for k, v in args.items()}
    return json.dumps(shown, ensure_ascii=False, separators=(", ", ": "))


def _score(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"
