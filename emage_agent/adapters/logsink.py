"""Other libraries' messages go to the session's log, not in front of EMage's lines.

Why: bitsandbytes, torch (``_pytree``), torchao, torchvision, transformers and diffusers print a
screenful of warnings and bars while models load, before EMage has said anything; some use their own
logging handlers, some ``warnings``, some write from C. Hiding stderr to avoid them also hid chat's
prompt. So the process's stderr (file descriptor 2) is redirected: first into a temporary file, then,
once the command's session folder exists, into ``emage.log`` inside it (what came before is copied
there). EMage's own lines go to the real terminal through a duplicate of the original descriptor.
``--verbose`` keeps stderr as it is and also shows EMage's log records there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import IO

LOG_NAME = "emage.log"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StderrLog:
    """Owns the redirection of descriptor 2; ``terminal`` is where EMage's own lines go."""

    def __init__(self, *, verbose: bool) -> None:
        self.verbose = verbose
        self.terminal: IO[str] = sys.stderr
        self.path: Path | None = None
        self._held: IO[bytes] | None = None
        self._saved_fd: int | None = None

    def start(self) -> StderrLog:
        """Begin: log records at INFO to stderr; unless verbose, stderr itself goes to a held file."""
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logging.captureWarnings(True)
        if self.verbose:
            return self
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
            self._saved_fd = os.dup(2)
            self.terminal = os.fdopen(os.dup(self._saved_fd), "w", buffering=1, encoding="utf-8", errors="replace")
            self._held = tempfile.TemporaryFile()  # noqa: SIM115 - held open until the session log exists
            os.dup2(self._held.fileno(), 2)
        return self

    def attach(self, folder: Path) -> None:
        """From now on stderr is appended to ``folder``/emage.log (with everything held so far)."""
        if self.verbose or self._saved_fd is None or self.path is not None:
            return
        path = folder / LOG_NAME
        try:
            sys.stderr.flush()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if self._held is not None:
                self._held.seek(0)
                with os.fdopen(os.dup(fd), "ab") as out:
                    shutil.copyfileobj(self._held, out)
            os.dup2(fd, 2)
            os.close(fd)
        except OSError:
            return  # a full or read-only disk: stderr stays held; the run's own error says what failed
        self.path = path
        if self._held is not None:
            self._held.close()
            self._held = None

    def held_tail(self, limit: int = 4000) -> str:
        """The end of what libraries wrote before any session existed (shown when a command fails early)."""
        if self._held is None:
            return ""
        with contextlib.suppress(OSError):
            sys.stderr.flush()
            size = self._held.seek(0, os.SEEK_END)
            self._held.seek(max(0, size - limit))
            return self._held.read().decode("utf-8", "replace")
        return ""
