"""How anything that escapes a CLI command ends: one true line and an exit code.

Why its own module: the line must say what is true (busy, full, damaged, bad input, bad configuration are
different codes and words), and it may promise "the session is saved" only once a session exists, which the
commands record in ``endings.CURRENT``. Exit codes: 0 done, 1 a failure during the run or a full disk, 2 bad
usage, configuration or a damaged session, 3 busy (another process writes the session or holds its
database), 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import errno
import sqlite3

import typer

from emage_agent.adapters.endings import CURRENT
from emage_agent.core.errors import EmageError, SessionBusy, UserError

# typer vendors its own click; find its usage-error class without importing a private module.
UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
# I/O errors that name something the user gave or can fix (a path, a permission), not a failure of the run.
USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT}
FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_FULL = 5, 6, 13
signals: dict[str, bool] = {"terminated": False}


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the step commits or is discarded, the status says why it stopped."""


def terminate(_signum: int, _frame: object) -> None:
    signals["terminated"] = True
    raise Terminated


def interrupted() -> BaseException:
    """What stopped a command that typer reports only as exit code 130 (it swallows KeyboardInterrupt)."""
    return Terminated() if signals["terminated"] else KeyboardInterrupt()


def outcome(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one line (scrubbed, no traceback) for anything that escapes a command."""
    saved = CURRENT.saved() is not None  # only a session that exists may be called saved
    hint = f" {CURRENT.hint()}" if saved else ""
    if isinstance(exc, typer.Exit):
        return int(exc.exit_code or 0), ""
    if isinstance(exc, UsageError):
        return 2, f"error: {exc.format_message()}"  # type: ignore[attr-defined]
    if isinstance(exc, typer.Abort | KeyboardInterrupt):
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        return 130, f"{what} {CURRENT.hint()}"
    if isinstance(exc, SessionBusy):
        return 3, f"busy: {exc}"
    if isinstance(exc, UserError):
        return 2, f"error: {exc}"
    if isinstance(exc, EmageError):
        return 1, f"failed: {exc}{hint}"
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        then = ", then resume" if saved else ", then try again"
        return 1, f"failed: the disk is full ({exc.filename or 'while writing'}); free space{then}{hint}"
    if isinstance(exc, OSError) and exc.errno in USER_ERRNOS:
        where = f" {exc.filename}" if exc.filename else ""
        return 2, f"error: cannot use{where}: {exc.strerror or exc}"
    if isinstance(exc, sqlite3.DatabaseError):
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code in (SQLITE_BUSY, SQLITE_LOCKED):
            return 3, f"busy: the session database is locked by another process ({exc}); wait, then try again"
        if code == SQLITE_FULL:
            return 1, f"failed: the disk is full ({exc}); free space, then try again{hint}"
        return 2, f"error: the session database is damaged ({exc}); it cannot be continued as is"
    return 1, f"failed: unexpected {type(exc).__name__}: {exc}{hint}"
