"""The session database: its schema, its append-only migrations, and how a connection is opened.

Append-only (as in simonw/llm): never edit a shipped migration, add a new one. A migration's
index + 1 is its schema version, recorded in ``schema_version``; a database newer than this
EMage is refused with a ``UserError`` rather than misread.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from emage_agent.core.errors import UserError
from emage_agent.session.files import utc_now

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE session (
        id TEXT PRIMARY KEY, original_prompt TEXT NOT NULL, current_prompt TEXT NOT NULL,
        options TEXT NOT NULL DEFAULT '{}', head_step INTEGER REFERENCES step(step),
        status TEXT NOT NULL DEFAULT 'running', stopped_because TEXT,
        vlm_calls INTEGER NOT NULL DEFAULT 0, gpu_seconds REAL NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE TABLE step (
        step INTEGER PRIMARY KEY, parent INTEGER REFERENCES step(step), kind TEXT NOT NULL,
        tool TEXT, args TEXT NOT NULL DEFAULT '{}', prompt TEXT, evaluation TEXT, score REAL,
        vetoes TEXT NOT NULL DEFAULT '[]', decision TEXT, clamps TEXT NOT NULL DEFAULT '[]',
        rolled_back INTEGER NOT NULL DEFAULT 0, error TEXT, note TEXT, timings TEXT NOT NULL DEFAULT '{}',
        tokens TEXT NOT NULL DEFAULT '{}', feedback TEXT, created_at TEXT NOT NULL);
    CREATE TABLE artifact (
        id TEXT PRIMARY KEY, step INTEGER NOT NULL REFERENCES step(step), role TEXT NOT NULL,
        path TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL);
    CREATE INDEX artifact_role ON artifact(role, step);
    CREATE TABLE gemini_call (
        id INTEGER PRIMARY KEY AUTOINCREMENT, step INTEGER REFERENCES step(step),
        purpose TEXT NOT NULL, model TEXT, latency_s REAL, attempts INTEGER, input_tokens INTEGER,
        output_tokens INTEGER, total_tokens INTEGER, ok INTEGER NOT NULL, error TEXT,
        extra TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL);
    """,
    # 2: the table holds every backend's calls, not only Gemini's.
    "ALTER TABLE gemini_call RENAME TO vlm_call",
)
VLM_CALL_TABLE = "vlm_call"  # the one spelling of the VLM call log's table
JSON_COLS = ("args", "evaluation", "vetoes", "decision", "clamps", "timings", "tokens")  # step columns held as JSON


def connect(db: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (the store opens its own transactions), WAL, full sync, foreign keys."""
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Apply the migrations the database lacks, each in its own transaction."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)")
    done = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
    if done > len(MIGRATIONS):
        raise UserError(f"the session has schema version {done}; this EMage knows {len(MIGRATIONS)}: upgrade it")
    for version, sql in enumerate(MIGRATIONS[done:], start=done + 1):
        try:  # executescript runs outside our BEGIN handling, so the script carries its own.
            conn.executescript(
                f"BEGIN IMMEDIATE;{sql};INSERT INTO schema_version VALUES ({version}, '{utc_now()}');COMMIT;"
            )
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
