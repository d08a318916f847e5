"""Feedback is a request, not a hint: what a person's words about the image ask of the loop.

While a remark is open (given about the current image, not yet answered by a repair), the loop does
not stop at the threshold or a plateau: the selector weighs the evaluation as if the image fell short,
with each remark an issue of its own, and the edit that runs says in its prompt what was asked.
Pure functions over the floor's data, so the rule is the same in chat, the API, MCP and the web UI.
"""

from __future__ import annotations

from emage_agent.core.evaluation import Evaluation, Issue
from emage_agent.core.planning import ToolCall
from emage_agent.core.tools import registry

REQUEST_MARGIN = 0.05  # how far below the threshold a satisfied judge's score is taken while a request is open
# Edits whose prompt describes the wanted image (the instruction edit says what to change instead).
EDIT_PROMPT_TOOLS = frozenset(t.name for t in registry().values() if t.edits_image and t.takes_prompt)


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def as_request(evaluation: Evaluation, requests: list[str], threshold: float) -> Evaluation:
    """The evaluation the selector weighs while requests are open: below the threshold, each request an issue.

    A judge that kept a remark as an issue decides its category; one it dropped becomes a style issue
    (an edit that keeps the composition), its words carried into the edit's prompt by ``with_request``.
    """
    said = {_norm(i.description) for i in evaluation.issues}
    added = [Issue(category="style", severity=1.0, description=r) for r in requests if _norm(r) not in said]
    score = min(evaluation.satisfaction_score, max(0.0, threshold - REQUEST_MARGIN))
    return evaluation.model_copy(update={"satisfaction_score": score, "issues": added + list(evaluation.issues)})


def with_request(call: ToolCall, requests: list[str], prompt: str) -> ToolCall:
    """An edit run for a request says what was asked, unless its prompt already does."""
    if call.name not in EDIT_PROMPT_TOOLS or not requests:
        return call
    current = str(call.args.get("prompt") or prompt)
    missing = [r for r in requests if r.casefold() not in current.casefold()]
    if not missing:
        return call
    edited = f"{current.rstrip(' .')}. {'. '.join(m.rstrip(' .') for m in missing)}"
    return call.model_copy(update={"args": {**call.args, "prompt": edited[:2000]}})
