"""What the session store needs to be safe on disk: atomic writes, dead temp files, ids, no secrets.

- :func:`atomic_write_bytes` / :func:`atomic_file`: temp file, fsync, rename, fsync of the
  directory; a reader sees the old file or the new one, never half, even after ``kill -9``.
- :func:`remove_dead_temps`: the temp files of a killed writer (a live writer's are kept).
- :func:`new_session_id`: sortable and unique.
- :func:`scrub` (from ``emage_agent.core.redact``): every string that reaches the database or
  ``summary.json`` passes through it; configured secrets and anything shaped like a key become
  ``[redacted]``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from emage_agent.core.redact import REDACTED as REDACTED
from emage_agent.core.redact import scrub as scrub

_TEMP_RE = re.compile(r"^\..+\.(\d+)\.[0-9a-f]+\.tmp$")  # the names atomic_file gives its temp files


def utc_now() -> str:
    """The time now, UTC, ISO 8601 to the millisecond: the store's timestamps."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_session_id() -> str:
    """Sortable (UTC time to the millisecond) and unique (random suffix): ``20250102T030405123-9f3ab1``."""
    now = datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}-{secrets.token_hex(3)}"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Yield a binary file whose content replaces ``path`` only once fully written and fsynced."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename): readers never see half a file."""
    with atomic_file(path) as fh:
        fh.write(data)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # someone else's process, or no pid at all: keep the file
        return True
    return True


def remove_dead_temps(folder: Path) -> None:
    """Delete the temp files in ``folder`` that a writer which is no longer running left behind."""
    for tmp in folder.iterdir():
        match = _TEMP_RE.match(tmp.name)
        if match and not pid_alive(int(match.group(1))):
            tmp.unlink(missing_ok=True)
