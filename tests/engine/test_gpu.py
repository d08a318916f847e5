"""The GPU queue: many threads, one executor, never two jobs at once, served in arrival order."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from emage_agent.engine import GpuQueue
from emage_agent.engine.gpu import Lane


class SlowTools:
    """A stand-in executor that notices overlapping calls (the real one is tested elsewhere)."""

    def __init__(self) -> None:
        self.running = 0
        self.overlapped = False
        self.order: list[str] = []
        self._lock = threading.Lock()

    def run(self, tool: str, args: dict[str, Any], images: Any = None, on_step: Any = None) -> str:
        with self._lock:
            self.running += 1
            self.overlapped |= self.running > 1
            self.order.append(args["who"])
        time.sleep(0.05)
        with self._lock:
            self.running -= 1
        return args["who"]


def test_jobs_never_overlap_and_report_their_place() -> None:
    tools = SlowTools()
    queue = GpuQueue(tools)
    seen: dict[str, list[int]] = {}
    results: dict[str, str] = {}

    def worker(name: str) -> None:
        lane = queue.lane(on_wait=lambda ahead, n=name: seen.setdefault(n, []).append(ahead))
        assert isinstance(lane, Lane)
        results[name] = lane.run("generate", {"who": name})

    threads = [threading.Thread(target=worker, args=(f"s{i}",)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert results == {f"s{i}": f"s{i}" for i in range(5)}
    assert not tools.overlapped and queue.max_overlap == 1
    assert queue.calls == 5 and queue.busy_seconds >= 5 * 0.05
    assert all(places[-1] == 0 for places in seen.values())  # each ran once its turn came
    assert any(max(places) >= 1 for places in seen.values())  # and someone had to wait in line
    assert queue.waiting() == 0


def test_a_failing_job_releases_the_gpu() -> None:
    class Broken:
        def run(self, *a: Any, **k: Any) -> Any:
            raise RuntimeError("out of memory")

    queue = GpuQueue(Broken())
    for _ in range(2):
        with pytest.raises(RuntimeError):
            queue.run("generate", {})
    assert queue.waiting() == 0 and queue.calls == 2
