"""--candidates K: K first images and K variants of each repair, all evaluated, the best kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emage_agent.api import Agent
from tests.loop.test_session_loop import CANNY, STYLE, Script
from tests.support.fake_gemini import function_call_reply


@pytest.fixture
def agent(tiny_settings: Any, gemini_settings: Any, executor: Any, tmp_path: Path) -> Agent:
    gemini = {k: v for k, v in gemini_settings.model_dump().items() if k.startswith("gemini_")}
    return Agent(tiny_settings.model_copy(update={**gemini, "session_root": tmp_path / "s"}), executor=executor)


def test_three_first_images_are_evaluated_and_the_best_kept(agent: Agent, fake_gemini: Any) -> None:
    script = Script(fake_gemini, evals=[(0.4, [STYLE]), (0.7, [STYLE]), (0.5, [STYLE])])
    session = agent.start("a red fox on a blue car", width=64, height=64, steps=2, seed=11, candidates=3, iterations=0)
    assert script.seen["evaluate"] == 3
    steps = [s for s in session.store.steps() if s.tool == "generate"]
    assert [s.args["seed"] for s in steps] == [11, 12, 13]
    assert [s.kind for s in steps] == ["initial", "candidate", "candidate"]
    assert [s.decision.candidate for s in steps] == [None, 1, 2] and {s.decision.strategy for s in steps} == {"initial"}
    assert [s.score for s in steps] == [0.4, 0.7, 0.5]
    head = session.loop.view.image_step()
    assert head is not None and head.step == steps[1].step  # the best, not the last
    summary = session.run()
    assert summary["satisfaction_score"] == 0.7 and summary["best_step"] == steps[1].step
    assert session.loop.view.iterations_done() == 0  # candidates are not iterations
    tool_seconds = sum(s.timings["tool_s"] for s in steps)  # rounded to ms per step
    assert tool_seconds > 0 and session.store.info.gpu_seconds == pytest.approx(tool_seconds, abs=0.002)
    assert session.store.info.vlm_calls == 3  # every candidate's evaluation counts in the budget


def test_repair_variants_start_from_the_same_image(agent: Agent, fake_gemini: Any) -> None:
    Script(
        fake_gemini,
        evals=[(0.5, [STYLE]), (0.45, [STYLE]), (0.6, [STYLE]), (0.55, [STYLE])],
        plans=[function_call_reply(CANNY)],
    )
    session = agent.start("a red fox on a blue car", width=64, height=64, steps=2, seed=3, candidates=1)
    session.configure(candidates=3)  # a continuing session takes more candidates for its next repairs
    session.run(iterations=1)
    first = next(s for s in session.store.steps() if s.tool == "generate")
    edits = [s for s in session.store.steps() if s.tool == "canny_edit"]
    assert len(edits) == 3 and {e.parent for e in edits} == {first.step}
    assert [e.kind for e in edits] == ["tool", "candidate", "candidate"] and first.kind == "initial"
    assert [e.score for e in edits] == [0.45, 0.6, 0.55]
    assert session.loop.view.image_step().step == edits[1].step


def test_candidates_are_judged_while_the_next_one_is_made(tmp_path: Path, monkeypatch: Any) -> None:
    """A 0.3 s judge: three candidates cost about one judgement more than their generations, not three."""
    import time

    from emage_agent.loop import candidates
    from tests.support.scripted import ScriptedEvaluator, scripted_agent

    class SlowJudge(ScriptedEvaluator):
        def evaluate(self, *args: Any, **kwargs: Any) -> Any:
            time.sleep(0.3)
            return super().evaluate(*args, **kwargs)

    walls, scores = {}, {}
    for overlap in (False, True):
        monkeypatch.setattr(candidates, "OVERLAP", overlap)
        agent = scripted_agent(tmp_path / str(overlap))
        agent._evaluator = SlowJudge([0.4, 0.7, 0.5])
        started = time.perf_counter()
        session = agent.start("a red fox", width=64, height=64, steps=2, seed=1, candidates=3, iterations=0)
        walls[overlap] = time.perf_counter() - started
        steps = [s for s in session.store.steps() if s.tool == "generate"]
        scores[overlap] = [s.score for s in steps]
        assert session.loop.view.image_step().step == steps[1].step
    assert scores[True] == scores[False] == [0.4, 0.7, 0.5]  # each judgement booked on its own step, in order
    assert walls[False] > 0.9 and walls[True] < 0.75 * walls[False]
