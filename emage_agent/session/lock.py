"""One writer per session: an exclusive ``flock`` on ``<session>/writer.lock``, held for a whole run.

Why a lock file and not only SQLite's own locking: SQLite serialises single transactions, but two
``resume``s (or a chat and an MCP refine) would still interleave their steps and each overrun the
iteration limit. The lock is taken for the run, refused at once to a second writer with the holder's
pid, and released by the kernel when the holder dies (``kill -9`` never leaves a stale lock).
Re-entrant within one holder, so a run inside a refine does not lock itself out.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from emage_agent.core.errors import SessionBusy

LOCK_NAME = "writer.lock"


class WriterLock:
    """The writer lock of one session directory, as held by one open store."""

    def __init__(self, session_dir: Path) -> None:
        self.path = Path(session_dir) / LOCK_NAME
        self._fd: int | None = None
        self._depth = 0
        self._guard = threading.RLock()

    def holder(self) -> str:
        """The pid written by the current holder, or "unknown" (it may be an older EMage)."""
        try:
            return self.path.read_text(encoding="ascii").strip() or "unknown"
        except (OSError, UnicodeDecodeError):
            return "unknown"

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the block; ``SessionBusy`` naming the holder's pid when another has it."""
        with self._guard:
            if self._depth == 0:
                self._acquire()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._release()

    def _acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SessionBusy(
                f"{self.path.parent.name} is being written by process {self.holder()}; wait for it to finish "
                "(or stop it), then try again",
                field="session",
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def _release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None
