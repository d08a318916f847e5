"""One GPU (or several), many sessions: a first-come-first-served queue in front of the executors.

An executor is one GPU's worth of resident models and can do one thing at a time. Sessions are
many and spend most of their time waiting for the VLM, so they share the executors through this
queue: GPU work never overlaps on one executor, no model is loaded twice, and while one session's
judge thinks, another's image is being made. Each session holds a :class:`Lane`, which looks to
the loop like an executor and reports the session's place in the queue while it waits.

With several workers (one Ray actor per GPU) the queue hands each job to any free worker. A
worker that dies raises :class:`WorkerLost`; it leaves the pool and the job goes back to the head
of the line for another worker, so the session never sees the loss: nothing was committed for
that step yet.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from emage_agent.core.errors import ExecutionFailure
from emage_agent.core.ports import RunsTools

WaitCallback = Callable[[int], None]  # called with the number of jobs ahead (0 = running now)


class WorkerLost(Exception):
    """A worker (a Ray actor, a node) is gone; its job was not done and may run elsewhere."""


class GpuQueue:
    """Serialises ``run`` calls per executor in arrival order, and counts what it did.

    ``GpuQueue(executor)`` is one GPU; ``GpuQueue(workers=[...])`` is a pool where any free worker
    takes the next job.
    """

    def __init__(self, executor: RunsTools | None = None, *, workers: Sequence[RunsTools] = ()) -> None:
        pool = ([executor] if executor is not None else []) + list(workers)
        if not pool:
            raise ValueError("GpuQueue needs an executor or at least one worker")
        self.executor = pool[0]
        self.workers: list[RunsTools] = pool
        self._free: deque[RunsTools] = deque(pool)
        self._cond = threading.Condition()
        self._order: deque[int] = deque()
        self._tickets = 0
        self._active = 0
        self.calls = 0
        self.retries = 0  # jobs that ran again because their worker was lost
        self.lost: list[str] = []  # why each lost worker left the pool
        self.busy_seconds = 0.0
        self.max_overlap = 0  # the most GPU jobs ever running at once: at most the number of workers
        self._started = time.monotonic()

    def waiting(self) -> int:
        """Jobs queued or running right now."""
        with self._cond:
            return len(self._order) + self._active

    def busy_fraction(self) -> float:
        """Share of the workers' wall time since the queue was made that they spent working."""
        elapsed = (time.monotonic() - self._started) * max(1, len(self.workers) + len(self.lost))
        return self.busy_seconds / elapsed if elapsed > 0 else 0.0

    def _take(self, on_wait: WaitCallback | None, first: bool) -> RunsTools:
        """Wait for this job's turn and a free worker; ``first`` puts a retried job at the head."""
        with self._cond:
            ticket = self._tickets
            self._tickets += 1
            if first:
                self._order.appendleft(ticket)
            else:
                self._order.append(ticket)
            while self._order[0] != ticket or not self._free:
                if not self.workers:
                    self._order.remove(ticket)
                    self._cond.notify_all()
                    raise ExecutionFailure("no GPU worker is left: " + "; ".join(self.lost[-3:]))
                if on_wait is not None:
                    on_wait(self._order.index(ticket) + self._active)
                self._cond.wait()
            self._order.popleft()
            self._active += 1
            self.max_overlap = max(self.max_overlap, self._active)
            self._cond.notify_all()  # the next in line may find another free worker
            return self._free.popleft()

    def run(
        self,
        tool: str,
        args: dict[str, Any],
        images: dict[str, Image.Image] | None = None,
        on_step: Callable[[int, int], None] | None = None,
        on_wait: WaitCallback | None = None,
    ) -> Any:
        retry = False
        while True:
            worker = self._take(on_wait, first=retry)
            if on_wait is not None:
                on_wait(0)
            start = time.monotonic()
            lost: WorkerLost | None = None
            try:
                return worker.run(tool, args, images, on_step=on_step)
            except WorkerLost as exc:
                lost = exc
            finally:
                with self._cond:
                    self.busy_seconds += time.monotonic() - start
                    self._active -= 1
                    if lost is None:
                        self.calls += 1
                        self._free.append(worker)
                    else:
                        self.workers.remove(worker)
                        self.lost.append(str(lost) or type(worker).__name__)
                        self.retries += 1
                    self._cond.notify_all()
            retry = True

    def lane(self, on_wait: WaitCallback | None = None) -> Lane:
        return Lane(self, on_wait)


class Lane:
    """One session's view of the shared GPU: the executor's ``run``, waiting its turn."""

    def __init__(self, queue: GpuQueue, on_wait: WaitCallback | None = None) -> None:
        self.queue = queue
        self.on_wait = on_wait

    @property
    def counters(self) -> Any:
        """The first worker's counters (what its executor resolved: quantization, attention), for the
        session's records; ``None`` for a worker without them (a Ray actor)."""
        return getattr(self.queue.executor, "counters", None)

    def run(
        self,
        tool: str,
        args: dict[str, Any],
        images: dict[str, Image.Image] | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> Any:
        return self.queue.run(tool, args, images, on_step=on_step, on_wait=self.on_wait)
