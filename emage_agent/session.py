"""The session store: every step of a session on disk, so the best image is never lost.

A session is a directory ``<root>/<session_id>/`` holding ``session.db`` (SQLite, WAL),
the PNG artifacts (``images/``, ``masks/``, ``control/``), ``summary.json`` and
``report.html``. Steps form a tree (each new step's parent is the head); reverting moves
the head pointer and keeps every later step in history (as in simonw/llm's conversations).

Crash safety: a step's PNGs are written to temp names, fsynced and renamed, *then* its rows
are committed in one transaction. ``kill -9`` therefore loses at most the step in flight;
its orphaned files are overwritten by the next commit of that step number and dead temp
files are removed on open. ``summary.json`` is rewritten atomically after every change.

Secrets: nothing in the store may hold an API key. Every string that reaches the database
or ``summary.json`` passes through :func:`scrub`, which replaces anything that looks like a
Google API key (``AIza...``) or a Hugging Face token (``hf_...``) with ``[redacted]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emage_agent.errors import ExecutionFailure, UserError
from emage_agent.evaluation import Evaluation

Role = Literal["image", "mask", "control"]
Status = Literal["running", "done", "failed", "interrupted"]
ROLE_DIRS: dict[str, str] = {"image": "images", "mask": "masks", "control": "control"}
STATUSES: tuple[str, ...] = ("running", "done", "failed", "interrupted")
DB_NAME, SUMMARY_NAME = "session.db", "summary.json"
REDACTED = "[redacted]"
NOT_TOOLS = frozenset({"feedback"})  # step "tools" that are the user's doing, not counted as iterations
_SECRET_RE = re.compile(r"AIza[0-9A-Za-z_\-]{8,}|hf_[0-9A-Za-z]{20,}")
_TEMP_RE = re.compile(r"^\..+\.(\d+)\.[0-9a-f]+\.tmp$")

# Append-only: never edit a shipped entry, add a new one. Index + 1 is the schema version.
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
)
_JSON_COLS = ("args", "evaluation", "vetoes", "decision", "clamps", "timings", "tokens")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def new_session_id() -> str:
    """Sortable (UTC time to the millisecond) and unique (random suffix): ``20250102T030405123-9f3ab1``."""
    now = datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}-{secrets.token_hex(3)}"


def scrub(value: Any) -> Any:
    """Return ``value`` with every string that looks like an API key replaced by ``[redacted]``."""
    if isinstance(value, str):
        return _SECRET_RE.sub(REDACTED, value)
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _atomic_file(path: Path) -> Iterator[Any]:
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
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename): readers never see half a file."""
    with _atomic_file(path) as fh:
        fh.write(data)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


class Veto(BaseModel):
    """A tool call the selector refused, and why."""

    tool: str
    reason: str


class Artifact(BaseModel):
    """A PNG written by a step. ``path`` is relative to the session directory."""

    id: str
    step: int
    role: Role
    path: str
    width: int
    height: int


class StepRecord(BaseModel):
    """One step. ``step``, ``parent`` and ``created_at`` are assigned by ``commit_step``;
    ``score`` defaults to the evaluation's satisfaction score; ``prompt`` to the current prompt."""

    model_config = ConfigDict(extra="forbid")

    step: int | None = None
    parent: int | None = None
    kind: str = "tool"
    tool: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    prompt: str | None = None
    evaluation: Evaluation | None = None
    score: float | None = None
    vetoes: list[Veto] = Field(default_factory=list)
    decision: dict[str, Any] | None = None
    clamps: list[str | dict[str, Any]] = Field(default_factory=list)
    rolled_back: bool = False
    error: str | None = None
    note: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    tokens: dict[str, int] = Field(default_factory=dict)
    feedback: str | None = None
    created_at: str | None = None
    artifacts: list[Artifact] = Field(default_factory=list)


class CallRecord(BaseModel):
    """One Gemini call (the fields of ``gemini.client.CallRecord``); unknown keys are kept in ``extra``."""

    model_config = ConfigDict(extra="allow")

    purpose: str
    model: str | None = None
    latency_s: float | None = None
    attempts: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    ok: bool = True
    error: str | None = None


