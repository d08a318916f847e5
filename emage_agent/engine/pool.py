"""Many sessions at once: N worker threads, one agent, one GPU queue, one VLM rate limit.

Each job is one prompt whose session lives in its own folder (``job.root``), so the job finds
its session again after a crash: a done session is kept as it is, an unfinished one resumes
from its last committed step, a failed one runs again (unless told not to). One job's failure
is caught and reported; the others go on.

Why threads: a session spends its time waiting, on the VLM (network) or on its turn at the GPU
(the queue), and both wait outside the GIL. Worker threads are daemons, so an interrupted
process exits at once; what the sessions committed is on disk and the next run resumes it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from emage_agent.core.errors import EmageError, UserError

DB_NAME = "session.db"
BROKEN = ".broken"  # suffix of a session folder that could not be opened (set aside, never resumed)


class Job(BaseModel):
    """One prompt to run as one session, stored under ``root`` (a folder of its own)."""

    key: str
    prompt: str
    options: dict[str, Any] = Field(default_factory=dict)
    root: Path


class Outcome(BaseModel):
    """What became of a job. ``reused``: it was already done and nothing ran."""

    key: str
    status: Literal["done", "failed"]
    session_dir: Path | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None
    reused: bool = False
    steps: int = 0
    gpu_seconds: float = 0.0
    vlm_calls: int = 0
    seconds: float = 0.0


def find_session(root: Path) -> Path | None:
    """The job's session folder under ``root``: the newest one with a database (ids sort by time)."""
    if not root.is_dir():
        return None
    found = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.endswith(BROKEN) and (d / DB_NAME).is_file())
    return found[-1] if found else None


class SessionPool:
    """Runs jobs ``concurrency`` at a time on one agent (whose executor should be a ``GpuQueue``)."""

    def __init__(self, agent: Any, *, concurrency: int = 1, retry_failed: bool = True) -> None:
        if concurrency < 1:
            raise UserError("must be at least 1", field="--concurrency")
        self.agent = agent
        self.concurrency = concurrency
        self.retry_failed = retry_failed
        self.running: dict[str, float] = {}  # job key -> start time, for progress displays
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Start no further job; those running finish their current work."""
        self._stop.set()

    def run(
        self,
        jobs: Iterable[Job],
        *,
        on_start: Callable[[Job], None] | None = None,
        on_finish: Callable[[Job, Outcome], None] | None = None,
    ) -> list[Outcome]:
        """Every job's outcome, in the order the jobs were given. Callbacks run one at a time."""
        todo = list(jobs)
        # The agent builds its shared collaborators on first use; build them here, once, before the
        # threads race to (two clients would split the call records and the rate limit).
        _ = self.agent.evaluator, self.agent.rewriter
        pending: queue.Queue[tuple[int, Job]] = queue.Queue()
        for item in enumerate(todo):
            pending.put(item)
        results: list[Outcome | None] = [None] * len(todo)

        def worker() -> None:
            while not self._stop.is_set():
                try:
                    index, job = pending.get_nowait()
                except queue.Empty:
                    return
                with self._lock:
                    self.running[job.key] = time.monotonic()
                    if on_start is not None:
                        on_start(job)
                outcome = self.run_one(job)
                with self._lock:
                    self.running.pop(job.key, None)
                    results[index] = outcome
                    if on_finish is not None:
                        on_finish(job, outcome)

        threads = [
            threading.Thread(target=worker, name=f"emage-session-{i}", daemon=True)
            for i in range(min(self.concurrency, len(todo)))
        ]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.2)  # short joins keep Ctrl-C deliverable to the main thread
        return [r for r in results if r is not None]

    def run_one(self, job: Job) -> Outcome:
        """Start, resume or reuse the job's session; any failure becomes a failed outcome."""
        started = time.monotonic()
        session: Any = None
        try:
            existing = find_session(job.root)
            if existing is not None:
                session = self._reopen(existing)
            if session is not None:
                status = session.store.info.status
                if status == "done" or (status == "failed" and not self.retry_failed):
                    return self._outcome(job, session, started, reused=True)
            else:
                session = self.agent.create(job.prompt, root=job.root, **job.options)
            session.run()
            return self._outcome(job, session, started)
        except Exception as exc:  # one job's failure, whatever it is, must not stop the others
            message = str(exc) if isinstance(exc, EmageError) else f"{type(exc).__name__}: {exc}"
            outcome = None
            if session is not None:
                with contextlib.suppress(Exception):  # the store itself may be what broke
                    outcome = self._outcome(job, session, started)
            if outcome is None:
                return Outcome(key=job.key, status="failed", error=message, seconds=time.monotonic() - started)
            return outcome.model_copy(update={"status": "failed", "error": message})
        finally:
            if session is not None:
                with contextlib.suppress(Exception):
                    session.store.close()

    def _reopen(self, path: Path) -> Any:
        """The stored session, or ``None`` (and the folder set aside) when it is unreadable."""
        try:
            return self.agent.open(path)
        except UserError:
            path.rename(path.with_name(path.name + BROKEN))  # killed while being created: start afresh
            return None

    @staticmethod
    def _outcome(job: Job, session: Any, started: float, *, reused: bool = False) -> Outcome:
        info, summary = session.store.info, session.summary()
        done = info.status == "done"
        return Outcome(
            key=job.key,
            status="done" if done else "failed",
            session_dir=session.dir,
            summary=summary,
            error=None if done else (info.stopped_because or f"session is {info.status}"),
            reused=reused,
            steps=len(summary["history"]),
            gpu_seconds=round(info.gpu_seconds, 3),
            vlm_calls=info.vlm_calls,
            seconds=round(time.monotonic() - started, 3),
        )
