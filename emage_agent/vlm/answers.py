"""What every backend asks a VLM to answer, and how user remarks are pinned onto its evaluation.

Why a separate answer model: ``Evaluation`` is the project's public format, strict on purpose; the answer
schema only steers the model (issues before the score, so it commits to problems before it scores) and
adds ``feedback_index`` to tie an issue to a user remark. Out-of-range answers are recovered (and clamped)
by ``parsing.read_evaluation``. The same schemas go to Gemini (``response_schema``), to OpenAI-compatible
servers (``response_format``) and, tightened, to the local model's constrained decoder.
"""

from __future__ import annotations

import logging
import re

from pydantic import BaseModel, Field

from emage_agent.core.evaluation import Evaluation, Issue, IssueCategory
from emage_agent.core.resources import load_prompt

log = logging.getLogger("emage_agent.vlm")


class IssueAnswer(BaseModel):
    category: IssueCategory = Field(description="object | spatial | style | prompt | semantic, as defined above")
    severity: float = Field(ge=0, le=1, description="0.1 cosmetic .. 1.0 the request is not met")
    description: str = Field(description="What is wrong, concretely; for a user remark, the remark verbatim")
    target: str | None = Field(default=None, description="The object or region concerned, in a few words")
    box: list[int] | None = Field(default=None, description="[ymin, xmin, ymax, xmax] in 0..1000, or null")
    feedback_index: int | None = Field(default=None, description="Number of the user remark this records, or null")


class EvaluationAnswer(BaseModel):
    issues: list[IssueAnswer] = Field(description="Every problem found, most severe first; empty if none")
    satisfaction_score: float = Field(ge=0, le=1, description="How well the image fulfils the request, per the rubric")
    summary: str = Field(description="One sentence: the verdict and the main problem, if any")


_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("spatial", r"\b(left|right|above|below|behind|in front|next to|on top|under|bigger|smaller|size|position)"),
    ("style", r"\b(colou?r|red|blue|green|yellow|dark|bright|light|style|texture|painting|photo|realistic)"),
    ("object", r"\b(missing|extra|remove|add|no |there should|wrong|instead)"),
)


def _guess_category(remark: str) -> IssueCategory:
    """A category for a user remark the model did not record (it is then still an issue of full weight)."""
    for category, pattern in _KEYWORDS:
        if re.search(pattern, remark, flags=re.I):
            return category  # type: ignore[return-value]
    return "semantic"


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def apply_feedback(evaluation: Evaluation, remarks: dict[int, Issue], feedback: list[str]) -> Evaluation:
    """Every user remark as an issue of severity 1.0 with its words verbatim, first in the list.

    The model's issue for a remark is found by ``feedback_index`` (1-based) or by identical text; its
    category and box are kept. A remark the model ignored is added with a guessed category.
    """
    issues = list(evaluation.issues)
    pinned: list[Issue] = []
    for number, remark in enumerate(feedback, start=1):
        match = remarks.get(number) or next((i for i in issues if _norm(i.description) == _norm(remark)), None)
        if match is not None and match in issues:
            issues.remove(match)
            pinned.append(match.model_copy(update={"severity": 1.0, "description": remark}))
        else:
            log.info("evaluation: user remark %d was not recorded by the model; adding it", number)
            pinned.append(Issue(category=_guess_category(remark), severity=1.0, description=remark))
    return evaluation.model_copy(update={"issues": pinned + issues})


class RewriteAnswer(BaseModel):
    prompt: str = Field(description="The new FLUX prompt, keeping every element of the original request")
    rationale: str = Field(description="One line: what was made explicit and why")


def clean_remarks(feedback: list[str] | None) -> list[str]:
    return [r.strip() for r in feedback or [] if r and r.strip()]


def evaluator_instructions(prompt: str, original_prompt: str | None, remarks: list[str]) -> str:
    """The evaluator prompt (``prompts/evaluator.md``) filled in; the image travels beside it."""
    return load_prompt(
        "evaluator",
        original_prompt=(original_prompt or prompt).strip(),
        prompt=prompt.strip(),
        feedback="\n".join(f"{n}. {r}" for n, r in enumerate(remarks, start=1)) or "(none)",
    )


def rewrite_instructions(prompt: str, original_prompt: str, issues: list[Issue], focus: str | None) -> str:
    """The rewrite prompt (``prompts/rewrite.md``) filled in."""
    listed = "\n".join(
        f"- [{i.category}, severity {i.severity:.2f}] {i.description}" + (f" (target: {i.target})" if i.target else "")
        for i in sorted(issues, key=lambda i: -i.severity)
    )
    return load_prompt(
        "rewrite",
        original_prompt=original_prompt.strip(),
        prompt=(prompt or original_prompt).strip(),
        issues=listed or "(none listed)",
        focus=(focus or "").strip() or "the problems above",
    )
