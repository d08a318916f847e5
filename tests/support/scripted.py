"""Scripted collaborators for the adapter tests (MCP server, chat): the real Agent, loop and store, no models.

Why scripted and not mocked: the adapters are tested through the real ``Agent``/``Session``
and SQLite store; only the executor (FLUX) and the evaluator/rewriter (Gemini) are replaced by
tiny deterministic stand-ins that honour the loop's protocols, so these tests run in a second
and say exactly which scores the loop saw. The tiny-FLUX + fake-Gemini integration lives in
``test_mcp_flux.py``. This module holds no tests.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from emage_agent.api import Agent
from emage_agent.core.evaluation import Evaluation, Issue
from emage_agent.core.settings import Settings
from emage_agent.executor.types import ToolOutput

STYLE = Issue(category="style", severity=0.8, description="the car should be blue", target="car")
COLOURS = [(200, 40, 40), (40, 40, 200), (40, 160, 40), (200, 200, 40), (120, 40, 160), (40, 160, 160)]


class ScriptedExecutor:
    """Answers every tool with a solid-colour image (or a box mask), reporting diffusion steps."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], list[str]]] = []

    def run(
        self, tool: str, args: dict[str, Any], images: dict[str, Image.Image] | None = None, on_step: Any = None
    ) -> ToolOutput:
        images = images or {}
        self.calls.append((tool, dict(args), sorted(images)))
        total = int(args.get("steps", 2))
        for i in range(1, total + 1):
            if on_step is not None:
                on_step(i, total)
        size = (int(args.get("width", 64)), int(args.get("height", 64))) if tool == "generate" else images["image"].size
        if tool == "make_mask":
            mask = Image.new("L", size, 0)
            ImageDraw.Draw(mask).rectangle([size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4], fill=255)
            return ToolOutput(tool=tool, mask=mask, seconds=0.01, coverage=0.25)
        colour = COLOURS[len(self.calls) % len(COLOURS)]
        return ToolOutput(tool=tool, image=Image.new("RGB", size, colour), seed=args.get("seed", 1), seconds=0.01)


class ScriptedEvaluator:
    """Returns the scripted scores in order (then the last one again), with a style issue below 0.8."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = deque(scores)
        self.last = scores[-1] if scores else 0.5
        self.seen: list[dict[str, Any]] = []

    def evaluate(
        self, image_png: bytes, prompt: str, original_prompt: str | None = None, feedback: list[str] | None = None
    ) -> Evaluation:
        self.seen.append({"prompt": prompt, "feedback": list(feedback or []), "png": len(image_png)})
        score = self.scores.popleft() if self.scores else self.last
        self.last = score
        issues = [STYLE] if score < 0.8 else []
        return Evaluation(satisfaction_score=score, issues=issues, summary=f"scored {score}")


@dataclass
class Rewrite:
    prompt: str
    rationale: str = "made the colours explicit"
    source: str = "scripted"


class ScriptedRewriter:
    def rewrite(self, prompt: str, original_prompt: str, issues: list[Issue], focus: str | None = None) -> Rewrite:
        return Rewrite(prompt=f"{prompt}, clearly")


def scripted_agent(root: Path, scores: list[float] | None = None) -> Agent:
    """The real Agent on scripted collaborators; the planner is the selector (no Gemini chat)."""
    settings = Settings(_env_file=None, session_root=root, device="cpu", kontext_model="none", detector="none")
    return Agent(
        settings,
        root=root,
        executor=ScriptedExecutor(),
        evaluator=ScriptedEvaluator(scores or [0.5]),
        rewriter=ScriptedRewriter(),
        planner_factory=lambda: None,
    )


def fake_png(path: Path, size: tuple[int, int] = (600, 400)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 120, 200)).save(path)
    return path
