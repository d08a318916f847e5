"""Many sessions in one process: they overlap on the VLM, never on the GPU, and keep their own books."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from emage_agent.api import Agent
from emage_agent.core.errors import ExecutionFailure
from emage_agent.engine import GpuQueue, Job, RateLimiter, SessionPool
from emage_agent.engine.gpu import WorkerLost
from emage_agent.vlm.gemini import GeminiClient
from tests.support.fake_gemini import evaluation_reply, rate_limited

SMALL = {"width": 64, "height": 64, "steps": 2, "planner": "selector", "iterations": 0}


class SlowJudge:
    """Answers every evaluation after ``latency`` seconds and records how many were in flight at once."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.in_flight = 0
        self.most = 0
        self._lock = threading.Lock()

    def __call__(self, request: Any) -> Any:
        with self._lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(self.latency)
        with self._lock:
            self.in_flight -= 1
        return evaluation_reply(0.9)


@pytest.fixture
def settings(tiny_settings: Any, gemini_settings: Any) -> Any:
    gemini = {k: v for k, v in gemini_settings.model_dump().items() if k.startswith("gemini_")}
    return tiny_settings.model_copy(update=gemini)


def jobs(tmp_path: Path, n: int) -> list[Job]:
    return [Job(key=f"j{i}", prompt=f"a fox number {i}", options=SMALL, root=tmp_path / f"j{i}") for i in range(n)]


def test_sessions_overlap_on_the_vlm_not_on_the_gpu(
    settings: Any, executor: Any, fake_gemini: Any, tmp_path: Path
) -> None:
    judge = SlowJudge(latency=1.0)
    fake_gemini.handler = judge
    queue = GpuQueue(executor)
    agent = Agent(settings, root=tmp_path, executor=queue, limiter=RateLimiter(None))
    outcomes = SessionPool(agent, concurrency=4).run(jobs(tmp_path, 4))
    assert [o.status for o in outcomes] == ["done"] * 4
    assert judge.most >= 3  # the judge's seconds overlapped across sessions
    assert queue.max_overlap == 1 and queue.calls == 4  # the GPU did one thing at a time
    for o in outcomes:
        # each session booked exactly its own evaluation, although all shared one client
        assert o.vlm_calls == 1 and Path(o.summary["final_image"]).is_file()
    assert len(fake_gemini.requests) == 4


def test_a_rerun_reuses_done_sessions_and_retries_failed_ones(
    settings: Any, executor: Any, fake_gemini: Any, tmp_path: Path
) -> None:
    fake_gemini.handler = lambda r: evaluation_reply(0.9) if "number 1" not in r.text() else None  # 503s for j1
    agent = Agent(settings.model_copy(update={"gemini_max_attempts": 1}), executor=GpuQueue(executor))
    first = SessionPool(agent, concurrency=2).run(jobs(tmp_path, 3))
    assert [o.status for o in first] == ["done", "failed", "done"]
    assert first[1].error and "Gemini" in first[1].error and first[1].session_dir is not None
    kept = SessionPool(agent, retry_failed=False).run(jobs(tmp_path, 3))
    assert [o.reused for o in kept] == [True, True, True] and kept[1].status == "failed"
    fake_gemini.handler = lambda r: evaluation_reply(0.9)
    again = SessionPool(agent, concurrency=2).run(jobs(tmp_path, 3))
    assert [o.status for o in again] == ["done"] * 3
    assert [o.reused for o in again] == [True, False, True]
    assert again[1].session_dir == first[1].session_dir  # resumed, not started afresh
    assert again[1].steps == 1  # the first image was kept; only its evaluation was redone


