"""How a command ends, truthfully: the session folder and the exact resume command, or one JSON object.

Why its own module: every command (run, resume, chat) ends through the CLI's one error handler, and that
handler must know which session the command was working on to name it. The command records the session
here as soon as the folder exists; the handler reads it. A folder that was removed (a failure before the
first step leaves none) is never named.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATUS_BY_CODE = {0: "done", 1: "failed", 2: "error", 3: "busy", 130: "interrupted"}


@dataclass
class Ending:
    """What the running command is working on: its session folder (once made) and whether it answers in JSON."""

    session: Path | None = None
    as_json: bool = False

    def saved(self) -> Path | None:
        """The session folder when it still exists (with its database), else None."""
        from emage_agent.session.lifecycle import DB_NAME  # not at import: the CLI's --help stays light

        if self.session is not None and (self.session / DB_NAME).is_file():
            return self.session
        return None

    def hint(self) -> str:
        """The clause that ends a failure or interruption line: where the session is and how to continue it."""
        where = self.saved()
        if where is None:
            return "(no step was finished, so no session was kept)"
        return f"(the session is saved in {where}; continue it with: {resume_line(where)})"

    def as_object(self, code: int, line: str) -> dict[str, Any]:
        """The one JSON object a ``--json`` command prints when it does not finish."""
        where = self.saved()
        return {
            "status": STATUS_BY_CODE.get(code, "failed"),
            "exit_code": code,
            "error": line,
            "session": str(where) if where else None,
            "resume": resume_line(where) if where else None,
        }


def resume_line(session: Path) -> str:
    """The exact command that continues ``session``, quoted for a POSIX shell."""
    return f"emage-agent resume {shlex.quote(str(session))}"


CURRENT = Ending()
