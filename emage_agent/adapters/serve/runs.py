"""The service's runs: sessions in the background on one shared engine, behind a bounded queue.

One base ``Agent`` holds the settings, the VLM clients and the rate limit; the GPU work of every run
goes through one :class:`~emage_agent.engine.GpuQueue` (this machine's executor or Ray actors). Each
run gets a light ``Agent`` whose executor is a lane of that queue, so runs go side by side while GPU
work stays one job at a time per GPU, and each run knows its place in the line.

At most ``concurrency`` runs work at once and ``max_waiting`` more wait; beyond that ``submit``
raises ``QueueFull`` (HTTP 429 with ``Retry-After``) instead of growing. A run lives on its own
thread, not on the request that started it, so a client that goes away does not stop its session.
``drain`` (SIGTERM) refuses new runs and asks every run to stop at its next step boundary: what was
committed stays, and every session can be resumed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emage_agent.api import Agent, Session
from emage_agent.core.errors import EmageError, ExecutionFailure
from emage_agent.core.events import AgentEvent
from emage_agent.engine import GpuQueue

MAX_EVENTS = 2000  # per run: a long run's oldest events are dropped from memory (the store keeps the steps)


class QueueFull(Exception):
    """No room for another run now; ``retry_after`` seconds is a fair wait."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class Draining(Exception):
    """The server is stopping and takes no new runs."""