class SessionInfo(BaseModel):
    """Session-level state, as stored."""

    id: str
    dir: Path
    original_prompt: str
    current_prompt: str
    options: dict[str, Any]
    head_step: int | None
    best_step: int | None
    status: Status
    stopped_because: str | None
    vlm_calls: int
    gpu_seconds: float
    created_at: str
    updated_at: str
    schema_version: int

    @property
    def prompt(self) -> str:
        """The prompt in force now (``current_prompt``)."""
        return self.current_prompt


class SessionStore:
    """One open session. Thread-safe (one lock, one connection); one writing process at a time."""

    def __init__(self, session_dir: Path, conn: sqlite3.Connection) -> None:
        self.dir = session_dir
        self._conn = conn
        self._lock = threading.RLock()
        self.id: str = conn.execute("SELECT id FROM session").fetchone()[0]

    # ---- opening -----------------------------------------------------------------------
    @staticmethod
    def _connect(db: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)")
        done = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
        if done > len(MIGRATIONS):
            raise UserError(f"the session has schema version {done}; this EMage knows {len(MIGRATIONS)}: upgrade it")
        for version, sql in enumerate(MIGRATIONS[done:], start=done + 1):
            try:  # executescript runs outside our BEGIN handling, so the script carries its own.
                conn.executescript(
                    f"BEGIN IMMEDIATE;{sql};INSERT INTO schema_version VALUES ({version}, '{_now()}');COMMIT;"
                )
            except sqlite3.Error:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @classmethod
    def create(cls, root: Path, original_prompt: str, options: dict[str, Any] | None = None) -> SessionStore:
        """Make ``<root>/<new id>/`` with its database, and return the open store."""
        if not original_prompt.strip():
            raise UserError("the prompt is empty", field="prompt")
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        while True:
            sid = new_session_id()
            try:
                (root / sid).mkdir()
                break
            except FileExistsError:
                continue
        session_dir = (root / sid).resolve()
        for sub in ROLE_DIRS.values():
            (session_dir / sub).mkdir()
        conn = cls._connect(session_dir / DB_NAME)
        cls._migrate(conn)
        prompt, opts = scrub(original_prompt), json.dumps(scrub(options or {}), sort_keys=True)
        now = _now()
        conn.execute(
            "INSERT INTO session (id, original_prompt, current_prompt, options, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (sid, prompt, prompt, opts, now, now),
        )
        store = cls(session_dir, conn)
        store.write_summary()
        return store

    @classmethod
    def open(cls, session_dir: Path) -> SessionStore:
        """Open an existing session directory; a ``UserError`` says what is wrong if it is not one."""
        session_dir = Path(session_dir).resolve()
        if not (session_dir / DB_NAME).is_file():
            raise UserError(f"{session_dir} is not an EMage session directory (no {DB_NAME})", field="session")
        try:
            conn = cls._connect(session_dir / DB_NAME)
            cls._migrate(conn)
            if conn.execute("SELECT COUNT(*) FROM session").fetchone()[0] != 1:
                raise UserError(f"{session_dir / DB_NAME} holds no session", field="session")
        except sqlite3.DatabaseError as exc:
            raise UserError(
                f"{session_dir / DB_NAME} is not a readable session database: {exc}", field="session"
            ) from None
        for sub in (".", *ROLE_DIRS.values()):
            folder = session_dir / sub
            folder.mkdir(exist_ok=True)
            for tmp in folder.iterdir():  # temp files of a killed writer (live writers' are kept)
                match = _TEMP_RE.match(tmp.name)
                if match and not _pid_alive(int(match.group(1))):
                    tmp.unlink(missing_ok=True)
        return cls(session_dir, conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` takes the write lock up front)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("UPDATE session SET updated_at = ?", (_now(),))
            self._conn.execute("COMMIT")

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    # ---- session state -----------------------------------------------------------------
    @property
    def info(self) -> SessionInfo:
        row = self._q("SELECT * FROM session")[0]
        version = self._q("SELECT MAX(version) FROM schema_version")[0][0]
        data = dict(row) | {"options": json.loads(row["options"]), "best_step": self._best_step()}
        return SessionInfo(dir=self.dir, schema_version=version, **data)

    def set_prompt(self, prompt: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE session SET current_prompt = ?", (scrub(prompt),))
        self.write_summary()

    def set_status(self, status: Status, stopped_because: str | None = None) -> None:
        if status not in STATUSES:
            raise UserError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}", field="status")
        with self._tx() as c:
            c.execute("UPDATE session SET status = ?, stopped_because = ?", (status, scrub(stopped_because)))
        self.write_summary()

    def update_options(self, changes: dict[str, Any]) -> None:
        """Merge ``changes`` into the session options (e.g. more iterations on resume)."""
        with self._tx() as c:
            opts = json.loads(c.execute("SELECT options FROM session").fetchone()[0]) | scrub(changes)
            c.execute("UPDATE session SET options = ?", (json.dumps(opts, sort_keys=True),))

    def add_usage(self, vlm_calls: int = 0, gpu_seconds: float = 0.0) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE session SET vlm_calls = vlm_calls + ?, gpu_seconds = gpu_seconds + ?", (vlm_calls, gpu_seconds)
            )

    # ---- writing steps -----------------------------------------------------------------
    def commit_step(
        self, record: StepRecord, images: dict[str, Image.Image] | None = None, make_head: bool = True
    ) -> int:
        """Write the step's PNGs durably, then its rows in one transaction; return its number.

        The parent is the current head unless ``record.parent`` names one."""
        images = images or {}
        if record.parent is not None:
            self.step(record.parent)
        for role, img in images.items():
            if role not in ROLE_DIRS:
                raise UserError(f"unknown artifact role {role!r}; expected one of {', '.join(ROLE_DIRS)}")
            if not isinstance(img, Image.Image):
                raise UserError(f"images[{role!r}] is a {type(img).__name__}, not a PIL image")
        data = scrub(record.model_dump(mode="json", exclude={"step", "created_at", "artifacts"}))
        if data["score"] is None and data["evaluation"] is not None:
            data["score"] = data["evaluation"]["satisfaction_score"]
        with self._tx() as c:
            head, prompt = c.execute("SELECT head_step, current_prompt FROM session").fetchone()
            step = c.execute("SELECT COALESCE(MAX(step), 0) + 1 FROM step").fetchone()[0]
            parent = data["parent"] if data["parent"] is not None else head
            if data["prompt"] is None:
                data["prompt"] = prompt
            arts = [self._write_png(step, role, img) for role, img in images.items()]
            cols = {k: (json.dumps(data[k]) if k in _JSON_COLS and data[k] is not None else data[k]) for k in data}
            cols |= {"step": step, "parent": parent, "created_at": _now(), "rolled_back": int(data["rolled_back"])}
            c.execute(
                f"INSERT INTO step ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", tuple(cols.values())
            )
            self._insert_artifacts(c, arts)
            if make_head:
                c.execute("UPDATE session SET head_step = ?", (step,))
        self.write_summary()
        return step

    def _write_png(self, step: int, role: str, img: Image.Image) -> Artifact:
        rel = f"{ROLE_DIRS[role]}/step-{step:03d}.png"
        (self.dir / ROLE_DIRS[role]).mkdir(exist_ok=True)
        try:
            with _atomic_file(self.dir / rel) as fh:
                img.save(fh, format="PNG")
        except OSError as exc:
            raise ExecutionFailure(f"could not write {rel}: {exc}") from exc
        return Artifact(id=f"s{step}-{role}", step=step, role=role, path=rel, width=img.width, height=img.height)

    @staticmethod
    def _insert_artifacts(c: sqlite3.Connection, arts: list[Artifact]) -> None:
        c.executemany(
            "INSERT INTO artifact (id, step, role, path, width, height) VALUES (?, ?, ?, ?, ?, ?)",
            [(a.id, a.step, a.role, a.path, a.width, a.height) for a in arts],
        )

    def attach_evaluation(self, step: int, evaluation: Evaluation | dict[str, Any]) -> None:
        """Record a step's evaluation and score later, in its own transaction (the image is already safe)."""
        ev = Evaluation.model_validate(evaluation)
        self.step(step)
        with self._tx() as c:
            c.execute(
                "UPDATE step SET evaluation = ?, score = ? WHERE step = ?",
                (json.dumps(scrub(ev.model_dump(mode="json"))), ev.satisfaction_score, step),
            )
        self.write_summary()

    def mark_rolled_back(self, step: int, rolled_back: bool = True) -> None:
        """Flag a step whose result was discarded (the loop then reverts to a better step)."""
        self.step(step)
        with self._tx() as c:
            c.execute("UPDATE step SET rolled_back = ? WHERE step = ?", (int(rolled_back), step))
        self.write_summary()

    def record_calls(self, step: int | None, records: list[dict[str, Any]]) -> None:
        """Store Gemini call records (keys of :class:`CallRecord`), scrubbed of secrets, linked to ``step``.

        Counters are not touched: the loop calls ``add_usage`` itself."""
        try:
            calls = [CallRecord.model_validate(scrub(r)) for r in records]
        except ValidationError as exc:
            raise UserError(f"bad Gemini call record: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}") from None
        if step is not None:
            self.step(step)
        cols = ("purpose", "model", "latency_s", "attempts", "input_tokens", "output_tokens", "total_tokens", "ok")
        rows = [
            (step, *(getattr(r, k) for k in cols), r.error, json.dumps(r.model_extra or {}, default=str), _now())
            for r in calls
        ]
        with self._tx() as c:
            c.executemany(
                f"INSERT INTO gemini_call (step, {', '.join(cols)}, error, extra, created_at)"
                f" VALUES ({', '.join('?' * (len(cols) + 4))})",
                rows,
            )

    def calls(self, step: int | None = None) -> list[dict[str, Any]]:
        """Gemini call records, all or one step's, oldest first."""
        sql = "SELECT * FROM gemini_call" + (" WHERE step = ?" if step is not None else "") + " ORDER BY id"
        rows = self._q(sql, (step,) if step is not None else ())
        return [dict(r) | {"extra": json.loads(r["extra"]), "ok": bool(r["ok"])} for r in rows]

    # ---- moving the head ---------------------------------------------------------------
    def revert(self, step: int) -> StepRecord:
        """Make ``step`` the head and its prompt the current one; later steps stay in history."""
        rec = self.step(step)
        with self._tx() as c:
            c.execute(
                "UPDATE session SET head_step = ?, current_prompt = COALESCE(?, current_prompt)", (step, rec.prompt)
            )
        self.write_summary()
        return rec

    def undo(self) -> StepRecord:
        """Revert to the head's parent."""
        head = self.head()
        if head is None or head.parent is None:
            raise UserError("nothing to undo: the head is the first step" if head else "nothing to undo: no steps yet")
        return self.revert(head.parent)

    # ---- reading -----------------------------------------------------------------------
    def _record(self, row: sqlite3.Row, arts: list[Artifact]) -> StepRecord:
        data = dict(row)
        for k in _JSON_COLS:
            if data[k] is not None:
                data[k] = json.loads(data[k])
        return StepRecord(**data | {"rolled_back": bool(data["rolled_back"]), "artifacts": arts})

    def steps(self) -> list[StepRecord]:
        arts: dict[int, list[Artifact]] = {}
        for a in self._q("SELECT * FROM artifact ORDER BY step, role"):
            arts.setdefault(a["step"], []).append(Artifact(**dict(a)))
        return [self._record(r, arts.get(r["step"], [])) for r in self._q("SELECT * FROM step ORDER BY step")]

    def step(self, n: int) -> StepRecord:
        rows = self._q("SELECT * FROM step WHERE step = ?", (n,))
        if not rows:
            raise UserError(f"no step {n} in session {self.id}", field="step")
        arts = [Artifact(**dict(a)) for a in self._q("SELECT * FROM artifact WHERE step = ? ORDER BY role", (n,))]
        return self._record(rows[0], arts)

    def head(self) -> StepRecord | None:
        head = self._q("SELECT head_step FROM session")[0][0]
        return None if head is None else self.step(head)

    def _best_step(self) -> int | None:
        rows = self._q("SELECT step FROM step WHERE score IS NOT NULL ORDER BY score DESC, step ASC LIMIT 1")
        return rows[0][0] if rows else None

    def best(self) -> StepRecord | None:
        """The step with the highest score over all scored steps (the earliest on ties)."""
        best = self._best_step()
        return None if best is None else self.step(best)

    def lineage(self, step: int | None = None) -> list[StepRecord]:
        """The path from the root to ``step`` (default: the head)."""
        rec = self.step(step) if step is not None else self.head()
        path: list[StepRecord] = []
        while rec is not None:
            path.append(rec)
            rec = self.step(rec.parent) if rec.parent is not None else None
        return path[::-1]

    def artifact(self, artifact_id: str) -> Artifact:
        rows = self._q("SELECT * FROM artifact WHERE id = ?", (artifact_id,))
        if not rows:
            raise UserError(f"no artifact {artifact_id!r} in session {self.id}", field="artifact_id")
        return Artifact(**dict(rows[0]))

    def artifact_path(self, artifact_id: str) -> Path:
        return self.dir / self.artifact(artifact_id).path

    def load_image(self, artifact_id: str) -> Image.Image:
        path = self.artifact_path(artifact_id)
        with Image.open(path) as img:
            img.load()
            return img.copy()

    def latest(self, role: Role = "mask") -> Artifact | None:
        rows = self._q("SELECT * FROM artifact WHERE role = ? ORDER BY step DESC LIMIT 1", (role,))
        return Artifact(**dict(rows[0])) if rows else None

    def image_of(self, step: int) -> Artifact | None:
        """The image the step itself wrote (``None`` for steps that wrote none, e.g. a mask step)."""
        rows = self._q("SELECT * FROM artifact WHERE step = ? AND role = 'image'", (step,))
        return Artifact(**dict(rows[0])) if rows else None

    def current_image(self, step: int) -> Artifact | None:
        """The image in force at ``step``: its own, else the nearest ancestor's."""
        for rec in reversed(self.lineage(step)):
            if (art := self.image_of(rec.step or 0)) is not None:
                return art
        return None

    # ---- summary -----------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The public ``summary.json`` object (other tools parse it; its keys do not change)."""
        info, steps = self.info, self.steps()
        best = next((s for s in steps if s.step == info.best_step), None)
        final = self.current_image(best.step) if best and best.step else None
        history = []
        for s in steps:
            img = next((a for a in s.artifacts if a.role == "image"), None)
            history.append(
                {
                    "step": s.step,
                    "tool": s.tool,
                    "args": s.args,
                    "satisfaction_score": s.score,
                    "image": str(self.dir / img.path) if img else None,
                    "vetoes": [v.model_dump() for v in s.vetoes],
                    "rolled_back": s.rolled_back,
                }
            )
        return {
            "session_id": self.id,
            "session_dir": str(self.dir),
            "final_image": str(self.dir / final.path) if final else None,
            "final_prompt": best.prompt if best and best.prompt is not None else info.current_prompt,
            "original_prompt": info.original_prompt,
            "satisfaction_score": best.score if best else None,
            "best_step": info.best_step,
            "iterations": sum(1 for s in steps if s.tool and s.tool not in NOT_TOOLS),
            "stopped_because": info.stopped_because,
            "history": history,
        }

    def write_summary(self) -> Path:
        """Rewrite ``summary.json`` atomically; a reader sees the old or the new file, never half."""
        path = self.dir / SUMMARY_NAME
        atomic_write_bytes(path, (json.dumps(self.summary(), indent=2, ensure_ascii=False) + "\n").encode())
        return path
