"""The UI's sessions without a browser: two users at once on one GPU queue, Stop and Resume, moving, listing.

The agent is the real ``Agent``, loop and store on scripted collaborators (``test_mcp_support``); the
executor sleeps a little per call and counts how many calls are inside it at once, independently of
the queue's own counters, so an overlap would show in both.
"""

from __future__ import annotations

import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from emage_agent.adapters.ui import Studio
from emage_agent.core.decisions import Decision
from emage_agent.core.errors import UserError
from emage_agent.engine import GpuQueue
from tests.support.scripted import ScriptedExecutor, scripted_agent

OPTIONS = {"width": 64, "height": 64, "steps": 2, "seed": 3, "planner": "selector"}


class CountingExecutor(ScriptedExecutor):
    """A scripted executor that takes ``delay`` seconds per call and records the most calls inside it at once."""

    def __init__(self, delay: float = 0.05) -> None:
        super().__init__()
        self.delay = delay
        self.inside = 0
        self.most_inside = 0
        self._lock = threading.Lock()

    def run(self, tool: str, args: dict[str, Any], images: Any = None, on_step: Any = None) -> Any:
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            time.sleep(self.delay)
            return super().run(tool, args, images, on_step)
        finally:
            with self._lock:
                self.inside -= 1


def studio_for(root: Path, scores: list[float], delay: float = 0.05) -> tuple[Studio, CountingExecutor]:
    agent = scripted_agent(root, scores)
    executor = CountingExecutor(delay)
    agent._executor = executor
    return Studio(agent, root, GpuQueue(executor)), executor


def finish(*runs: Any, timeout: float = 30) -> None:
    for run in runs:
        assert run.done.wait(timeout), run.status()
        assert run.error is None, run.error


def test_two_users_at_once_share_the_gpu_one_job_at_a_time(tmp_path: Path) -> None:
    studio, executor = studio_for(tmp_path, [0.5, 0.6, 0.65, 0.7, 0.72, 0.74, 0.76, 0.78])
    first = studio.start("a red fox on a blue car", {**OPTIONS, "iterations": 3})
    second = studio.start("a green owl on a tree", {**OPTIONS, "iterations": 3})
    finish(first, second)
    sessions = {row["id"]: row for row in studio.sessions()}
    assert set(sessions) == {first.session_id, second.session_id}
    assert all(row["status"] == "done" and row["image"] for row in sessions.values())
    assert studio.gpu.max_overlap == 1 and executor.most_inside == 1
    assert studio.gpu.calls == len(executor.calls) >= 6  # a first image and repairs for each user
    assert first.position is None and second.position is None  # neither waits any more


def test_queue_positions_are_reported_while_waiting(tmp_path: Path) -> None:
    studio, _executor = studio_for(tmp_path, [0.5, 0.9], delay=0.2)
    seen: list[int] = []
    runs = [studio.start(f"prompt {n}", {**OPTIONS, "iterations": 1}) for n in range(3)]
    deadline = time.monotonic() + 10
    while not all(r.done.is_set() for r in runs) and time.monotonic() < deadline:
        seen += [r.position for r in runs if r.position]
        time.sleep(0.01)
    finish(*runs)
    assert max(seen) >= 1, "a run that waits behind another must know how many jobs are ahead"
    assert studio.gpu.max_overlap == 1


def test_stop_ends_after_the_current_step_and_resume_continues(tmp_path: Path) -> None:
    studio, _executor = studio_for(tmp_path, [0.3], delay=0.15)
    run = studio.start("a red fox", {**OPTIONS, "iterations": 10})
    while not any(e.kind == "score" for e in run.events):
        time.sleep(0.01)
    assert studio.stop(run.session_id)
    finish(run)
    with studio.open_store(run.session_id) as store:
        assert store.info.status == "interrupted" and store.info.stopped_because == "stopped"
        made = [s for s in store.steps() if s.tool != "feedback"]
        assert 1 <= len(made) < 10
    again = studio.resume(run.session_id, iterations=1)
    finish(again)
    with studio.open_store(run.session_id) as store:
        assert len([s for s in store.steps() if s.tool != "feedback"]) > len(made)


