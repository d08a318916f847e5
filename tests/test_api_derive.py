"""``Agent.derive``: a variant agent (its own executor handle, events or planner) sharing what must be shared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emage_agent.core.options import AgentEvent
from emage_agent.engine import GpuQueue, RateLimiter
from tests.support.scripted import ScriptedExecutor, scripted_agent


def test_derive_shares_the_vlm_side_the_call_log_and_the_limiter(tmp_path: Path) -> None:
    base = scripted_agent(tmp_path, [0.5, 0.9])
    base.limiter = RateLimiter(600)
    seen: list[AgentEvent] = []
    lane = GpuQueue(ScriptedExecutor()).lane(lambda ahead: None)
    derived = base.derive(executor=lane, on_event=seen.append)
    assert derived is not base and derived.executor is lane and base.executor is not lane
    assert derived.limiter is base.limiter and derived.calls is base.calls
    assert derived.evaluator is base.evaluator and derived.rewriter is base.rewriter
    assert derived.selector_config is base.selector_config and derived.root == base.root
    assert derived.settings is base.settings and derived._vlms is base._vlms
    session = derived.start("a red cube", iterations=1, width=64, height=64, steps=2, seed=1)
    session.run()
    assert any(e.kind == "score" for e in seen)  # the derived agent's events reach its own handler
    session.close()


def test_derive_keeps_what_it_is_not_told(tmp_path: Path) -> None:
    base = scripted_agent(tmp_path, [0.5])
    seen: list[Any] = []
    base.on_event = seen.append
    derived = base.derive(root=tmp_path / "other")
    assert derived.executor is base.executor and derived.on_event is base.on_event
    assert derived.root == tmp_path / "other"
    session = derived.start("a red cube", iterations=0, width=64, height=64, steps=2, seed=1)
    assert session.dir.parent == tmp_path / "other" and seen
    session.close()


def test_a_start_picture_through_the_api_is_an_upload_step(tmp_path: Path) -> None:
    from PIL import Image

    agent = scripted_agent(tmp_path, [0.5])
    session = agent.create("a red fox", image=Image.new("RGB", (96, 64), (12, 34, 56)), iterations=0)
    first = session.store.steps()[0]
    assert (first.tool, first.score) == ("upload", None)  # recorded, judged when the session runs
    session.run()
    assert session.store.steps()[0].score == 0.5
    assert session.store.info.options["width"] == 96
    session.close()
