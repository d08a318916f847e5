"""One client-side rate limit for every VLM request of the process, however many sessions run.

Why global: the quota is per API key, not per session. Sessions that each backed off on their
own would keep hammering the service with the others' requests, so a 429 seen by one session
pauses all of them (``back_off``), and ``EMAGE_VLM_RPM`` spaces requests evenly across sessions
(``acquire`` before every HTTP attempt, retries included).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Evenly spaced request slots (``rpm`` per minute; ``None`` for no limit) and a shared pause."""

    def __init__(
        self,
        rpm: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rpm is not None and rpm <= 0:
            raise ValueError("rpm must be positive")
        self.rpm = rpm
        self._interval = 60.0 / rpm if rpm else 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._paused_until = 0.0
        self.requests = 0
        self.back_offs = 0
        self.waited_seconds = 0.0

    def acquire(self) -> float:
        """Block until this request may go; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot, self._paused_until)
            self._next_slot = slot + self._interval
            self.requests += 1
            wait = slot - now
            self.waited_seconds += wait
        if wait > 0:
            self._sleep(wait)
        return wait

    def back_off(self, seconds: float) -> None:
        """The service said slow down (429): no request from any session goes for ``seconds``."""
        with self._lock:
            self.back_offs += 1
            self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    def paused_for(self) -> float:
        """Seconds left of the shared pause (0 when none)."""
        with self._lock:
            return max(0.0, self._paused_until - self._clock())