def test_feedback_revert_undo_and_the_zip(tmp_path: Path) -> None:
    studio, _executor = studio_for(tmp_path, [0.9, 0.95, 0.85])
    run = studio.start("a red fox", {**OPTIONS, "iterations": 2})
    finish(run)
    sid = run.session_id
    finish(studio.feedback(sid, "make the fox sit"))
    with studio.open_store(sid) as store:
        tools = [s.tool for s in store.steps()]
        assert tools[:2] == ["generate", "feedback"] and len(tools) >= 3
    studio.revert(sid, 1)
    with studio.open_store(sid) as store:
        assert store.head().step == 1
    with pytest.raises(UserError, match="nothing to undo"):
        studio.undo(sid)
    names = zipfile.ZipFile(studio.zip_session(sid)).namelist()
    assert f"{sid}/session.db" in names and f"{sid}/images/step-001.png" in names
    assert studio.zip_session(sid).is_relative_to(tmp_path)


def test_a_running_session_cannot_be_moved_or_started_twice(tmp_path: Path) -> None:
    studio, _executor = studio_for(tmp_path, [0.3], delay=0.2)
    run = studio.start("a red fox", {**OPTIONS, "iterations": 3})
    with pytest.raises(UserError, match="running"):
        studio.revert(run.session_id, 1)
    with pytest.raises(UserError, match="running"):
        studio.feedback(run.session_id, "bigger")
    studio.stop(run.session_id)
    finish(run)


def test_two_users_on_the_tiny_flux_executor(executor: Any, tmp_path: Path) -> None:
    """The same with real diffusers pipelines: the executor's own counters agree with the queue's."""
    before = sum(executor.counters.tool_calls.values())
    agent = scripted_agent(tmp_path, [0.5, 0.6, 0.7, 0.9])
    agent._executor = executor
    studio = Studio(agent, tmp_path)
    runs = [studio.start(p, {**OPTIONS, "iterations": 1}) for p in ("a red fox", "a green owl")]
    finish(*runs, timeout=120)
    assert studio.gpu.max_overlap == 1
    assert sum(executor.counters.tool_calls.values()) - before == studio.gpu.calls >= 4
    for run in runs:
        with studio.open_store(run.session_id) as store:
            assert store.info.status == "done" and store.best() is not None


def test_a_session_can_start_from_an_uploaded_image(tmp_path: Path) -> None:
    from PIL import Image

    from emage_agent.adapters.ui.guards import check_upload

    path = tmp_path / "mine.png"
    Image.new("RGB", (96, 64), (12, 34, 56)).save(path)
    studio, executor = studio_for(tmp_path / "sessions", [0.5, 0.9])
    run = studio.start("a red fox", {**OPTIONS, "iterations": 2}, check_upload(path, "start image"))
    finish(run)
    with studio.open_store(run.session_id) as store:
        first = store.steps()[0]
        assert first.tool == "upload" and first.score == 0.5  # recorded through the API, as the CLI records it
        assert first.note == "the user's picture" and first.decision == Decision(strategy="initial")
        assert store.load_image("s1-image").getpixel((0, 0)) == (12, 34, 56)
        assert store.info.options["width"] == 96 and store.info.options["height"] == 64
    assert executor.calls[0][0] != "generate"  # the first GPU job repairs the upload, it makes no new image


PLATEAU = [0.70, 0.71, 0.71, 0.72]  # flat scores below the 0.8 threshold


@pytest.mark.parametrize("adaptive", [True, False])
def test_the_adaptive_threshold_box_reaches_the_session(adaptive: bool, tmp_path: Path) -> None:
    """The Options box is an input of Run, and the page hands it to the session: on, a plateau stops at the
    lowered bar and says so; off, the same scores run to the iteration limit."""
    pytest.importorskip("gradio")
    from emage_agent.adapters.ui.app import layout

    studio, _executor = studio_for(tmp_path, PLATEAU)
    demo, page = layout(studio)
    run_inputs = [f.inputs for f in demo.fns.values() if f.name == "run"]
    assert len(run_inputs) == 1 and "Adaptive threshold" in [getattr(c, "label", None) for c in run_inputs[0]]
    chosen = {"iterations": 3, "threshold": 0.8, "seed": 3, "width": 64, "height": 64, "steps": 2}
    chosen |= {"planner": "selector", "adaptive_threshold": adaptive}
    shown = list(page.run("a red fox", **chosen))  # named, as /run takes them; the rest stay at their defaults
    session_id = shown[-1][page.c.session_id]
    with studio.open_store(session_id) as store:
        assert store.info.options["adaptive_threshold"] is adaptive
        summary = store.summary()
    if adaptive:
        assert summary["stopped_because"] == "adaptive_threshold" and summary["threshold_used"] == 0.7
    else:
        assert summary["stopped_because"] == "iteration_limit" and summary["threshold_used"] == 0.8


