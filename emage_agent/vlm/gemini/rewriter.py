"""Prompt rewriting with Gemini; the intent check and the offline rule are shared (``vlm.rewriting``)."""

from __future__ import annotations

import logging

from emage_agent.core.errors import UnreadableAnswer, VLMUnavailable
from emage_agent.core.evaluation import Issue
from emage_agent.vlm.answers import RewriteAnswer, rewrite_instructions
from emage_agent.vlm.gemini.client import GeminiClient, types
from emage_agent.vlm.parsing import extract_json
from emage_agent.vlm.rewriting import Rewrite, fallback_rewrite, finish_rewrite, missing_words, offline_rewrite

log = logging.getLogger("emage_agent.vlm.gemini")

__all__ = ["Rewrite", "Rewriter", "missing_words", "offline_rewrite"]


class Rewriter:
    """``rewrite(...)`` -> ``Rewrite``; falls back to ``offline_rewrite`` when Gemini is unavailable or unreadable."""

    def __init__(self, client: GeminiClient) -> None:
        self.client = client

    def rewrite(self, prompt: str, original_prompt: str, issues: list[Issue], focus: str | None = None) -> Rewrite:
        try:
            return self._ask(prompt, original_prompt, issues, focus)
        except (VLMUnavailable, UnreadableAnswer) as exc:
            log.warning("gemini rewrite failed (%s); using the offline rewrite", exc)
            why = "Gemini unavailable" if isinstance(exc, VLMUnavailable) else "Gemini's answer unreadable"
            return fallback_rewrite(prompt, original_prompt, issues, focus, why)

    def _ask(self, prompt: str, original_prompt: str, issues: list[Issue], focus: str | None) -> Rewrite:
        text = rewrite_instructions(prompt, original_prompt, issues, focus)
        config = types.GenerateContentConfig(
            response_mime_type="application/json",
            response_schema=RewriteAnswer,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        response = self.client.generate("rewrite", [types.Content(role="user", parts=[types.Part(text=text)])], config)
        data = response.parsed.model_dump() if isinstance(response.parsed, RewriteAnswer) else None
        if data is None:
            candidates = response.candidates or []
            parts = (candidates[0].content.parts or []) if candidates and candidates[0].content else []
            data = extract_json("".join(p.text for p in parts if p.text and not p.thought))
        return finish_rewrite(data, original_prompt, "gemini")
