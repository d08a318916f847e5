"""One GPU, many sessions: a first-come-first-served queue in front of one executor.

The executor is one GPU's worth of resident models and can do one thing at a time. Sessions are
many and spend most of their time waiting for the VLM, so they share the executor through this
queue: GPU work never overlaps, no model is loaded twice, and while one session's judge thinks,
another's image is being made. Each session holds a :class:`Lane`, which looks to the loop like
the executor itself and reports the session's place in the queue while it waits.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from PIL import Image

from emage_agent.ports import RunsTools

WaitCallback = Callable[[int], None]  # called with the number of jobs ahead (0 = running now)


class GpuQueue:
    """Serialises ``run`` calls on one executor in arrival order, and counts what it did."""

    def __init__(self, executor: RunsTools) -> None:
        self.executor = executor
        self._cond = threading.Condition()
        self._order: deque[int] = deque()
        self._tickets = 0
        self._active = 0
        self.calls = 0
        self.busy_seconds = 0.0
        self.max_overlap = 0  # the most GPU jobs ever running at once: 1 when the queue does its job
        self._started = time.monotonic()

    def waiting(self) -> int:
        """Jobs queued or running right now."""
        with self._cond:
            return len(self._order)

    def busy_fraction(self) -> float:
        """Share of wall time since the queue was made that the GPU spent working."""
        elapsed = time.monotonic() - self._started
        return self.busy_seconds / elapsed if elapsed > 0 else 0.0

    def run(
        self,
        tool: str,
        args: dict[str, Any],
        images: dict[str, Image.Image] | None = None,
        on_step: Callable[[int, int], None] | None = None,
        on_wait: WaitCallback | None = None,
    ) -> Any:
        with self._cond:
            ticket = self._tickets
            self._tickets += 1
            self._order.append(ticket)
            while self._order[0] != ticket:
                if on_wait is not None:
                    on_wait(self._order.index(ticket))
                self._cond.wait()
            self._active += 1
            self.max_overlap = max(self.max_overlap, self._active)
        if on_wait is not None:
            on_wait(0)
        start = time.monotonic()
        try:
            return self.executor.run(tool, args, images, on_step=on_step)
        finally:
            with self._cond:
                self.busy_seconds += time.monotonic() - start
                self.calls += 1
                self._active -= 1
                self._order.popleft()
                self._cond.notify_all()

    def lane(self, on_wait: WaitCallback | None = None) -> Lane:
        return Lane(self, on_wait)


class Lane:
    """One session's view of the shared GPU: the executor's ``run``, waiting its turn."""

    def __init__(self, queue: GpuQueue, on_wait: WaitCallback | None = None) -> None:
        self.queue = queue
        self.on_wait = on_wait

    def run(
        self,
        tool: str,
        args: dict[str, Any],
        images: dict[str, Image.Image] | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> Any:
        return self.queue.run(tool, args, images, on_step=on_step, on_wait=self.on_wait)
