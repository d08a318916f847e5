"""Prompt rewriting: Gemini makes the request explicit; an offline rule keeps the agent going without it.

Why the intent check: a rewrite that drops an element of the user's request (a noun, a colour, a
style word) silently changes what the agent optimises for. Every content word of the original request
must therefore survive; words Gemini dropped are appended rather than lost, and the rationale says so.
"""

from __future__ import annotations

import logging
import re
from typing import Literal

from pydantic import BaseModel, Field

from emage_agent.errors import GeminiUnavailable, UnreadableAnswer
from emage_agent.evaluation import PROMPT_SIDE, Issue
from emage_agent.resources import load_prompt
from emage_agent.vlm.gemini.client import GeminiClient, types
from emage_agent.vlm.gemini.parsing import extract_json

log = logging.getLogger("emage_agent.vlm.gemini")

MAX_PROMPT_CHARS = 2000  # the tools' contracts cap prompts at 2000 characters
_STOPWORDS = frozenset(
    {
        "the", "and", "with", "for", "from", "are", "its", "this", "that", "very", "some", "into", "onto",
        "over", "under", "has", "have", "while", "there", "their", "which", "who", "whose", "being", "been",
        "was", "were", "them", "they", "then", "than", "also", "just", "should", "must", "each", "any", "all",
    }
)  # fmt: skip


class Rewrite(BaseModel):
    """A rewritten prompt, why, and whether Gemini or the offline rule wrote it."""

    prompt: str
    rationale: str
    source: Literal["gemini", "offline"]


class RewriteAnswer(BaseModel):
    prompt: str = Field(description="The new FLUX prompt, keeping every element of the original request")
    rationale: str = Field(description="One line: what was made explicit and why")


def _stem(word: str) -> str:
    word = word.casefold()
    for suffix in ("es", "s"):
        if len(word) > 4 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> list[str]:
    """The words that carry the request (three letters or more, no function words), in order, once each."""
    words = [w for w in re.findall(r"[^\W_]+(?:['-][^\W_]+)*", text) if len(w) >= 3 and w.casefold() not in _STOPWORDS]
    return list(dict.fromkeys(words))


def missing_words(candidate: str, original: str) -> list[str]:
    """Content words of ``original`` that ``candidate`` lost (plural and case ignored)."""
    kept = {_stem(w) for w in re.findall(r"[^\W_]+(?:['-][^\W_]+)*", candidate)}
    return [w for w in content_words(original) if _stem(w) not in kept]


def _fit(prompt: str) -> str:
    """At most ``MAX_PROMPT_CHARS``, cut at a comma or space rather than mid-word."""
    if len(prompt) <= MAX_PROMPT_CHARS:
        return prompt
    cut = prompt[:MAX_PROMPT_CHARS]
    return cut[: max(cut.rfind(","), cut.rfind(" "))].rstrip(" ,") or cut


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[^\W_]+", text.casefold()))


def offline_rewrite(prompt: str, original_prompt: str, issues: list[Issue], focus: str | None = None) -> Rewrite:
    """Deterministic rewrite: the prompt plus the elements the prompt/semantic issues and focus name.

    Nothing is removed; an element already in the prompt (or added twice) is not added again; words of
    the original request missing from the prompt are restored first.
    """
    base = (prompt or original_prompt).strip().rstrip(" .,;")
    lost = missing_words(base, original_prompt)
    if lost:
        base = f"{base}, {', '.join(lost)}"
    wanted = [focus] if focus and focus.strip() else []
    ranked = sorted((i for i in issues if i.category in PROMPT_SIDE), key=lambda i: -i.severity)
    wanted += [i.target or i.description for i in ranked]
    added: list[str] = []
    for element in (w.strip().rstrip(" .") for w in wanted):
        key = _norm(element)
        if key and key not in _norm(base) and all(key != _norm(a) for a in added):
            added.append(element)
    new_prompt = _fit(f"{base}, {', '.join(added)}" if added else base)
    parts = [f"restored {', '.join(lost)}" if lost else "", f"added {'; '.join(added)}" if added else ""]
    done = "; ".join(p for p in parts if p) or "the prompt already names every element the issues mention"
    return Rewrite(prompt=new_prompt, rationale=f"offline rewrite: {done}", source="offline")


class Rewriter:
    """``rewrite(...)`` -> ``Rewrite``; falls back to ``offline_rewrite`` when Gemini is unavailable or unreadable."""

    def __init__(self, client: GeminiClient) -> None:
        self.client = client

    def rewrite(self, prompt: str, original_prompt: str, issues: list[Issue], focus: str | None = None) -> Rewrite:
        try:
            return self._ask(prompt, original_prompt, issues, focus)
        except (GeminiUnavailable, UnreadableAnswer) as exc:
            log.warning("gemini rewrite failed (%s); using the offline rewrite", exc)
            fallback = offline_rewrite(prompt, original_prompt, issues, focus)
            why = "Gemini unavailable" if isinstance(exc, GeminiUnavailable) else "Gemini's answer unreadable"
            return fallback.model_copy(update={"rationale": f"{fallback.rationale} ({why})"})

    def _ask(self, prompt: str, original_prompt: str, issues: list[Issue], focus: str | None) -> Rewrite:
        listed = "\n".join(
            f"- [{i.category}, severity {i.severity:.2f}] {i.description}"
            + (f" (target: {i.target})" if i.target else "")
            for i in sorted(issues, key=lambda i: -i.severity)
        )
        text = load_prompt(
            "rewrite",
            original_prompt=original_prompt.strip(),
            prompt=(prompt or original_prompt).strip(),
            issues=listed or "(none listed)",
            focus=(focus or "").strip() or "the problems above",
        )
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
            found = extract_json("".join(p.text for p in parts if p.text and not p.thought))
            data = found if isinstance(found, dict) else {}
        new_prompt = str(data.get("prompt") or "").strip()
        if not new_prompt:
            raise UnreadableAnswer("Gemini's rewrite has no prompt")
        rationale = str(data.get("rationale") or "").strip() or "rewritten by Gemini"
        lost = missing_words(new_prompt, original_prompt)
        if lost:
            new_prompt = f"{new_prompt.rstrip(' .')}, {', '.join(lost)}"
            rationale += f" (restored from the original request: {', '.join(lost)})"
        return Rewrite(prompt=_fit(new_prompt), rationale=rationale, source="gemini")
