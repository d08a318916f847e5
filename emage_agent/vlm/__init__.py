"""The vision-language side: the three small interfaces the loop uses, the roles, and the transports.

The roles (``evaluator``, ``planner``, ``rewriter``) are written once over the request interface of
``transport``; each backend (``gemini``, ``openai_compat``, ``local``) is a transport, the only importer of
its SDK, with its own wire format, retries and error translation. Images cross as PNG bytes and answers
come back as the models of ``emage_agent.core.evaluation`` and ``emage_agent.core.planning``; no SDK type
leaves a transport. ``choice`` picks a backend and builds the roles over it.
"""

from __future__ import annotations

from typing import Any, Protocol

from emage_agent.core.evaluation import Evaluation, Issue
from emage_agent.core.planning import PlanningContext, PlanResult, ToolReport
from emage_agent.vlm.calls import CallLog
from emage_agent.vlm.choice import VLM, Backend, Role, choose, local_model, model_of, open_vlm

__all__ = [
    "VLM",
    "Backend",
    "CallLog",
    "Role",
    "Evaluates",
    "Plans",
    "Rewrites",
    "choose",
    "local_model",
    "model_of",
    "open_vlm",
]


class Evaluates(Protocol):
    def evaluate(
        self, image_png: bytes, prompt: str, original_prompt: str | None = None, feedback: list[str] | None = None
    ) -> Evaluation: ...


class Plans(Protocol):
    def plan(self, ctx: PlanningContext, feedback: str | None = None) -> PlanResult: ...
    def report(self, reports: list[ToolReport]) -> None: ...


class Rewrites(Protocol):
    def rewrite(self, prompt: str, original_prompt: str, issues: list[Issue], focus: str | None = None) -> Any: ...
