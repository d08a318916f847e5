"""Detector verification: an open-vocabulary detector's counts and boxes checked against the VLM's judgement.

A VLM judge is weakest at what text-to-image models get wrong most: counting and positions. The objects the
prompt names (extracted once per session) are looked for with a detector; where it and the VLM disagree with
confidence, the evaluation changes and the evidence is kept beside it, boxes included:

- a count the detector contradicts (two dogs found, three asked) and the VLM did not flag adds an object issue;
- an object the VLM calls missing that the detector finds confidently, as often as asked, has that issue's
  severity lowered;
- a position the detector contradicts adds a spatial issue;
- a detector box inside the VLM's box for the same object replaces it, so make_mask gets the tighter region.

Pure: data in, data out.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from emage_agent.core.evaluation import Evaluation, Issue

Position = Literal["left", "right", "top", "bottom", "center"]
MISSING = re.compile(r"\b(missing|absent|no\b|not (present|visible|shown)|lacks?|there (is|are) no|only \d)", re.I)
LOWER_FACTOR = 0.5  # severity kept by a "missing" issue the detector refutes
COUNT_SEVERITY = 0.7
POSITION_SEVERITY = 0.5


class ObjectSpec(BaseModel):
    """One object the prompt names: how many (``None``: any) and where (``None``: anywhere)."""

    name: str = Field(min_length=1, max_length=100)
    count: int | None = Field(default=None, ge=0, le=50)
    position: Position | None = None


class Detection(BaseModel):
    """One detector box, ``[ymin, xmin, ymax, xmax]`` in 0..1000 like the VLM's."""

    label: str
    score: float = Field(ge=0.0, le=1.0)
    box: list[int]


class Evidence(BaseModel):
    """What the detector changed in an evaluation, and the boxes it saw."""

    kind: Literal["count_added", "missing_lowered", "position_added", "box_tightened"]
    object: str
    detail: str
    boxes: list[list[int]] = Field(default_factory=list)


def _mentions(issue: Issue, name: str) -> bool:
    text = f"{issue.target or ''} {issue.description}".casefold()
    return any(word in text for word in name.casefold().split() if len(word) > 2)


def _where(box: list[int]) -> dict[Position, bool]:
    cy, cx = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return {"left": cx < 450, "right": cx > 550, "top": cy < 450, "bottom": cy > 550, "center": 300 < cx < 700}


def _inside(inner: list[int], outer: list[int]) -> bool:
    smaller = (inner[2] - inner[0]) * (inner[3] - inner[1]) < (outer[2] - outer[0]) * (outer[3] - outer[1])
    return smaller and inner[0] >= outer[0] and inner[1] >= outer[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def verify(
    evaluation: Evaluation, objects: list[ObjectSpec], detections: list[Detection], confident: float = 0.3
) -> tuple[Evaluation, list[Evidence]]:
    """The evaluation with the detector's confident disagreements applied, and the evidence for each change."""
    issues = list(evaluation.issues)
    evidence: list[Evidence] = []
    for spec in objects:
        found = sorted(
            (d for d in detections if d.label.casefold() == spec.name.casefold() and d.score >= confident),
            key=lambda d: -d.score,
        )
        boxes = [d.box for d in found]
        about = [i for i in issues if i.category in ("object", "spatial") and _mentions(i, spec.name)]
        missing = [i for i in about if i.category == "object" and MISSING.search(i.description)]
        enough = len(found) >= (spec.count or 1)
        if missing and enough and (spec.count is None or len(found) == spec.count):
            for issue in missing:
                lowered = issue.model_copy(update={"severity": round(issue.severity * LOWER_FACTOR, 4)})
                issues[issues.index(issue)] = lowered
            detail = f"the detector finds {len(found)} {spec.name}; the judge called it missing: severity lowered"
            evidence.append(Evidence(kind="missing_lowered", object=spec.name, detail=detail, boxes=boxes))
            continue
        if spec.count is not None and len(found) != spec.count and not about:
            detail = f"the detector finds {len(found)} {spec.name} where the prompt asks for {spec.count}"
            box = found[-1].box if len(found) > spec.count else None  # too many: the least certain one
            issues.append(
                Issue(category="object", severity=COUNT_SEVERITY, description=detail, target=spec.name, box=box)
            )
            evidence.append(Evidence(kind="count_added", object=spec.name, detail=detail, boxes=boxes))
            continue
        if spec.position and found and not _where(found[0].box)[spec.position] and not about:
            detail = f"the detector finds the {spec.name} away from the {spec.position}, where the prompt puts it"
            issues.append(Issue(category="spatial", severity=POSITION_SEVERITY, description=detail, target=spec.name))
            evidence.append(Evidence(kind="position_added", object=spec.name, detail=detail, boxes=boxes[:1]))
            continue
        for issue in about:
            tight = next((b for b in boxes if issue.box and _inside(b, issue.box)), None)
            if tight is not None:
                issues[issues.index(issue)] = issue.model_copy(update={"box": tight})
                detail = f"the {spec.name} box {issue.box} tightened to the detector's {tight}"
                evidence.append(Evidence(kind="box_tightened", object=spec.name, detail=detail, boxes=[tight]))
    if not evidence:
        return evaluation, []
    return evaluation.model_copy(update={"issues": issues}), evidence