def test_two_runs_at_once_each_record_only_their_own_vlm_calls(
    gemini_settings: Any, fake_gemini: Any, tmp_path: Path
) -> None:
    """The real Agent and its Gemini client (the SDK against the stand-in on 127.0.0.1), shared by two UI runs
    at once: every call a run makes is booked in its own session, none in the other's, none lost.

    The stand-in answers each run's requests with its own token count, so a record shows whose call it was."""
    from emage_agent.api import Agent
    from tests.support.fake_gemini import evaluation_reply, rewrite_reply, usage

    issue = {"category": "style", "severity": 0.8, "description": "the colours are off", "target": "sky"}
    marks = {"a red fox": 111, "a green owl": 222}
    order: list[int] = []

    def answer(request: Any) -> Any:
        prompt = next(p for p in marks if p in request.text())
        order.append(marks[prompt])
        meta = usage(prompt=marks[prompt])
        if request.purpose == "evaluate":
            reply = evaluation_reply(0.5, [issue], usage_meta=meta)
            reply.delay_s = 0.05  # a judge that takes a moment, so the two runs wait on it side by side
            return reply
        if request.purpose == "rewrite":
            return rewrite_reply(f"{prompt}, clearly", usage_meta=meta)
        return None

    fake_gemini.handler = answer
    agent = Agent(gemini_settings, root=tmp_path, executor=CountingExecutor(0.05))
    studio = Studio(agent, tmp_path)
    runs = {prompt: studio.start(prompt, {**OPTIONS, "iterations": 2}) for prompt in marks}
    finish(*runs.values())
    assert fake_gemini.unscripted == 0
    booked = 0
    for prompt, run in runs.items():
        with studio.open_store(run.session_id) as store:
            calls = store.calls()
            assert len(calls) >= 3, calls  # the first judgement and one after each repair at least
            assert {c["input_tokens"] for c in calls} == {marks[prompt]}, (prompt, calls)
            assert all(c["ok"] for c in calls) and store.info.vlm_calls == len(calls)
            booked += len(calls)
    assert booked == len(fake_gemini.requests) == len(order)
    assert sum(a != b for a, b in zip(order, order[1:], strict=False)) >= 2, "the runs did not talk to the VLM at once"


def test_a_painted_region_limits_the_next_repair_only(tmp_path: Path) -> None:
    """Feedback with a region: stored as a mask step, handed to that repair as its region, then lifted."""
    from PIL import Image, ImageDraw

    from emage_agent.adapters.ui.page import painted_region

    studio, executor = studio_for(tmp_path, [0.9, 0.95, 0.97, 0.99])
    run = studio.start("a red fox", {**OPTIONS, "iterations": 1})
    finish(run)
    layer = Image.new("RGBA", (128, 128), (0, 0, 0, 0))  # the editor's layer: strokes on transparency, canvas size
    ImageDraw.Draw(layer).rectangle([0, 0, 63, 63], fill=(255, 59, 48, 255))
    region = painted_region({"background": None, "layers": [layer], "composite": None})
    assert region is not None and painted_region({"layers": [Image.new("RGBA", (8, 8))]}) is None
    before = len(executor.calls)
    finish(studio.feedback(run.session_id, "make the fox sit", region))
    repairs = executor.calls[before:]
    assert repairs and all("region" in images for _tool, _args, images in repairs)
    with studio.open_store(run.session_id) as store:
        painted = [s for s in store.steps() if s.tool == "make_mask"]
        assert [s.note for s in painted] == ["the region you painted"]
        mask = store.load_image(f"s{painted[0].step}-mask")
        assert mask.size == (64, 64) and mask.getpixel((10, 10)) == 255 and mask.getpixel((50, 50)) == 0
        assert store.info.options.get("region") is None
    again = len(executor.calls)
    finish(studio.feedback(run.session_id, "now the tail"))  # no region: the whole image again
    assert all("region" not in images for _tool, _args, images in executor.calls[again:])
    with pytest.raises(UserError, match="mask: the painted region is empty"):
        studio.feedback(run.session_id, "x", Image.new("L", (64, 64), 0))
