"""The sessions the MCP server keeps open between calls: a bounded, least-recently-used set."""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
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

    Why held: tool calls run side by side, so a session may be evicted while another call still runs on
    it. ``get``/``put`` with ``hold=True`` count a user until ``release``; a held session is never closed
    under its user: it leaves the set at once but is closed when its last user releases it.
    """

    def __init__(self, capacity: int = MAX_OPEN_SESSIONS) -> None:
        self.capacity = max(1, capacity)
        self._open: OrderedDict[Path, Session] = OrderedDict()
        self._users: Counter[int] = Counter()  # id(session) -> calls using it now
        self._gone: dict[int, Session] = {}  # left the set while in use: closed on the last release
        self._guard = threading.Lock()

    def get(self, path: Path, opener: Callable[[Path], Session], *, hold: bool = False) -> Session:
        with self._guard:
            if path in self._open:
                self._open.move_to_end(path)
                session = self._open[path]
                if hold:
                    self._users[id(session)] += 1
                return session
        return self.put(path, opener(path), hold=hold)

    def put(self, path: Path, session: Session, *, hold: bool = False) -> Session:
        with self._guard:
            if hold:
                self._users[id(session)] += 1
            old = self._open.pop(path, None)
            self._open[path] = session
            leaving = [self._open.popitem(last=False)[1] for _ in range(len(self._open) - self.capacity)]
            if old is not None and old is not session:
                leaving.append(old)
            to_close = self._leave(leaving)
        for gone in to_close:
            gone.close()
        return session

    def release(self, session: Session) -> None:
        """One user of ``session`` is done; it is closed now if it left the set meanwhile."""
        with self._guard:
            self._users[id(session)] -= 1
            if self._users[id(session)] > 0:
                return
            del self._users[id(session)]
            gone = self._gone.pop(id(session), None)
        if gone is not None:
            gone.close()

    def _leave(self, sessions: list[Session]) -> list[Session]:
        """Of the sessions leaving the set, those to close now (the others when their users are done)."""
        now = []
        for session in sessions:
            if self._users[id(session)] > 0:
                self._gone[id(session)] = session
            else:
                self._users.pop(id(session), None)
                now.append(session)
        return now

    def __len__(self) -> int:
        return len(self._open)

    def close_all(self) -> None:
        """Close every session kept; one a call still runs on is closed when that call ends.

        Why not all at once: the server's lifespan ends with each client's connection, while other
        clients' calls may still be running on their sessions."""
        with self._guard:
            leaving, self._open = list(self._open.values()), OrderedDict()
            to_close = self._leave(leaving)
        for session in to_close:
            session.close()