@dataclass
class Run:
    """One background run of one session: its events for the SSE stream, its place in line, its end."""

    key: str
    session_id: str | None = None
    sessions: list[str] = field(default_factory=list)  # every session the run made (flux-dev: one per image)
    halt: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    events: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0  # events dropped from the front of ``events`` (ids stay stable)
    position: int | None = None
    diffusion: tuple[int, int] | None = None
    error: EmageError | None = None
    created: float = field(default_factory=time.monotonic)

    def add(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.events.append(
            {"id": self.dropped + len(self.events), "kind": kind, "message": message, "data": data or {}}
        )
        if len(self.events) > MAX_EVENTS:
            self.events.pop(0)
            self.dropped += 1

    def on_event(self, event: AgentEvent) -> None:
        if event.kind == "diffusion":
            self.diffusion = (int(event.data.get("step", 0)), int(event.data.get("total", 0)))
            return
        self.add(event.kind, event.message, event.data)

    def on_wait(self, ahead: int) -> None:
        self.position = ahead

    def since(self, seen: int) -> list[dict[str, Any]]:
        """Events with an id of at least ``seen`` (still in memory)."""
        return [e for e in list(self.events) if e["id"] >= seen]


Work = Callable[[Agent, Run], Session]  # runs the session; returns it (closed by the caller)


class Service:
    """Runs sessions under ``root`` on ``gpu``, ``concurrency`` at a time, at most ``max_waiting`` in line."""

    def __init__(self, agent: Agent, gpu: GpuQueue, root: Path, *, concurrency: int = 1, max_waiting: int = 8) -> None:
        self.agent = agent
        self.gpu = gpu
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        agent.root = self.root
        self.concurrency = concurrency
        self.max_waiting = max_waiting
        self.runs: dict[str, Run] = {}
        self._slots = threading.Semaphore(concurrency)
        self._lock = threading.Lock()
        self._count = 0
        self._draining = False
        self._seconds: list[float] = []  # the last runs' durations, for Retry-After
        self._threads: list[threading.Thread] = []

    # ---- admission ----------------------------------------------------------------------
    def active(self) -> list[Run]:
        with self._lock:
            return [r for r in self.runs.values() if not r.done.is_set()]

    def counts(self) -> dict[str, int]:
        runs = self.active()
        working = sum(r.started.is_set() for r in runs)
        return {"running": working, "waiting": len(runs) - working, "capacity": self.concurrency + self.max_waiting}

    def retry_after(self) -> int:
        typical = sorted(self._seconds)[len(self._seconds) // 2] if self._seconds else 30.0
        return max(1, min(600, round(typical)))

    def agent_for(self, run: Run) -> Agent:
        """A light agent for one run: the base agent's collaborators, its executor a lane of the queue."""
        with self._lock:  # the shared VLM clients are built once, before runs race (they would split the call log)
            return self.agent.derive(root=self.root, executor=self.gpu.lane(run.on_wait), on_event=run.on_event)

    def running(self, session_id: str) -> Run | None:
        with self._lock:
            return next((r for r in self.runs.values() if r.session_id == session_id and not r.done.is_set()), None)

    def latest(self, session_id: str) -> Run | None:
        """The newest run of the session this process knows (running or finished), if any."""
        with self._lock:
            found = [r for r in self.runs.values() if r.session_id == session_id or session_id in r.sessions]
        return found[-1] if found else None

    def admit(self) -> None:
        """``QueueFull`` or ``Draining`` when a new run would be refused now."""
        with self._lock:
            self._admit()

    def _admit(self) -> None:
        if self._draining:
            raise Draining("the server is stopping; try again on its next start")
        if sum(not r.done.is_set() for r in self.runs.values()) >= self.concurrency + self.max_waiting:
            raise QueueFull(self.retry_after())

    def submit(self, work: Work, session_id: str | None = None) -> Run:
        """Start ``work`` on its own thread once a slot is free; ``QueueFull`` or ``Draining`` when it cannot."""
        with self._lock:
            self._admit()
            live = [r for r in self.runs.values() if not r.done.is_set()]
            if session_id is not None and any(r.session_id == session_id for r in live):
                from emage_agent.core.errors import SessionBusy

                raise SessionBusy("this session is running already; wait for it, or DELETE it to stop it")
            self._count += 1
            run = Run(key=f"run-{self._count}", session_id=session_id)
            self.runs[run.key] = run
            self._forget_old()
        thread = threading.Thread(target=self._body, args=(run, work), name=f"emage-serve-{run.key}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return run

    def _forget_old(self) -> None:
        """Finished runs are kept a while for their event streams, then forgotten (the sessions stay on disk)."""
        done = [k for k, r in self.runs.items() if r.done.is_set()]
        for key in done[: max(0, len(done) - 256)]:
            del self.runs[key]

    def _body(self, run: Run, work: Work) -> None:
        began = time.monotonic()
        session: Session | None = None
        try:
            with self._slots:
                run.started.set()
                if run.halt.is_set():
                    run.add("stopped", "stopped before it started", {"reason": "stopped"})
                    return
                session = work(self.agent_for(run), run)
        except EmageError as exc:
            run.error = exc
        except Exception as exc:  # the session stays resumable; the client gets one line
            run.error = ExecutionFailure(f"{type(exc).__name__}: {exc}")
        finally:
            if session is not None:
                session.try_report()
                session.close()
            run.position = None
            run.add("end", run.error and str(run.error) or "finished", {"error": bool(run.error)})
            with self._lock:
                self._seconds = [*self._seconds[-19:], time.monotonic() - began]
            run.done.set()

    # ---- stopping -----------------------------------------------------------------------
    def stop(self, session_id: str) -> bool:
        """Ask the session's run to end after its current step; False when none runs."""
        run = self.running(session_id)
        if run is None:
            return False
        run.halt.set()
        run.add("stopping", "stopping after the current step", {})
        return True

    def drain(self) -> None:
        """Take no new runs; every run stops at its next step boundary (its session stays resumable)."""
        with self._lock:
            self._draining = True
            runs = [r for r in self.runs.values() if not r.done.is_set()]
        for run in runs:
            run.halt.set()

    @property
    def draining(self) -> bool:
        return self._draining

    def close(self, timeout: float = 300.0) -> None:
        """Drain, then wait (up to ``timeout`` seconds) for the running steps to commit."""
        self.drain()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
