"""The evaluator, once for every backend: one image judged against the user's intent, an ``Evaluation`` back.

The answer schema and the remark pinning are shared (``vlm.answers``); a malformed answer is read leniently
(issues) or strictly (the score: asked again once, then ``UnreadableAnswer``) by ``parsing.read_answer``.
The transport decides how the schema reaches the model (a response schema, a JSON format, a grammar).
"""

from __future__ import annotations

import logging

from pydantic import BaseModel, Field

from emage_agent.core.detection import ObjectSpec
from emage_agent.core.evaluation import Evaluation
from emage_agent.core.resources import load_prompt
from emage_agent.vlm.answers import EvaluationAnswer, apply_feedback, clean_remarks, evaluator_instructions
from emage_agent.vlm.parsing import read_answer
from emage_agent.vlm.transport import Picture, Request, Text, Transport, Turn

log = logging.getLogger("emage_agent.vlm")
POSITIONS = ("left", "right", "top", "bottom", "center")


class ObjectAnswer(BaseModel):
    name: str = Field(description="The object as a detector query, one to three words, singular")
    count: int | None = Field(default=None, description="How many the request asks for, or null")
    position: str | None = Field(default=None, description="left | right | top | bottom | center, or null")


class ObjectsAnswer(BaseModel):
    objects: list[ObjectAnswer] = Field(description="The visible objects the request names, at most 8")


class Evaluator:
    """``evaluate(png, prompt)`` -> ``Evaluation``. Raises ``UnreadableAnswer`` rather than guess a score."""

    def __init__(self, client: Transport) -> None:
        self.client = client

    def evaluate(
        self, image_png: bytes, prompt: str, original_prompt: str | None = None, feedback: list[str] | None = None
    ) -> Evaluation:
        remarks = clean_remarks(feedback)
        text = evaluator_instructions(prompt, original_prompt, remarks)
        request = Request("evaluate", [Turn("user", [Picture(image_png), Text(text)])], answer=EvaluationAnswer)

        def ask() -> tuple[object, str]:
            reply = self.client.request(request)
            return reply.parsed, reply.text

        evaluation, tied, how = read_answer(ask, self.client.calls, self.client.scrub)
        if how != ("structured" if self.client.parses_answers else "json_in_text"):
            log.warning("%s evaluation read from %s (the answer format did not hold)", self.client.backend, how)
        return apply_feedback(evaluation, tied, remarks) if remarks else evaluation

    def objects(self, prompt: str) -> list[ObjectSpec]:
        """The objects the prompt names, for detector verification; asked once per session.

        A backend that is not asked (``answers_objects`` False) gives none, and verification is skipped."""
        if not self.client.answers_objects:
            return []
        text = load_prompt("objects", prompt=prompt.strip())
        reply = self.client.request(Request("objects", [Turn("user", [Text(text)])], answer=ObjectsAnswer))
        parsed = reply.parsed
        if not isinstance(parsed, ObjectsAnswer):
            try:
                parsed = ObjectsAnswer.model_validate_json(reply.text)
            except ValueError:
                log.warning("%s object list unreadable; detector verification is skipped", self.client.backend)
                return []
        specs: list[ObjectSpec] = []
        for item in parsed.objects[:8]:
            position = item.position if item.position in POSITIONS else None
            count = item.count if item.count is not None and 0 <= item.count <= 50 else None
            if item.name.strip():
                specs.append(ObjectSpec(name=item.name.strip()[:100], count=count, position=position))
        return specs
