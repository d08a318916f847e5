"""The planner, once for every backend: the evaluation turned into tool calls by function calling.

Why a chat and not one-shot calls: the model sees what it tried, what each tool returned (the image
included) and what scored worse, so it does not repeat a failed repair. Three rules keep the chat valid
on every backend: the model's turns go back unchanged (the transport keeps its raw turn: Gemini 3 rejects
a turn whose thought signature was dropped); every tool call gets a result in the next request (executed,
vetoed, invalid or skipped); and only the newest images stay in the history. Nothing changes until the
model has answered, so a failed request loses nothing. A transport without a chat (``keeps_history``
False, the small local model) gets each turn whole, with the last results as text.
"""

from __future__ import annotations

from typing import Any

from emage_agent.core.planning import PlanError, PlanningContext, PlanResult, ToolReport
from emage_agent.core.resources import load_prompt
from emage_agent.vlm.transport import Part, Picture, Request, Text, ToolResult, Transport, Turn, prune_images
from emage_agent.vlm.turns import Pending, allowed_tools, digest, image_note, match_reports, read_calls, render_turn

MAX_IMAGES_KEPT = 3


class Planner:
    """``plan(ctx)`` -> ``PlanResult``; ``report(reports)`` feeds results back; ``reset()`` starts over."""

    def __init__(self, client: Transport) -> None:
        self.client = client
        self._system = load_prompt("planner", tools=", ".join(sorted(client.tools)))
        self.reset()

    def reset(self) -> None:
        self.history: list[Turn] = []
        self._pending: list[Pending] = []
        self._outbox: list[Part] = []  # results and notes for the next user turn
        self._outbox_images: list[str] = []
        self._seen_image: str | None = None  # digest of the newest image the model has been shown

    def plan(self, ctx: PlanningContext, feedback: str | None = None) -> PlanResult:
        allowed = [t for t in allowed_tools(ctx) if t in self.client.tools] or list(self.client.tools)
        reason = f"not executed: {feedback}" if feedback else "not executed: superseded by a new request"
        owed = [_result(p, {"ok": False, "result": p.error or reason}, ran=False) for p in self._pending]
        carry = owed + self._outbox  # nothing changes until the model has answered (a failure keeps it all)
        parts = list(carry)
        current = digest(ctx.image_png) if ctx.image_png else None
        if self.client.keeps_history:
            attach, note = image_note(current, self._outbox_images, self._seen_image)
        else:  # every turn stands alone: the image always goes with it
            attach, note = bool(current), "the current image is attached" if current else "no image is available"
        if attach and ctx.image_png:
            parts += [Text("The current image:"), Picture(ctx.image_png)]
        parts.append(Text(render_turn(ctx, feedback, allowed, note)))
        history = self.history if self.client.keeps_history else []
        turns = prune_images([*history, Turn("user", parts)], MAX_IMAGES_KEPT)
        request = Request("plan", turns, tools=allowed, system=self._system, max_calls=ctx.max_calls)
        reply = self.client.request(request)
        if reply.turn is None:
            self._outbox, self._pending = carry, []  # the owed results go with the next request
            return PlanResult(errors=[PlanError(kind="unreadable", message=reply.empty)])
        self.history = [*turns, reply.turn]
        self._seen_image = current or (self._outbox_images or [self._seen_image])[-1]
        self._outbox, self._outbox_images, self._pending = [], [], reply.calls
        return read_calls(reply.calls, allowed, max(1, ctx.max_calls), reply.text)

    def report(self, reports: list[ToolReport]) -> None:
        """Queue the tools' results (with their images) for the next ``plan``."""
        pairs, remaining = match_reports(self._pending, reports)
        results: list[Part] = []
        extras: list[Part] = []
        for pending, report in pairs:
            if report is None:
                results.append(_result(pending, {"ok": False, "result": pending.error or "not executed"}, ran=False))
                continue
            payload: dict[str, Any] = {"ok": report.ok, "result": report.summary}
            if report.artifact_id:
                payload["artifact_id"] = report.artifact_id
            results.append(_result(pending, payload, png=report.image_png))
            if report.image_png:
                self._outbox_images.append(digest(report.image_png))
        for report in remaining:  # run by the agent on its own (no call of the model's to answer)
            state = "succeeded" if report.ok else "failed"
            extras.append(Text(f"The agent also ran {report.call.name}: {state}: {report.summary}"))
            if report.image_png:
                extras.append(Picture(report.image_png))
                self._outbox_images.append(digest(report.image_png))
        self._pending = []
        self._outbox += results + extras


def _result(pending: Pending, payload: dict[str, Any], png: bytes | None = None, ran: bool = True) -> ToolResult:
    return ToolResult(pending.name, pending.call_id, payload, png, ran=ran)
