"""A session made by the previous EMage (table ``gemini_call``, schema version 1) opens, is migrated and resumes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from emage_agent.session.schema import MIGRATIONS
from tests.support.scripted import scripted_agent


def _make_old(db: Path) -> None:
    """Turn a current database back into the previous version's: the old table name, schema version 1."""
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE vlm_call RENAME TO gemini_call")
    conn.execute("DELETE FROM schema_version WHERE version > 1")
    conn.commit()
    conn.close()


def _tables(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


def test_a_new_session_logs_vlm_calls_in_vlm_call(tmp_path: Path) -> None:
    session = scripted_agent(tmp_path, [0.5]).create("a red cube", iterations=0, seed=1)
    session.run()
    db = session.dir / "session.db"
    session.close()
    tables = _tables(db)
    assert "vlm_call" in tables and "gemini_call" not in tables


def test_an_old_session_is_migrated_and_resumes(tmp_path: Path) -> None:
    agent = scripted_agent(tmp_path, [0.4, 0.5, 0.6])
    session = agent.create("a red cube", iterations=1, seed=1)
    session.run()
    session.store.record_calls(1, [{"purpose": "evaluate", "model": "m", "ok": True}])
    folder, steps_before = session.dir, len(session.history())
    session.close()
    _make_old(folder / "session.db")
    assert "gemini_call" in _tables(folder / "session.db")

    again = agent.open(folder)
    assert again.store.info.schema_version == len(MIGRATIONS) == 2
    assert [c["purpose"] for c in again.store.calls(step=1)] == ["evaluate"]  # the old rows moved with the table
    again.run(iterations=1)
    assert len(again.history()) > steps_before
    again.close()
    assert "vlm_call" in (tables := _tables(folder / "session.db")) and "gemini_call" not in tables
