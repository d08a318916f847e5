"""The evaluator: Gemini judges one image against the user's intent and returns an ``Evaluation``.

Why a separate answer model: ``Evaluation`` is the project's public format, strict on purpose; the answer
schema only steers the model (issues before the score, so it commits to problems before it scores) and
adds ``feedback_index`` to tie an issue to a user remark. Out-of-range answers fail the SDK's parse and are
recovered (and clamped) by ``parsing.read_evaluation``.
"""

from __future__ import annotations

import logging
import re

from pydantic import BaseModel, Field

from emage_agent.evaluation import Evaluation, Issue, IssueCategory
from emage_agent.resources import load_prompt
from emage_agent.verification import ObjectSpec
from emage_agent.vlm.gemini.client import GeminiClient, types
from emage_agent.vlm.gemini.parsing import read_evaluation

log = logging.getLogger("emage_agent.vlm.gemini")


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
            log.info("gemini evaluation: user remark %d was not recorded by the model; adding it", number)
            pinned.append(Issue(category=_guess_category(remark), severity=1.0, description=remark))
    return evaluation.model_copy(update={"issues": pinned + issues})


class ObjectAnswer(BaseModel):
    name: str = Field(description="The object as a detector query, one to three words, singular")
    count: int | None = Field(default=None, description="How many the request asks for, or null")
    position: str | None = Field(default=None, description="left | right | top | bottom | center, or null")


class ObjectsAnswer(BaseModel):
    objects: list[ObjectAnswer] = Field(description="The visible objects the request names, at most 8")


class Evaluator:
    """``evaluate(png, prompt)`` -> ``Evaluation``. Raises ``UnreadableAnswer`` rather than guess a score."""

    def __init__(self, client: GeminiClient) -> None:
        self.client = client

    def evaluate(
        self,
        image_png: bytes,
        prompt: str,
        original_prompt: str | None = None,
        feedback: list[str] | None = None,
    ) -> Evaluation:
        remarks = [r.strip() for r in feedback or [] if r and r.strip()]
        instructions = load_prompt(
            "evaluator",
            original_prompt=(original_prompt or prompt).strip(),
            prompt=prompt.strip(),
            feedback="\n".join(f"{n}. {r}" for n, r in enumerate(remarks, start=1)) or "(none)",
        )
        contents = [
            types.Content(
                role="user",
                parts=[types.Part.from_bytes(data=image_png, mime_type="image/png"), types.Part(text=instructions)],
            )
        ]
        config = types.GenerateContentConfig(
            response_mime_type="application/json",
            response_schema=EvaluationAnswer,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        response = self.client.generate("evaluate", contents, config)
        evaluation, tied, how = read_evaluation(response.parsed, _answer_text(response))
        if how != "structured":
            log.warning("gemini evaluation read from %s (structured output did not parse)", how)
        return apply_feedback(evaluation, tied, remarks) if remarks else evaluation

    def objects(self, prompt: str) -> list[ObjectSpec]:
        """The objects the prompt names, for detector verification; asked once per session."""
        contents = [types.Content(role="user", parts=[types.Part(text=load_prompt("objects", prompt=prompt.strip()))])]
        config = types.GenerateContentConfig(
            response_mime_type="application/json",
            response_schema=ObjectsAnswer,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        response = self.client.generate("objects", contents, config)
        parsed = response.parsed
        if not isinstance(parsed, ObjectsAnswer):
            try:
                parsed = ObjectsAnswer.model_validate_json(_answer_text(response))
            except ValueError:
                log.warning("gemini object list unreadable; detector verification is skipped")
                return []
        specs: list[ObjectSpec] = []
        for item in parsed.objects[:8]:
            position = item.position if item.position in ("left", "right", "top", "bottom", "center") else None
            count = item.count if item.count is not None and 0 <= item.count <= 50 else None
            if item.name.strip():
                specs.append(ObjectSpec(name=item.name.strip()[:100], count=count, position=position))
        return specs


def _answer_text(response: types.GenerateContentResponse) -> str:
    """The answer's visible text (thought parts skipped), and why there is none when it was blocked."""
    candidates = response.candidates or []
    parts = (candidates[0].content.parts or []) if candidates and candidates[0].content else []
    text = "".join(p.text for p in parts if p.text and not p.thought)
    if text:
        return text
    block = response.prompt_feedback.block_reason if response.prompt_feedback else None
    finish = candidates[0].finish_reason if candidates else None
    return f"(no text; block_reason={block}, finish_reason={finish})" if block or finish else ""