def test_bad_options_fail_one_job_only_and_a_broken_session_is_set_aside(
    settings: Any, executor: Any, fake_gemini: Any, tmp_path: Path
) -> None:
    fake_gemini.handler = lambda r: evaluation_reply(0.9)
    agent = Agent(settings, executor=GpuQueue(executor))
    todo = jobs(tmp_path, 2)
    todo[0] = todo[0].model_copy(update={"options": {**SMALL, "width": 100}})
    broken = todo[1].root / "20000101T000000000-dead00"  # killed while its database was being made
    broken.mkdir(parents=True)
    (broken / "session.db").write_bytes(b"")
    outcomes = SessionPool(agent, concurrency=2).run(todo)
    assert outcomes[0].status == "failed" and "width" in (outcomes[0].error or "") and outcomes[0].session_dir is None
    assert outcomes[1].status == "done" and outcomes[1].session_dir != broken
    assert not broken.exists() and broken.with_name(broken.name + ".broken").is_dir()  # set aside, not resumed


class Worker:
    def __init__(self, name: str, dies: bool = False) -> None:
        self.name, self.dies, self.ran = name, dies, 0

    def run(self, tool: str, args: dict[str, Any], images: Any = None, on_step: Any = None) -> str:
        if self.dies:
            raise WorkerLost(f"{self.name} is gone")
        self.ran += 1
        time.sleep(0.02)
        return self.name


def test_a_lost_worker_leaves_the_pool_and_its_job_runs_elsewhere() -> None:
    dead, alive = Worker("dead", dies=True), Worker("alive")
    queue = GpuQueue(workers=[dead, alive])
    results = []
    threads = [threading.Thread(target=lambda: results.append(queue.run("generate", {}))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert results == ["alive"] * 4 and alive.ran == 4
    assert queue.workers == [alive] and queue.retries == 1 and queue.lost == ["dead is gone"]
    with pytest.raises(ExecutionFailure, match="no GPU worker is left"):
        GpuQueue(workers=[Worker("x", dies=True)]).run("generate", {})


def test_two_free_workers_run_two_jobs_at_once() -> None:
    queue = GpuQueue(workers=[Worker("a"), Worker("b")])
    threads = [threading.Thread(target=queue.run, args=("generate", {})) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert queue.calls == 6 and queue.max_overlap == 2 and queue.waiting() == 0


def test_rate_limit_spaces_requests_across_threads() -> None:
    limiter = RateLimiter(rpm=600)  # one request every 0.1 s
    started = time.monotonic()
    threads = [threading.Thread(target=limiter.acquire) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert time.monotonic() - started >= 0.38 and limiter.requests == 5
    limiter.back_off(0.3)
    assert limiter.paused_for() > 0.2
    assert limiter.acquire() >= 0.25  # everyone waits out the pause
    with pytest.raises(ValueError):
        RateLimiter(rpm=0)


def test_a_429_pauses_every_session_sharing_the_limiter(gemini_settings: Any, fake_gemini: Any) -> None:
    fake_gemini.queue(rate_limited("0.4s"))
    fake_gemini.handler = lambda r: evaluation_reply(0.9)
    limiter = RateLimiter(None)
    first = GeminiClient(gemini_settings, limiter=limiter)
    other = GeminiClient(gemini_settings, limiter=limiter)  # another session's client, same key
    from emage_agent.vlm.gemini import Evaluator
    from tests.support.fixtures_gemini import make_png

    done: dict[str, float] = {}

    def judge(name: str, client: GeminiClient) -> None:
        Evaluator(client).evaluate(make_png(), "a fox")
        done[name] = time.monotonic()

    started = time.monotonic()
    t = threading.Thread(target=judge, args=("first", first))
    t.start()
    time.sleep(0.15)  # the first request has met its 429 by now; the pause is shared
    judge("other", other)
    t.join(timeout=10)
    assert limiter.back_offs == 1 and limiter.waited_seconds > 0.1
    assert done["other"] - started >= 0.35  # the other client waited although it never saw a 429
    assert [c.attempts for c in first.calls] == [2] and [c.attempts for c in other.calls] == [1]
    assert other.take_calls() == other.calls and first.take_calls() == []  # records are per thread
