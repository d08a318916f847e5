"""Prompt rewriting shared by every backend: the intent check, and an offline rule for when no model answers.

Why the intent check: a rewrite that drops an element of the user's request (a noun, a colour, a
style word) silently changes what the agent optimises for. Every content word of the original request
must therefore survive; words the model dropped are appended rather than lost, and the rationale says so.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from emage_agent.core.errors import UnreadableAnswer
from emage_agent.core.evaluation import PROMPT_SIDE, Issue

MAX_PROMPT_CHARS = 2000  # the tools' contracts cap prompts at 2000 characters
_STOPWORDS = frozenset(
    {
        "the", "and", "with", "for", "from", "are", "its", "this", "that", "very", "some", "into", "onto",
        "over", "under", "has", "have", "while", "there", "their", "which", "who", "whose", "being", "been",
        "was", "were", "them", "they", "then", "than", "also", "just", "should", "must", "each", "any", "all",
    }
)  # fmt: skip


class Rewrite(BaseModel):
    """A rewritten prompt, why, and which backend (or the offline rule) wrote it."""

    prompt: str
    rationale: str
    source: str  # the transport's backend (gemini, openai, local, ...) or "offline"


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


def fit(prompt: str) -> str:
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
    new_prompt = fit(f"{base}, {', '.join(added)}" if added else base)
    parts = [f"restored {', '.join(lost)}" if lost else "", f"added {'; '.join(added)}" if added else ""]
    done = "; ".join(p for p in parts if p) or "the prompt already names every element the issues mention"
    return Rewrite(prompt=new_prompt, rationale=f"offline rewrite: {done}", source="offline")


def finish_rewrite(data: Any, original_prompt: str, source: str) -> Rewrite:
    """A model's decoded answer as a ``Rewrite``: lost words restored, length fitted; unreadable raises."""
    data = data if isinstance(data, dict) else {}
    new_prompt = str(data.get("prompt") or "").strip()
    if not new_prompt:
        raise UnreadableAnswer(f"the {source} rewrite has no prompt")
    rationale = str(data.get("rationale") or "").strip() or f"rewritten by {source}"
    lost = missing_words(new_prompt, original_prompt)
    if lost:
        new_prompt = f"{new_prompt.rstrip(' .')}, {', '.join(lost)}"
        rationale += f" (restored from the original request: {', '.join(lost)})"
    return Rewrite(prompt=fit(new_prompt), rationale=rationale, source=source)


def fallback_rewrite(prompt: str, original_prompt: str, issues: list[Issue], focus: str | None, why: str) -> Rewrite:
    """The offline rewrite, with the reason the model's was not used in its rationale."""
    fallback = offline_rewrite(prompt, original_prompt, issues, focus)
    return fallback.model_copy(update={"rationale": f"{fallback.rationale} ({why})"})
