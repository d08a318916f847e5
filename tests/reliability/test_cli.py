"""The CLI as an unlucky user meets it: real ``emage-agent`` processes on damaged sessions, bad ``--out``
folders, a full disk, a kill during creation, a second writer and an oversized prompt."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from emage_agent.api import Agent
from tests.reliability.support import emage, env, one_line_error, stored_session
from tests.support.scripted import scripted_agent


def _drop_table(session: Path) -> None:
    with sqlite3.connect(session / "session.db") as db:
        db.execute("DROP TABLE artifact")


def _bad_options(session: Path) -> None:
    with sqlite3.connect(session / "session.db") as db:
        db.execute("UPDATE session SET options = '{not json'")


def _corrupt_pages(session: Path) -> None:
    """Garbage over the step table's pages only: opening reads other pages and still works."""
    db = session / "session.db"
    with sqlite3.connect(db) as conn:  # fold the WAL in, so the pages below are the database's own
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'step'").fetchone()[0]
    data = bytearray(db.read_bytes())
    start = (root - 1) * page
    data[start : start + page] = b"\xa5" * page
    db.write_bytes(bytes(data))


def _images_is_a_file(session: Path) -> None:
    shutil.rmtree(session / "images")
    (session / "images").write_text("not a folder")


@pytest.mark.parametrize(
    ("damage", "command"),
    [(_drop_table, "resume"), (_bad_options, "report"), (_corrupt_pages, "resume"), (_images_is_a_file, "report")],
)
def test_damaged_sessions_give_one_line_and_exit_2(tmp_path: Path, damage: object, command: str) -> None:
    """Item 5: a damaged session is named in one line (exit 2) by resume and report, never a traceback."""
    root = tmp_path / "sessions"
    session = stored_session(root)
    damage(session)  # type: ignore[operator]
    result = emage(command, str(session), root=root)
    line = one_line_error(result)
    assert result.returncode == 2, result.stderr
    assert "damaged" in line and str(session) in line


@pytest.mark.parametrize("out", ["a-file", "/dev/null"])
def test_out_that_is_not_a_folder_is_a_usage_error(tmp_path: Path, out: str) -> None:
    """Item 5: ``--out`` naming a file or a device: one line naming --out, exit 2."""
    (tmp_path / "a-file").write_text("x")
    target = out if out.startswith("/") else str(tmp_path / out)
    result = emage("a red fox", "--out", target, root=tmp_path / "sessions")
    line = one_line_error(result)
    assert result.returncode == 2 and "--out" in line and "not a folder" in line


def test_a_full_disk_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """Item 5: writing the report fails for lack of space (here: a file size limit); one line, exit 1."""
    root = tmp_path / "sessions"
    session = stored_session(root)
    (session / "report.html").unlink()

    def tiny_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit then fail with EFBIG, like ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    result = emage("report", str(session), root=root, preexec_fn=tiny_files)
    line = one_line_error(result)
    assert result.returncode == 1 and "full" in line


def test_a_truncated_image_is_named_not_a_traceback(tmp_path: Path) -> None:
    """Item 5: an image cut short on disk is named as damage where it is read (the evaluator's input)."""
    root = tmp_path / "sessions"
    session = stored_session(root)
    image = session / "images" / "step-001.png"
    image.write_bytes(image.read_bytes()[:40])
    agent = scripted_agent(root)
    opened = agent.open(session)
    with pytest.raises(Exception) as info:
        opened.store.load_image("s1-image")
    assert "damaged" in str(info.value) and "step-001.png" in str(info.value)
    opened.store.close()


def test_a_kill_during_creation_leaves_no_half_session(tmp_path: Path) -> None:
    """Item 8: kill -9 in the middle of creating a session leaves nothing ``resume`` trips on; the leftover
    is named as such and swept by the next creation."""
    root = tmp_path / "sessions"
    script = (  # killed at the first fsync EMage asks for: the database is written, the session not yet complete
        "import os, sys\n"
        "from emage_agent.session import SessionStore\n"
        "os.fsync = lambda fd: os.kill(os.getpid(), 9)\n"
        "SessionStore.create(sys.argv[1], 'a red fox')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(root)], env=env(root), capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    visible = [p for p in root.iterdir() if not p.name.startswith(".")]
    assert visible == [], visible
    (leftover,) = list(root.iterdir())
    result = emage("resume", str(leftover), root=root)
    line = one_line_error(result)
    assert result.returncode == 2 and "creation was interrupted" in line
    stored_session(root)  # the next creation sweeps the dead creator's leftover
    assert not leftover.exists()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path: Path) -> None:
    """Item 9: while one process runs a session, ``resume`` of it is refused with the holder's pid (exit 3)."""
    root = tmp_path / "sessions"
    session_dir = stored_session(root)
    session = Agent.open(scripted_agent(root), session_dir)
    with session.store.writing():
        result = emage("resume", str(session_dir), "--iterations", "1", root=root)
    line = one_line_error(result)
    assert result.returncode == 3, result.stderr
    assert f"process {os.getpid()}" in line
    steps_before = len(session.store.steps())
    session.store.close()
    reopened = scripted_agent(root).open(session_dir)
    assert len(reopened.store.steps()) == steps_before  # the refused writer wrote nothing
    reopened.store.close()


def test_an_oversized_prompt_states_the_limit_not_the_prompt(tmp_path: Path) -> None:
    """Item 11: a 100 KB prompt is refused with its length and the limit, echoing only a short head."""
    root = tmp_path / "sessions"
    prompt = "a red fox " * 10239 + "a red fox!"
    result = emage(prompt, "--json", "--out", str(root), root=root)
    line = one_line_error(result)
    assert result.returncode == 2
    assert f"{len(prompt)} characters" in line and "2000" in line
    assert len(result.stderr) < 400
    assert not root.exists() or not any(root.iterdir())
    assert json.dumps(prompt)[:500] not in result.stdout
