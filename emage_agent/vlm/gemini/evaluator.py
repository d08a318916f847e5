"""The evaluator: Gemini judges one image against the user's intent and returns an ``Evaluation``.

The answer schema and the remark pinning are shared by every backend (``emage_agent.vlm.answers``);
out-of-range answers fail the SDK's parse and are read by ``parsing.read_answer``: issues leniently, the score
strictly (malformed: asked again once, then ``UnreadableAnswer``).
"""

from __future__ import annotations

import logging

from pydantic import BaseModel, Field

from emage_agent.core.detection import ObjectSpec
from emage_agent.core.evaluation import Evaluation
from emage_agent.core.resources import load_prompt
from emage_agent.vlm.answers import EvaluationAnswer, apply_feedback, clean_remarks, evaluator_instructions
from emage_agent.vlm.gemini.client import GeminiClient, types
from emage_agent.vlm.parsing import read_answer

log = logging.getLogger("emage_agent.vlm.gemini")


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
        remarks = clean_remarks(feedback)
        instructions = evaluator_instructions(prompt, original_prompt, remarks)
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

        def ask() -> tuple[object, str]:
            response = self.client.generate("evaluate", contents, config)
            return response.parsed, _answer_text(response)

        evaluation, tied, how = read_answer(ask, self.client.calls, self.client.scrub)
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
