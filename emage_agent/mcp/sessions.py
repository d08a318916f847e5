"""The sessions the MCP server keeps open between calls: a bounded, least-recently-used set."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emage_agent.api import Session

MAX_OPEN_SESSIONS = 32  # sessions kept open between calls; each holds a database and its WAL files


class OpenSessions:
    """The sessions the server keeps open between calls: at most ``capacity``, least recently used closed first.

    Why bounded: every open session holds its SQLite database (and WAL files); a server that kept every
    session it ever touched died at the descriptor limit. Closing is safe: the store holds nothing that
    is not on disk, and a later call opens the session again.
    """

    def __init__(self, capacity: int = MAX_OPEN_SESSIONS) -> None:
        self.capacity = max(1, capacity)
        self._open: OrderedDict[Path, Session] = OrderedDict()
        self._guard = threading.Lock()

    def get(self, path: Path, opener: Callable[[Path], Session]) -> Session:
        with self._guard:
            if path in self._open:
                self._open.move_to_end(path)
                return self._open[path]
        return self.put(path, opener(path))

    def put(self, path: Path, session: Session) -> Session:
        with self._guard:
            old = self._open.pop(path, None)
            self._open[path] = session
            evicted = [self._open.popitem(last=False)[1] for _ in range(len(self._open) - self.capacity)]
        for gone in [*evicted, *([old] if old is not None and old is not session else [])]:
            gone.close()
        return session

    def __len__(self) -> int:
        return len(self._open)

    def close_all(self) -> None:
        with self._guard:
            sessions, self._open = list(self._open.values()), OrderedDict()
        for session in sessions:
            session.close()
