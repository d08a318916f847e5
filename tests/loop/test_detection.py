"""Detector verification: the pure reconciliation, the tiny OWLv2 through transformers, and a whole session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emage_agent.core.detection import Detection, ObjectSpec, verify
from emage_agent.core.evaluation import Evaluation, Issue
from emage_agent.executor import Executor
from tests.support.fake_gemini import Request, evaluation_reply, json_reply
from tests.support.tiny_family import TinyFamily

DOG = [
    Detection(label="dog", score=0.9, box=[100, 100, 400, 300]),
    Detection(label="dog", score=0.8, box=[100, 600, 400, 800]),
]


def test_two_dogs_found_where_three_are_asked_adds_a_counting_issue() -> None:
    evaluation = Evaluation(satisfaction_score=0.9, issues=[])
    checked, evidence = verify(evaluation, [ObjectSpec(name="dog", count=3)], DOG)
    assert [e.kind for e in evidence] == ["count_added"]
    assert evidence[0].boxes == [d.box for d in DOG]
    issue = checked.issues[0]
    assert issue.category == "object" and issue.target == "dog" and "finds 2 dog" in issue.description
    assert "asks for 3" in issue.description
    same, none = verify(evaluation, [ObjectSpec(name="dog", count=2)], DOG)
    assert none == [] and same is evaluation


def test_a_found_object_the_vlm_called_missing_is_lowered() -> None:
    missing = Issue(category="object", severity=0.8, description="The dog is missing.", target="the dog")
    evaluation = Evaluation(satisfaction_score=0.5, issues=[missing])
    checked, evidence = verify(evaluation, [ObjectSpec(name="dog", count=2)], DOG)
    assert [e.kind for e in evidence] == ["missing_lowered"]
    assert checked.issues[0].severity == pytest.approx(0.4)
    unsure = [d.model_copy(update={"score": 0.1}) for d in DOG]  # below the confidence bar: no change
    assert verify(evaluation, [ObjectSpec(name="dog", count=2)], unsure)[0].issues[0].severity == 0.8


def test_position_and_tighter_boxes() -> None:
    evaluation = Evaluation(satisfaction_score=0.6, issues=[])
    _, evidence = verify(evaluation, [ObjectSpec(name="dog", position="right")], DOG[:1])
    assert [e.kind for e in evidence] == ["position_added"]
    loose = Issue(
        category="object", severity=0.5, description="the dog's fur is wrong", target="dog", box=[0, 0, 600, 600]
    )
    checked, evidence = verify(Evaluation(satisfaction_score=0.6, issues=[loose]), [ObjectSpec(name="dog")], DOG[:1])
    assert [e.kind for e in evidence] == ["box_tightened"] and checked.issues[0].box == DOG[0].box


@pytest.fixture(scope="module")
def detector_executor(tiny_family: TinyFamily, tiny_settings: Any):
    with Executor(tiny_settings.model_copy(update={"detector": str(tiny_family.detector)})) as shared:
        yield shared


def test_tiny_owlv2_runs_through_transformers(detector_executor: Executor, tiny_image: Any) -> None:
    found = detector_executor.detect(tiny_image, ["dog", "cat"])
    assert found and all(d.label == "dog" and d.score == pytest.approx(0.9526, abs=1e-3) for d in found)
    assert all(0 <= v <= 1000 for d in found for v in d.box)
    assert detector_executor.counters.loads["detector"] == 1
    assert detector_executor.detect(tiny_image, ["dog"]) == found  # deterministic, loaded once
    assert detector_executor.counters.loads["detector"] == 1


def test_session_asks_for_the_objects_once_and_records_the_evidence(
    tiny_family: TinyFamily, tiny_settings: Any, gemini_settings: Any, fake_gemini: Any, detector_executor: Executor,
    tmp_path: Path,
) -> None:  # fmt: skip
    from emage_agent.api import Agent

    seen: dict[str, int] = {}
    evals = [(0.5, [{"category": "object", "severity": 0.9, "description": "the dog is missing", "target": "dog"}])]
    evals.append((0.9, []))

    def handler(request: Request) -> Any:
        props = (request.response_schema or {}).get("properties", {})
        kind = "objects" if "objects" in props else request.purpose
        seen[kind] = seen.get(kind, 0) + 1
        if kind == "objects":
            return json_reply({"objects": [{"name": "dog", "count": None, "position": None}]})
        if kind == "evaluate" and evals:
            score, issues = evals.pop(0)
            return evaluation_reply(score, issues)
        return None

    fake_gemini.handler = handler
    gemini = {k: v for k, v in gemini_settings.model_dump().items() if k.startswith("gemini_")}
    settings = tiny_settings.model_copy(
        update={**gemini, "session_root": tmp_path / "s", "detector": str(tiny_family.detector)}
    )
    agent = Agent(settings, executor=detector_executor)
    session = agent.start("a dog on a lawn", width=64, height=64, steps=2, seed=1, planner="selector")
    first = session.loop.view.current_evaluation()
    assert first is not None and first.issues[0].severity == pytest.approx(0.45)  # the detector saw the dog
    kinds = [e["kind"] for e in first.evidence]
    assert "missing_lowered" in kinds and "detections" in kinds
    session.run(iterations=1)
    assert seen["objects"] == 1 and seen["evaluate"] == 2
    assert session.store.info.options["objects"] == [{"name": "dog", "count": None, "position": None}]


def test_report_shows_detector_boxes_beside_the_issues(tmp_path: Path) -> None:
    from PIL import Image

    from emage_agent.session import SessionStore, StepRecord
    from emage_agent.session.report import write_report

    store = SessionStore.create(tmp_path / "s", original_prompt="three dogs")
    step = store.commit_step(StepRecord(tool="generate", args={}), images={"image": Image.new("RGB", (64, 64))})
    issue = Issue(category="object", severity=0.7, description="the detector finds 2 dog", target="dog")
    evidence = [
        {"kind": "count_added", "object": "dog", "detail": "the detector finds 2 dog", "boxes": [[1, 2, 300, 400]]},
        {"kind": "detections", "object": "dog", "detail": "score 0.90", "boxes": [[1, 2, 300, 400]]},
    ]
    store.attach_evaluation(step, Evaluation(satisfaction_score=0.5, issues=[issue], evidence=evidence))
    page = write_report(store).read_text()
    assert "<h4>Detector</h4>" in page and "count_added" in page and "det dog" in page
