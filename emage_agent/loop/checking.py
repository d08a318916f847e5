"""Detector verification inside a session: the object list asked once, then every evaluation checked.

The object list is asked of the evaluator (a VLM call) the first time it is needed and kept in the session's
options, so a resumed session does not ask again. A detector that fails (weights missing, the ``[detect]``
extra not installed) is reported once and the session goes on with the VLM's judgement alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image

from emage_agent.core.detection import Detection, ObjectSpec, verify
from emage_agent.core.errors import ExecutionFailure, UserError
from emage_agent.core.evaluation import Evaluation
from emage_agent.core.events import EventPayload, Warned
from emage_agent.session import SessionStore


class DetectorCheck:
    """``check(image, evaluation)`` -> the evaluation with the detector's confident disagreements applied."""

    def __init__(
        self,
        store: SessionStore,
        evaluator: Any,
        detector: Callable[[Image.Image, list[str]], list[Detection]],
        confidence: float,
        emit: Callable[[str, EventPayload], None],
        record_usage: Callable[[int | None], None],
    ) -> None:
        self.store = store
        self.evaluator = evaluator
        self.detector: Callable[[Image.Image, list[str]], list[Detection]] | None = detector
        self.confidence = confidence
        self._emit = emit
        self._record_usage = record_usage

    def objects(self) -> list[ObjectSpec]:
        stored = self.store.info.options.get("objects")
        if stored is None:
            ask = getattr(self.evaluator, "objects", None)
            specs: list[ObjectSpec] = []
            if ask is not None:
                try:
                    specs = ask(self.store.info.original_prompt)
                except ExecutionFailure as exc:
                    self._emit(f"object list unavailable ({exc}); detector verification skipped", Warned())
                finally:
                    self._record_usage(self.store.info.head_step)
            stored = [s.model_dump() for s in specs]
            self.store.update_options({"objects": stored})
        return [ObjectSpec.model_validate(o) for o in stored]

    def __call__(self, image: Image.Image, evaluation: Evaluation) -> Evaluation:
        if self.detector is None:
            return evaluation
        objects = self.objects()
        if not objects:
            return evaluation
        try:
            detections = self.detector(image, [o.name for o in objects])
        except (ExecutionFailure, UserError) as exc:
            hint = " (install emage-agent[detect])" if "scipy" in str(exc) else ""
            self._emit(f"detector verification switched off for this session: {exc}{hint}", Warned())
            self.detector = None
            return evaluation
        checked, evidence = verify(evaluation, objects, detections, self.confidence)
        for item in evidence:
            self._emit(f"detector: {item.detail}", Warned(change=item.kind, boxes=item.boxes))
        seen = [
            {"kind": "detections", "object": d.label, "detail": f"score {d.score:.2f}", "boxes": [d.box]}
            for d in detections
        ]
        return checked.model_copy(update={"evidence": [e.model_dump() for e in evidence] + seen})
