"""The instruction edit (FLUX.1 Kontext): contract, executor on the tiny Kontext transformer, selector and veto."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from emage_agent.core.errors import InvalidArgument, UserError
from emage_agent.core.evaluation import Evaluation, Issue
from emage_agent.core.planning import ToolCall
from emage_agent.core.settings import Settings
from emage_agent.core.tools import TOOL_NAMES, export_tools, validate_arguments
from emage_agent.executor import Executor
from emage_agent.strategy import BudgetState, SelectorConfig, recommend, review
from emage_agent.strategy.selector import repair_tool
from tests.support.tiny_family import TinyFamily

PROMPT = "a red fox sitting on a blue car"
ON = SelectorConfig(edit_tool=True)
OFF = SelectorConfig()


@pytest.fixture(scope="module")
def kontext_settings(tiny_family: TinyFamily, tiny_settings: Settings) -> Settings:
    return tiny_settings.model_copy(update={"kontext_model": str(tiny_family.kontext)})


@pytest.fixture(scope="module")
def kontext_executor(kontext_settings: Settings) -> Iterator[Executor]:
    with Executor(kontext_settings) as shared:
        yield shared


def test_contract_is_exported_with_the_others() -> None:
    assert "edit" in TOOL_NAMES
    names = [t["name"] for t in export_tools("gemini")]
    assert "edit" in names
    args = validate_arguments("edit", {"instruction": "make the car blue"})
    assert args["guidance"] == 2.5 and args["steps"] == 28 and args["image"] == "current"
    with pytest.raises(InvalidArgument) as err:
        validate_arguments("edit", {"instruction": "x", "guidance": 30})
    assert err.value.field == "guidance"


def test_edit_runs_kontext_sharing_encoders_and_vae(kontext_executor: Executor, tiny_image) -> None:
    base = kontext_executor.run("generate", {"prompt": PROMPT, "seed": 1, "width": 64, "height": 64, "steps": 2})
    out = kontext_executor.run(
        "edit", {"instruction": "make the car blue", "seed": 3, "steps": 2}, {"image": tiny_image}
    )
    again = kontext_executor.run(
        "edit", {"instruction": "make the car blue", "seed": 3, "steps": 2}, {"image": tiny_image}
    )
    assert out.tool == "edit" and out.seed == 3 and out.image.size == tiny_image.size
    assert np.array_equal(np.asarray(out.image), np.asarray(again.image))
    assert not np.array_equal(np.asarray(out.image), np.asarray(tiny_image))
    manager = kontext_executor.models()
    pipes = manager.loaded_pipelines()
    assert type(pipes["edit"]).__name__ == "FluxKontextPipeline"
    assert pipes["edit"].vae is pipes["generate"].vae
    assert pipes["edit"].text_encoder_2 is pipes["generate"].text_encoder_2
    assert pipes["edit"].transformer is not pipes["generate"].transformer
    counters = kontext_executor.counters
    assert counters.loads["vae"] == 1 and counters.loads["transformer:kontext"] == 1
    assert counters.tool_calls["edit"] == 2 and base.image is not None


def test_box_keeps_every_pixel_outside_it(kontext_executor: Executor, tiny_image) -> None:
    box = [250, 250, 750, 750]
    out = kontext_executor.run(
        "edit", {"instruction": "make the block blue", "seed": 5, "steps": 2, "box": box}, {"image": tiny_image}
    )
    before, after = np.asarray(tiny_image), np.asarray(out.image)
    outside = np.ones(before.shape[:2], dtype=bool)
    outside[16:48, 16:48] = False
    assert np.array_equal(before[outside], after[outside])
    assert not np.array_equal(before[~outside], after[~outside])
    assert "box" in out.note


def test_switched_off_edit_is_refused_before_loading(executor: Executor, tiny_image) -> None:
    assert not executor.settings.edit_enabled
    with pytest.raises(UserError) as err:
        executor.run("edit", {"instruction": "make it blue", "steps": 2}, {"image": tiny_image})
    assert err.value.field == "EMAGE_KONTEXT_MODEL"


def test_empty_box_is_refused(kontext_executor: Executor, tiny_image) -> None:
    with pytest.raises(InvalidArgument) as err:
        kontext_executor.run("edit", {"instruction": "x", "box": [500, 500, 500, 600]}, {"image": tiny_image})
    assert err.value.field == "box"


def ev(*issues: Issue, score: float = 0.4) -> Evaluation:
    return Evaluation(satisfaction_score=score, issues=list(issues))


COLOUR = Issue(category="style", severity=0.8, description="the car is red, not blue", target="car")
SMALL_OBJECT = Issue(category="object", severity=0.7, description="a third dog is missing", target="dog")
BIG_OBJECT = Issue(
    category="object", severity=0.7, description="the sofa is wrong", target="sofa", box=[0, 0, 900, 900]
)
SPATIAL = Issue(category="spatial", severity=0.5, description="the fox should sit on the roof")


@pytest.mark.parametrize(
    ("issue", "on", "off"),
    [
        (COLOUR, "edit", "canny_edit"),
        (SMALL_OBJECT, "edit", "inpaint"),
        (BIG_OBJECT, "inpaint", "inpaint"),
        (SPATIAL, "depth_edit", "depth_edit"),
    ],
)
def test_selector_routes_colour_attribute_and_small_objects_to_edit(issue: Issue, on: str, off: str) -> None:
    assert repair_tool(issue, ON) == on
    assert repair_tool(issue, OFF) == off


def test_recommendation_carries_an_instruction_and_a_padded_box() -> None:
    boxed = COLOUR.model_copy(update={"box": [100, 200, 300, 400]})
    rec = recommend(ev(boxed), [], ON, 0, PROMPT)
    top = rec.ranked[0]
    assert top.tool == "edit"
    assert "the car is red, not blue" in top.args["instruction"]
    assert top.args["box"] == [50, 150, 350, 450]
    assert top.args["guidance"] == 2.5
    assert validate_arguments("edit", top.args)
    assert [c.tool for c in rec.ranked] == ["edit", "canny_edit"]  # the old choice stays, a close second
    assert rec.ranked[1].weight == pytest.approx(0.9 * top.weight)
    assert [c.tool for c in recommend(ev(boxed), [], OFF, 0, PROMPT).ranked] == ["canny_edit"]
    small = recommend(ev(SMALL_OBJECT), [], ON, 0, PROMPT)
    assert [c.tool for c in small.ranked] == ["edit", "make_mask", "inpaint"]
    canny = ToolCall(name="canny_edit", args={"prompt": PROMPT})
    assert review(canny, rec, [], BudgetState(), ON).accepted


def test_veto_rejects_edit_when_switched_off_and_a_repeat_that_failed() -> None:
    rec = recommend(ev(COLOUR), [], ON, 0, PROMPT)
    call = ToolCall(name="edit", args={"instruction": "make the car blue", "guidance": 9})
    off = review(call, rec, [], BudgetState(), OFF)
    assert not off.accepted and off.kind == "unknown_tool" and "EMAGE_KONTEXT_MODEL" in off.reason
    ok = review(call, rec, [], BudgetState(), ON)
    assert ok.accepted and ok.call.args["guidance"] == 5.0 and ok.clamps == ["edit.guidance 9->5.0"]
    assert ok.target == "make the car blue"
    from emage_agent.core.planning import HistoryEntry

    failed = [HistoryEntry(step=2, tool="edit", args=ok.call.args, target=ok.target, score_before=0.5, score_after=0.4)]
    again = review(call, rec, failed, BudgetState(), ON)
    assert not again.accepted and again.kind == "repeated_failure"


def test_planner_call_to_edit_runs_kontext_and_is_recorded(
    kontext_settings: Settings, kontext_executor: Executor, gemini_settings: Settings, fake_gemini, tmp_path
) -> None:
    from emage_agent.api import Agent
    from tests.loop.test_session_loop import Script
    from tests.support.fake_gemini import function_call_reply

    gemini = {k: v for k, v in gemini_settings.model_dump().items() if k.startswith("gemini_")}
    settings = kontext_settings.model_copy(update={**gemini, "session_root": tmp_path / "sessions"})
    style = {"category": "style", "severity": 0.8, "description": "the car should be blue", "target": "car"}
    plan = function_call_reply(("edit", {"instruction": "make the car blue", "steps": 2}))
    script = Script(fake_gemini, evals=[(0.5, [style]), (0.9, [])], plans=[plan])
    agent = Agent(settings, executor=kontext_executor)
    assert agent.selector_config.edit_tool
    session = agent.start("a red fox on a blue car", width=64, height=64, steps=2, seed=7)
    summary = session.run()
    assert [h["tool"] for h in summary["history"]] == ["generate", "edit"]
    edit = summary["history"][1]
    assert edit["args"]["instruction"] == "make the car blue" and edit["args"]["image"] == "current"
    assert edit["satisfaction_score"] == 0.9 and summary["final_image"] == edit["image"]
    record = next(r for r in session.store.steps() if r.tool == "edit")
    assert record.decision.ranked[0].tool == "edit"  # the selector agreed: a colour fix goes to edit
    assert script.seen["plan"] == 1
    plan_request = next(r for r in fake_gemini.requests if r.purpose == "plan")
    assert "edit" in plan_request.allowed_function_names


def test_an_edit_the_executor_cannot_run_is_not_chosen_again(
    tiny_settings: Settings, executor: Executor, gemini_settings: Settings, fake_gemini, tmp_path
) -> None:
    from emage_agent.api import Agent
    from tests.loop.test_session_loop import Script

    gemini = {k: v for k, v in gemini_settings.model_dump().items() if k.startswith("gemini_")}
    settings = tiny_settings.model_copy(update={**gemini, "session_root": tmp_path / "sessions"})
    style = {"category": "style", "severity": 0.8, "description": "the car should be blue", "target": "car"}
    Script(fake_gemini, evals=[(0.5, [style]), (0.9, [])])
    # The selector believes Kontext is there; the executor's settings say it is not (EMAGE_KONTEXT_MODEL=none).
    agent = Agent(settings, executor=executor, selector_config=SelectorConfig(edit_tool=True))
    session = agent.start("a red fox on a blue car", width=64, height=64, steps=2, seed=7, planner="selector")
    summary = session.run(iterations=2)
    tools = [(s.tool, s.error is not None) for s in session.store.steps()]
    assert tools == [("generate", False), ("edit", True), ("canny_edit", False)]
    assert summary["satisfaction_score"] == 0.9
