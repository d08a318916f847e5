"""Deciding what runs next: the planner's proposals checked by the selector, else the selector's own call.

Why apart from the loop: it is one concept (propose, review, veto, fall back) that reads the session but
writes nothing; the loop runs and records what it decides. ``SessionLoop`` inherits it, so the attributes
declared below are the loop's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emage_agent import strategy
from emage_agent.core import events as ev
from emage_agent.core.decisions import Clamp, Veto
from emage_agent.core.errors import ExecutionFailure
from emage_agent.core.evaluation import Evaluation
from emage_agent.core.options import RunOptions
from emage_agent.core.planning import HistoryEntry, PlanningContext, PlanResult, Recommendation, ToolCall
from emage_agent.core.ports import png_bytes
from emage_agent.core.tools import first_image_tool, get_contract, get_tool, is_tool, registry, tool_names
from emage_agent.session import SessionStore, SessionView
from emage_agent.vlm import Plans

MAX_CALLS_PER_TURN = 3
EDIT_TOOLS = frozenset(t.name for t in registry().values() if t.edits_image)  # they change the current image


class Deciding:
    """The deciding half of ``SessionLoop``: ``decide`` and what it needs."""

    store: SessionStore
    view: SessionView
    planner: Plans | None
    config: strategy.SelectorConfig
    options: RunOptions
    _emit: Callable[[str, ev.EventPayload], None]
    budget: Callable[[], strategy.BudgetState]
    _config: Callable[[], strategy.SelectorConfig]
    record_usage: Callable[..., None]

    def decide(
        self, rec: Recommendation, evaluation: Evaluation, history: list[HistoryEntry]
    ) -> tuple[list[tuple[ToolCall, list[Clamp]]], list[Veto]]:
        """Planner proposals that pass the selector; after a second veto, the selector's own choice."""
        vetoes: list[Veto] = []
        budget = self.budget()
        prompt = self.store.info.current_prompt
        if self.planner is not None and rec.ranked:
            feedback: str | None = None
            for _attempt in range(2):
                result = self._plan(rec, evaluation, history, feedback)
                if result is None:
                    break
                accepted: list[tuple[ToolCall, list[Clamp]]] = []
                problems = [f"{e.kind}: {e.message}" for e in result.errors]
                for call in result.calls[:MAX_CALLS_PER_TURN]:
                    verdict = strategy.review(
                        self._with_schedule(call, rec), rec, history, budget, self._config(), prompt=prompt
                    )
                    if verdict.accepted:
                        clamps = [Clamp.read(c) for c in verdict.clamps]
                        accepted.append((self._targeted(verdict.call, verdict.target), clamps))
                    else:
                        veto = Veto(tool=call.name, reason=verdict.reason or "vetoed")
                        vetoes.append(veto)
                        problems.append(f"{call.name} vetoed: {verdict.reason}")
                        self._emit(
                            f"vetoed {call.name}: {verdict.reason}", ev.Vetoed(tool=veto.tool, reason=veto.reason)
                        )
                if accepted:
                    return accepted, vetoes
                for err in result.errors:
                    vetoes.append(Veto(tool=err.tool or "(none)", reason=f"{err.kind}: {err.message}"))
                feedback = "; ".join(problems) or "no tool call was proposed"
        fallback = strategy.fallback_call(rec, prompt, defaults=self.session_args)
        verdict = strategy.review(
            self._with_schedule(fallback, rec), rec, history, budget, self._config(), prompt=prompt
        )
        call = self._targeted(verdict.call, verdict.target) if verdict.accepted else fallback
        self._emit(f"selector runs {call.name}", ev.Decided(tool=call.name))
        return [(call, [Clamp.read(c) for c in verdict.clamps] if verdict.accepted else [])], vetoes

    @staticmethod
    def _targeted(call: ToolCall, target: str | None) -> ToolCall:
        """Remember what a call aimed at, so a repeat of a failed action can be recognised."""
        return call.model_copy(update={"target": target}) if target else call

    def _with_schedule(self, call: ToolCall, rec: Recommendation) -> ToolCall:
        """Diminishing guidance and strength: fill them from the schedule when the call leaves them out."""
        args = dict(call.args)
        if is_tool(call.name) and get_tool(call.name).takes_strength and rec.strength is not None:
            args.setdefault("strength", rec.strength)
        if call.name in EDIT_TOOLS and "image" in args and args["image"] != "current":
            args["image"] = "current"  # edits always start from the best image
        for key, value in self.session_args(call.name).items():
            args.setdefault(key, value)
        return call.model_copy(update={"args": args})

    def session_args(self, tool: str) -> dict[str, Any]:
        """What the session's own options say for ``tool`` (size, steps, guidance), before any contract default.

        Why: a call that leaves them out must run like the session (a small CPU session stays small), not
        with the contract's defaults for the full model. Guidance carries over only to ``generate``: the
        edit models have their own scales.
        """
        opts = self.options
        props = get_contract(tool).parameters.get("properties", {})
        wanted = {"steps": opts.steps}
        if tool == first_image_tool():
            wanted |= {"width": opts.width, "height": opts.height, "guidance": opts.guidance}
        return {k: v for k, v in wanted.items() if v is not None and k in props}

    def _plan(
        self, rec: Recommendation, evaluation: Evaluation, history: list[HistoryEntry], feedback: str | None
    ) -> PlanResult | None:
        assert self.planner is not None
        info = self.store.info
        ctx = PlanningContext(
            prompt=info.current_prompt,
            original_prompt=info.original_prompt,
            evaluation=evaluation,
            recommendation=rec,
            history=history[-8:],
            image_png=png_bytes(self.view.current_image()),
            allowed_tools=tool_names(self.config.edit_tool),
            user_feedback=self.view.recent_feedback(),
            max_calls=MAX_CALLS_PER_TURN,
        )
        self._emit("planning ...", ev.Waiting(role="planner"))
        try:
            return self.planner.plan(ctx, feedback)
        except ExecutionFailure as exc:  # unreachable, refused or unreadable: the selector decides instead
            self._emit(f"planner failed ({exc}); the selector decides this step", ev.Warned())
            return None
        finally:
            self.record_usage(self.store.info.head_step)
