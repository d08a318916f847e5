"""Typed step records: decisions, vetoes and clamps, read from what any version of EMage stored."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from emage_agent.core.decisions import Clamp, Decision, StepKind
from emage_agent.core.events import AgentEvent, Decided, DiffusionProgress, Vetoed, Warned
from emage_agent.core.planning import Recommendation, ToolChoice
from emage_agent.session import SessionStore, StepRecord


def test_a_decision_from_a_recommendation_keeps_the_ranking_and_the_request() -> None:
    rec = Recommendation(
        strategy="hybrid",
        reason="both sides",
        prompt_side=0.4,
        image_side=0.4,
        ranked=[ToolChoice(tool="inpaint", weight=0.9, reason="r")],
    )
    decision = Decision.of(rec, ["make it night"])
    assert (
        decision.strategy == "hybrid" and decision.ranked[0].tool == "inpaint" and decision.request == ["make it night"]
    )
    assert decision.stored() == {
        "strategy": "hybrid",
        "reason": "both sides",
        "prompt_side": 0.4,
        "image_side": 0.4,
        "ranked": [{"tool": "inpaint", "weight": 0.9, "reason": "r", "args": {}}],
        "request": ["make it night"],
    }
    assert Decision.read(decision.stored()) == decision


@pytest.mark.parametrize(
    ("raw", "expected", "shown"),
    [
        (
            "generate.steps 100->50",
            Clamp(tool="generate", param="steps", before=100, after=50),
            "generate.steps 100->50",
        ),
        ("edit.guidance 9->5.5", Clamp(tool="edit", param="guidance", before=9, after=5.5), "edit.guidance 9->5.5"),
        ("edit.guidance 9->5.0", Clamp(tool="edit", param="guidance", before=9, after=5), "edit.guidance 9->5"),
        (
            "guidance 9.0 -> 4.0 (schedule)",
            Clamp(text="guidance 9.0 -> 4.0 (schedule)"),
            "guidance 9.0 -> 4.0 (schedule)",
        ),
        ("x.y abc->def", Clamp(text="x.y abc->def"), "x.y abc->def"),
        (
            {"tool": "inpaint", "param": "strength", "before": 1.5, "after": 1.0},
            Clamp(tool="inpaint", param="strength", before=1.5, after=1.0),
            "inpaint.strength 1.5->1",
        ),
        ({"before": "not a number", "text": "odd"}, Clamp(text="odd"), "odd"),
    ],
)
def test_clamps_are_read_from_strings_and_dicts(raw: object, expected: Clamp, shown: str) -> None:
    clamp = Clamp.read(raw)
    assert clamp == expected and str(clamp) == shown


def test_an_old_session_with_loose_records_still_opens(tmp_path: Path) -> None:
    """Rows written before typed records (and by a newer version): unknown keys and values are dropped, not fatal."""
    store = SessionStore.create(tmp_path, "a fox", {})
    store.commit_step(StepRecord(tool="generate", args={"prompt": "a fox"}), {"image": Image.new("RGB", (8, 8))})
    old_decision = {
        "strategy": "some_future_strategy",
        "reason": "prompt-side issues dominate",
        "ranked": [{"tool": "inpaint", "weight": 0.5, "reason": "x", "args": {}}],
        "request": ["darker"],
        "candidate": 2,
        "threshold": 0.7,
        "invented_later": {"a": 1},
    }
    old_clamps = ["generate.steps 100->50", {"text": "by hand"}, 42]
    with sqlite3.connect(store.dir / "session.db") as conn:
        conn.execute(
            "UPDATE step SET decision = ?, clamps = ?, kind = ?, vetoes = ? WHERE step = 1",
            (
                json.dumps(old_decision),
                json.dumps(old_clamps),
                "mystery",
                json.dumps([{"tool": "edit", "reason": "no"}]),
            ),
        )
    rec = store.step(1)
    assert rec.kind == "tool"  # an unknown kind reads as an ordinary tool step
    assert (
        rec.decision is not None
        and rec.decision.strategy is None
        and rec.decision.reason == "prompt-side issues dominate"
    )
    assert (
        rec.decision.ranked[0].tool == "inpaint"
        and rec.decision.request == ["darker"]
        and rec.decision.threshold == 0.7
    )
    assert rec.is_extra_candidate
    assert [str(c) for c in rec.clamps] == ["generate.steps 100->50", "by hand", "42"]
    assert rec.vetoes[0].tool == "edit"
    assert store.summary()["history"][0]["threshold"] == 0.7
    store.note_decision(1, threshold=0.65, threshold_before=0.7)
    assert store.step(1).decision.threshold == 0.65 and store.step(1).decision.request == ["darker"]
    with pytest.raises(ValueError):
        store.note_decision(1, threshold="high")  # notes are checked like any decision
    store.close()


def test_a_step_keeps_its_kind_and_stores_only_set_decision_keys(tmp_path: Path) -> None:
    store = SessionStore.create(tmp_path, "a fox", {})
    for kind in StepKind.__args__:  # type: ignore[attr-defined]
        store.commit_step(StepRecord(kind=kind, tool="generate", decision={"strategy": "direct", "target": "fox"}))
    assert [s.kind for s in store.steps()] == list(StepKind.__args__)  # type: ignore[attr-defined]
    with sqlite3.connect(store.dir / "session.db") as conn:
        stored = conn.execute("SELECT decision FROM step WHERE step = 1").fetchone()[0]
    assert json.loads(stored) == {"strategy": "direct", "target": "fox"}
    store.close()


def test_events_are_typed_payloads_with_plain_json_data() -> None:
    event = AgentEvent(message="diffusion step 2/4", payload=DiffusionProgress(step=2, total=4))
    assert event.kind == "diffusion" and event.data == {"step": 2, "total": 4}
    back = AgentEvent.model_validate_json(event.model_dump_json())
    assert isinstance(back.payload, DiffusionProgress) and back.payload.total == 4
    assert AgentEvent(message="m", payload=Vetoed(tool="edit", reason="r")).data == {"tool": "edit", "reason": "r"}
    decided = AgentEvent(
        message="m", payload=Decided(strategy="hybrid", ranked=[ToolChoice(tool="inpaint", weight=1, reason="")])
    )
    assert decided.kind == "decision" and decided.data["ranked"][0]["tool"] == "inpaint"
    assert AgentEvent.model_validate({"message": "m", "payload": {"kind": "warning", "step": 3}}).payload == Warned(
        step=3
    )
