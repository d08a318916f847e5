"""Making and opening a session directory: all or nothing on the way in, damage named on the way back.

Why its own module: creation must never leave a half session a ``resume`` trips on, and opening must
turn every kind of damage (corrupt pages, a dropped table, options that are not JSON, a file where a
folder belongs) into one ``UserError`` naming it, while a failing disk stays an ``ExecutionFailure``.

- :func:`build_session`: the directory is built under ``.new-<id>.<pid>`` and renamed into place once
  its database is complete; leftovers of a dead creator are swept by the next creation.
- :func:`open_database`: the checked connection of an existing session directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from emage_agent.core.errors import ExecutionFailure, UserError
from emage_agent.session.files import fsync_dir, new_session_id, pid_alive, remove_dead_temps, utc_now
from emage_agent.session.records import ROLE_DIRS
from emage_agent.session.schema import VLM_CALL_TABLE, connect, migrate

DB_NAME = "session.db"
DISK_ERRORS = (10, 13)  # SQLITE_IOERR, SQLITE_FULL: the storage failed, the database may be fine
NEW_DIR = re.compile(r"^\.new-(.+)\.(\d+)$")  # a session being created: .new-<id>.<pid>


def damaged(session_dir: Path, what: str) -> UserError:
    return UserError(f"{session_dir} is damaged and cannot be opened: {what}", field="session")


def session_root(root: Path) -> Path:
    """The folder sessions are made in, created if needed; a ``UserError`` when it cannot hold them."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{root} is not a folder; sessions are made inside a folder", field="session root") from None
    except OSError as exc:
        raise UserError(f"cannot create {root}: {exc.strerror or exc}", field="session root") from None
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; sessions are made inside a folder", field="session root")
    if not os.access(root, os.W_OK | os.X_OK):
        raise UserError(f"{root} is not writable; choose a folder you can write in", field="session root")
    return root


def sweep_unfinished(root: Path) -> None:
    """Remove sessions whose creation was interrupted (their creator is no longer running)."""
    for entry in root.iterdir():
        match = NEW_DIR.match(entry.name)
        if match and entry.is_dir() and not pid_alive(int(match.group(2))):
            shutil.rmtree(entry, ignore_errors=True)


def build_session(root: Path, prompt: str, options: dict[str, Any]) -> Path:
    """A complete new session directory under ``root`` (prompt and options already scrubbed); its path."""
    root = session_root(root).resolve()
    sweep_unfinished(root)
    while (root / (sid := new_session_id())).exists():
        pass
    building = root / f".new-{sid}.{os.getpid()}"
    try:
        building.mkdir()
        for sub in ROLE_DIRS.values():
            (building / sub).mkdir()
        conn = connect(building / DB_NAME)
        try:
            migrate(conn)
            opts = json.dumps(options, sort_keys=True)
            now = utc_now()
            conn.execute(
                "INSERT INTO session (id, original_prompt, current_prompt, options, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (sid, prompt, prompt, opts, now, now),
            )
        finally:
            conn.close()
        fsync_dir(building)
        os.rename(building, root / sid)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return root / sid


def open_database(session_dir: Path) -> sqlite3.Connection:
    """The checked connection of the session in ``session_dir`` (resolved); a ``UserError`` naming any damage."""
    if NEW_DIR.match(session_dir.name):
        raise UserError(
            f"{session_dir} is a session whose creation was interrupted; nothing was committed in it, "
            "delete it and start again",
            field="session",
        )
    if not (session_dir / DB_NAME).is_file():
        if any((session_dir / sub).is_dir() for sub in ROLE_DIRS.values()):
            raise UserError(
                f"{session_dir} was never completely created (no {DB_NAME}); nothing was committed in it, "
                "delete it and start again",
                field="session",
            )
        raise UserError(f"{session_dir} is not an EMage session directory (no {DB_NAME})", field="session")
    conn: sqlite3.Connection | None = None
    try:
        conn = connect(session_dir / DB_NAME)
        migrate(conn)
        if conn.execute("SELECT COUNT(*) FROM session").fetchone()[0] != 1:
            raise damaged(session_dir, f"{DB_NAME} holds no session")
        problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise damaged(session_dir, f"{DB_NAME} is corrupt ({'; '.join(problems)[:200]})")
        for table in ("step", "artifact", VLM_CALL_TABLE):
            conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchall()
        if not isinstance(json.loads(conn.execute("SELECT options FROM session").fetchone()[0]), dict):
            raise ValueError("not an object")
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF in DISK_ERRORS:  # the disk, not the session, is at fault
            raise ExecutionFailure(
                f"{session_dir / DB_NAME} could not be read or written ({exc}); is the disk full?"
            ) from None
        raise damaged(session_dir, f"{DB_NAME} is not a readable session database ({exc})") from None
    except (ValueError, TypeError) as exc:
        if conn is not None:
            conn.close()
        raise damaged(session_dir, f"its options are not a JSON object ({exc})") from None
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    for sub in (".", *ROLE_DIRS.values()):
        folder = session_dir / sub
        try:
            folder.mkdir(exist_ok=True)
            remove_dead_temps(folder)
        except OSError as exc:
            conn.close()
            raise damaged(session_dir, f"{sub}/ is not a usable folder ({exc.strerror or exc})") from None
    return conn
