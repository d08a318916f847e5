"""Judging and rewriting through an OpenAI-compatible server: one chat completion each, JSON answers.

The prompts, answer schemas, lenient reading and the rewrite's intent check are the shared ones
(``vlm.answers``, ``vlm.parsing``, ``vlm.rewriting``); only the message format is this backend's.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from emage_agent.core.errors import UnreadableAnswer, VLMUnavailable
from emage_agent.core.evaluation import Evaluation, Issue
from emage_agent.vlm.answers import (
    EvaluationAnswer,
    RewriteAnswer,
    apply_feedback,
    clean_remarks,
    evaluator_instructions,
    rewrite_instructions,
)
from emage_agent.vlm.openai_compat.client import OpenAIClient
from emage_agent.vlm.parsing import extract_json, read_answer
from emage_agent.vlm.rewriting import Rewrite, fallback_rewrite, finish_rewrite

log = logging.getLogger("emage_agent.vlm.openai")


def image_part(png: bytes) -> dict[str, Any]:
    """A PNG as an ``image_url`` content part (a data URL: no upload, works on every server)."""
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def answer_text(response: Any) -> str:
    """The first choice's text; ``""`` when it has none."""
    message = response.choices[0].message if response.choices else None
    content = getattr(message, "content", None)
    return content if isinstance(content, str) else ""


class Evaluator:
    """``evaluate(png, prompt)`` -> ``Evaluation``. Raises ``UnreadableAnswer`` rather than guess a score."""

    def __init__(self, client: OpenAIClient) -> None:
        self.client = client

    def evaluate(
        self, image_png: bytes, prompt: str, original_prompt: str | None = None, feedback: list[str] | None = None
    ) -> Evaluation:
        remarks = clean_remarks(feedback)
        text = evaluator_instructions(prompt, original_prompt, remarks)
        messages = [
            {
                "role": "user",
                "content": [image_part(image_png), text_part(text)],
            }
        ]

        def ask() -> tuple[None, str]:
            schema = EvaluationAnswer.model_json_schema()
            return None, answer_text(self.client.chat_json("evaluate", messages, "evaluation", schema))

        evaluation, tied, how = read_answer(ask, self.client.calls, self.client.scrub)
        if how != "json_in_text":
            log.warning("openai evaluation read from %s (no JSON object in the answer)", how)
        return apply_feedback(evaluation, tied, remarks) if remarks else evaluation


class Rewriter:
    """``rewrite(...)`` -> ``Rewrite``; the offline rewrite when the server is unavailable or unreadable."""

    def __init__(self, client: OpenAIClient) -> None:
        self.client = client

    def rewrite(self, prompt: str, original_prompt: str, issues: list[Issue], focus: str | None = None) -> Rewrite:
        try:
            text = rewrite_instructions(prompt, original_prompt, issues, focus)
            messages = [{"role": "user", "content": text}]
            response = self.client.chat_json("rewrite", messages, "rewrite", RewriteAnswer.model_json_schema())
            return finish_rewrite(extract_json(answer_text(response)), original_prompt, "openai")
        except (VLMUnavailable, UnreadableAnswer) as exc:
            log.warning("openai rewrite failed (%s); using the offline rewrite", exc)
            why = "server unavailable" if isinstance(exc, VLMUnavailable) else "the server's answer unreadable"
            return fallback_rewrite(prompt, original_prompt, issues, focus, why)
