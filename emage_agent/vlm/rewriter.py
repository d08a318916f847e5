"""The rewriter, once for every backend: a better prompt for the same intent, the offline rule as a fallback.

The intent check and the offline rule live in ``vlm.rewriting``; the transport carries the request.
"""

from __future__ import annotations

import logging

from emage_agent.core.errors import UnreadableAnswer
from emage_agent.core.evaluation import Issue
from emage_agent.vlm.answers import RewriteAnswer, rewrite_instructions
from emage_agent.vlm.parsing import extract_json
from emage_agent.vlm.rewriting import Rewrite, fallback_rewrite, finish_rewrite
from emage_agent.vlm.transport import FALLBACK_ERRORS, Request, Text, Transport, Turn

log = logging.getLogger("emage_agent.vlm")


class Rewriter:
    """``rewrite(...)`` -> ``Rewrite``; the offline rewrite when the model is unavailable or unreadable."""

    def __init__(self, client: Transport) -> None:
        self.client = client

    def rewrite(self, prompt: str, original_prompt: str, issues: list[Issue], focus: str | None = None) -> Rewrite:
        text = rewrite_instructions(prompt, original_prompt, issues, focus)
        try:
            reply = self.client.request(Request("rewrite", [Turn("user", [Text(text)])], answer=RewriteAnswer))
            parsed = reply.parsed
            data = parsed.model_dump() if isinstance(parsed, RewriteAnswer) else parsed
            data = data if isinstance(data, dict) else extract_json(reply.text)
            return finish_rewrite(data, original_prompt, self.client.backend)
        except FALLBACK_ERRORS as exc:
            label = self.client.label
            log.warning("%s rewrite failed (%s); using the offline rewrite", self.client.backend, exc)
            why = f"{label}'s answer unreadable" if isinstance(exc, UnreadableAnswer) else f"{label} unavailable"
            return fallback_rewrite(prompt, original_prompt, issues, focus, why)
