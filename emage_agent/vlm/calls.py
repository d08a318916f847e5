"""What every backend shares about a call: the record the session keeps, and the backoff between attempts.

Why one record for all backends: the session log, the report and the ``--json`` summary name the backend
and model of each call and count its tokens the same way, whichever service or local model answered.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterator

from pydantic import BaseModel

from emage_agent.core.errors import EmageError

MAX_SINGLE_WAIT_S = 30.0


class CallRecord(BaseModel):
    """One VLM call as the session log keeps it. ``ok`` means the model answered; never holds secrets."""

    purpose: str
    model: str
    backend: str = "gemini"
    latency_s: float = 0.0
    attempts: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    ok: bool = False
    error: str | None = None


class CallLog(list[CallRecord]):
    """Every backend's call records in the order made, and each thread's share not yet taken.

    Sessions running side by side share one agent, its clients and this log, each in its own thread:
    ``take`` hands a session only the records its own thread made, so no session books another's calls.
    """

    def __init__(self) -> None:
        super().__init__()
        self._mine = threading.local()
        self._lock = threading.Lock()

    def _thread_share(self) -> list[CallRecord]:
        if not hasattr(self._mine, "records"):
            self._mine.records = []
        return self._mine.records

    def append(self, record: CallRecord) -> None:
        with self._lock:
            super().append(record)
        self._thread_share().append(record)

    def take(self) -> list[CallRecord]:
        """The records this thread made since its last take."""
        mine = self._thread_share()
        taken, mine[:] = list(mine), []
        return taken


def backoff_s(initial_s: float, attempt: int, budget_s: float, hint_s: float | None = None) -> float:
    """Jittered exponential backoff for ``attempt`` (1-based), capped, and at least the server's hint."""
    cap = min(MAX_SINGLE_WAIT_S, budget_s)
    wait = min(cap, max(0.0, initial_s) * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
    return max(wait, min(hint_s, budget_s)) if hint_s is not None else wait


@contextlib.contextmanager
def recorded(calls: list[CallRecord], record: CallRecord) -> Iterator[CallRecord]:
    """Book one call whatever happens: its latency, its error (EMage's, already translated) or ``ok``."""
    started = time.monotonic()
    try:
        yield record
    except EmageError as exc:
        record.error = str(exc)
        raise
    finally:
        record.latency_s = round(time.monotonic() - started, 4)
        calls.append(record)
    record.ok = True
