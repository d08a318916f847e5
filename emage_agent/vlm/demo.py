"""The demo's judge: a scripted, in-process stand-in for the VLM, so ``--demo`` needs no key and no network.

Why scripted and not random: a newcomer should see the whole flow in a minute, every time the same
way: a first image with issues, repairs that raise the score, a rollback when one does not, and a stop
at the threshold. The judge names the prompt's own words as its issues, so the lines on screen, the
session and the report read like a real run, while every summary says the scores are scripted. The
rewriter is the offline one (no model), as used when the planner's VLM is unreachable.
"""

from __future__ import annotations

import re
from typing import Any

from emage_agent.core.evaluation import Evaluation, Issue
from emage_agent.vlm.rewriting import Rewrite, offline_rewrite

# The score of each judgement in order, then the last again: issues, repairs, one regression, success.
SCORES = (0.46, 0.62, 0.55, 0.84)
STOP_WORDS = frozenset({"a", "an", "the", "on", "in", "of", "with", "and", "at", "to", "by", "for", "under", "over"})
NOTE = "DEMO: scripted judge, not a real evaluation"


def prompt_objects(prompt: str) -> list[str]:
    """The prompt's likely nouns, in order: content words followed by a small word, a comma or the end."""
    words = re.findall(r"[^\W\d_]+", prompt.casefold())
    nouns = [
        w for w, nxt in zip(words, [*words[1:], ""], strict=True) if w not in STOP_WORDS and nxt in STOP_WORDS | {""}
    ]
    return nouns[:6] or [w for w in words if w not in STOP_WORDS][:1] or ["subject"]


class DemoJudge:
    """Scores from ``SCORES`` in order; issues name the prompt's words and shrink as the score rises."""

    def __init__(self, scores: tuple[float, ...] = SCORES) -> None:
        self.scores = list(scores)
        self.calls = 0

    def evaluate(
        self, image_png: bytes, prompt: str, original_prompt: str | None = None, feedback: list[str] | None = None
    ) -> Evaluation:
        score = self.scores[min(self.calls, len(self.scores) - 1)]
        self.calls += 1
        words = prompt_objects(original_prompt or prompt)
        issues: list[Issue] = [
            Issue(category="object", severity=0.7, description=f"the {words[0]} is hard to make out", target=words[0])
        ]
        if len(words) > 1:
            issues.append(
                Issue(category="spatial", severity=0.5, description=f"the {words[-1]} is not where the prompt says")
            )
        issues += [Issue(category="prompt", severity=0.9, description=text[:200]) for text in feedback or []]
        kept = issues[: max(0, round((0.85 - score) * 10))] if score < 0.85 else []
        summary = f"{NOTE}; the image matches the prompt {'well' if score >= 0.8 else 'partly'}"
        return Evaluation(satisfaction_score=score, issues=kept, summary=summary)

    def rewrite(self, prompt: str, original_prompt: str, issues: list[Issue], focus: str | None = None) -> Rewrite:
        return offline_rewrite(prompt, original_prompt, issues, focus)

    def share_calls(self, calls: Any) -> None:  # the real backends' hook; the demo makes no calls to book
        return None
