"""The small interfaces the loop talks through, so Gemini, the selector-only mode and tests plug in alike.

Images cross these boundaries as PNG bytes: the Gemini layer never sees PIL or torch objects.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, Protocol

from PIL import Image

from emage_agent.evaluation import Evaluation, Issue
from emage_agent.planning import PlanningContext, PlanResult, ToolReport


class Evaluates(Protocol):
    def evaluate(
        self, image_png: bytes, prompt: str, original_prompt: str | None = None, feedback: list[str] | None = None
    ) -> Evaluation: ...


class Plans(Protocol):
    def plan(self, ctx: PlanningContext, feedback: str | None = None) -> PlanResult: ...
    def report(self, reports: list[ToolReport]) -> None: ...


class Rewrites(Protocol):
    def rewrite(self, prompt: str, original_prompt: str, issues: list[Issue], focus: str | None = None) -> Any: ...


class RunsTools(Protocol):
    def run(
        self,
        tool: str,
        args: dict[str, Any],
        images: dict[str, Image.Image] | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> Any: ...


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
