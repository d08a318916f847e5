"""The session store: every step of a session on disk, so the best image is never lost.

A session is a directory ``<root>/<session_id>/`` holding ``session.db`` (SQLite, WAL),
the PNG artifacts (``images/``, ``masks/``, ``control/``), ``summary.json`` and
``report.html``. Steps form a tree (each new step's parent is the head); reverting moves
the head pointer and keeps every later step in history (as in simonw/llm's conversations).

Crash safety: a step's PNGs are written to temp names, fsynced and renamed, *then* its rows
are committed in one transaction. ``kill -9`` therefore loses at most the step in flight;
its orphaned files are overwritten by the next commit of that step number and dead temp
files are removed on open. ``summary.json`` is rewritten atomically after every change.

All or nothing: a session is built under a hidden temporary name (``.new-<id>.<pid>``) and renamed
into place once its database is complete, so ``kill -9`` during creation leaves no half session a
``resume`` would trip on; the leftover is swept by the next creation and named as such if opened.
One writer at a time: ``writing()`` holds the session's lock file (``writer.lock``) for a run.

Secrets: nothing in the store may hold an API key. Every string that reaches the database
or ``summary.json`` passes through :func:`scrub`.

The records live in ``records``, the schema in ``schema``, the on-disk helpers in ``files``;
the rest of EMage imports them through ``emage_agent.session``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import ValidationError

from emage_agent.core.decisions import Decision
from emage_agent.core.errors import ExecutionFailure, UserError
from emage_agent.core.evaluation import Evaluation
from emage_agent.session.files import REDACTED as REDACTED
from emage_agent.session.files import (
    atomic_file,
    atomic_write_bytes,
    scrub,
    utc_now,
)
from emage_agent.session.lifecycle import build_session, damaged, open_database
from emage_agent.session.lock import WriterLock
from emage_agent.session.records import ROLE_DIRS, STATUSES, Artifact, CallRecord, Role, SessionInfo, Status, StepRecord
from emage_agent.session.schema import JSON_COLS, VLM_CALL_TABLE
from emage_agent.session.schema import MIGRATIONS as MIGRATIONS

SUMMARY_NAME = "summary.json"
NOT_TOOLS = frozenset({"feedback"})  # step "tools" that are the user's doing, not counted as iterations


class SessionStore:
    """One open session. Thread-safe (one lock, one connection); one writing process at a time."""

    def __init__(self, session_dir: Path, conn: sqlite3.Connection) -> None:
        self.dir = session_dir
        self._conn = conn
        self._lock = threading.RLock()
        self.id: str = conn.execute("SELECT id FROM session").fetchone()[0]
        self._writer = WriterLock(session_dir)

    # ---- opening -----------------------------------------------------------------------
    @classmethod
    def create(cls, root: Path, original_prompt: str, options: dict[str, Any] | None = None) -> SessionStore:
        """Make ``<root>/<new id>/`` with its database, and return the open store."""
        if not original_prompt.strip():
            raise UserError("the prompt is empty", field="prompt")
        session_dir = build_session(Path(root), scrub(original_prompt), scrub(options or {}))
        store = cls.open(session_dir)
        store.write_summary()
        return store

    @classmethod
    def open(cls, session_dir: Path) -> SessionStore:
        """Open an existing session directory; a ``UserError`` says what is wrong if it is not one."""
        session_dir = Path(session_dir).resolve()
        return cls(session_dir, open_database(session_dir))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def writing(self) -> contextlib.AbstractContextManager[None]:
        """Hold this session's writer lock for a run; ``SessionBusy`` naming the holder's pid if taken."""
        return self._writer.held()

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
            self._conn.execute("UPDATE session SET updated_at = ?", (utc_now(),))
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
            cols = {k: (json.dumps(data[k]) if k in JSON_COLS and data[k] is not None else data[k]) for k in data}
            cols |= {"step": step, "parent": parent, "created_at": utc_now(), "rolled_back": int(data["rolled_back"])}
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
            with atomic_file(self.dir / rel) as fh:
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

    def note_decision(self, step: int, **notes: Any) -> None:
        """Set fields of a step's recorded decision (e.g. the stop threshold the loop applied after it)."""
        old = self.step(step).decision or Decision()
        decision = Decision.model_validate({**old.stored(), **notes})  # the notes are checked like any decision
        with self._tx() as c:
            c.execute("UPDATE step SET decision = ? WHERE step = ?", (json.dumps(scrub(decision.stored())), step))
        self.write_summary()

    def mark_rolled_back(self, step: int, rolled_back: bool = True) -> None:
        """Flag a step whose result was discarded (the loop then reverts to a better step)."""
        self.step(step)
        with self._tx() as c:
            c.execute("UPDATE step SET rolled_back = ? WHERE step = ?", (int(rolled_back), step))
        self.write_summary()

    def record_calls(self, step: int | None, records: list[dict[str, Any]]) -> None:
        """Store VLM call records (keys of :class:`CallRecord`), scrubbed of secrets, linked to ``step``.

        Counters are not touched: the loop calls ``add_usage`` itself."""
        try:
            calls = [CallRecord.model_validate(scrub(r)) for r in records]
        except ValidationError as exc:
            raise UserError(f"bad VLM call record: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}") from None
        if step is not None:
            self.step(step)
        cols = ("purpose", "model", "latency_s", "attempts", "input_tokens", "output_tokens", "total_tokens", "ok")
        rows = [
            (step, *(getattr(r, k) for k in cols), r.error, json.dumps(r.model_extra or {}, default=str), utc_now())
            for r in calls
        ]
        with self._tx() as c:
            c.executemany(
                f"INSERT INTO {VLM_CALL_TABLE} (step, {', '.join(cols)}, error, extra, created_at)"
                f" VALUES ({', '.join('?' * (len(cols) + 4))})",
                rows,
            )

    def calls(self, step: int | None = None) -> list[dict[str, Any]]:
        """VLM call records, all or one step's, oldest first."""
        sql = f"SELECT * FROM {VLM_CALL_TABLE}" + (" WHERE step = ?" if step is not None else "") + " ORDER BY id"
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
        for k in JSON_COLS:
            if data[k] is not None:
                data[k] = json.loads(data[k])
        return StepRecord(**data | {"rolled_back": bool(data["rolled_back"]), "artifacts": arts})

    def _artifacts(self, where: str, args: tuple[Any, ...] = ()) -> list[Artifact]:
        return [Artifact(**dict(a)) for a in self._q(f"SELECT * FROM artifact {where}", args)]

    def steps(self) -> list[StepRecord]:
        arts: dict[int, list[Artifact]] = {}
        for a in self._artifacts("ORDER BY step, role"):
            arts.setdefault(a.step, []).append(a)
        return [self._record(r, arts.get(r["step"], [])) for r in self._q("SELECT * FROM step ORDER BY step")]

    def step(self, n: int) -> StepRecord:
        rows = self._q("SELECT * FROM step WHERE step = ?", (n,))
        if not rows:
            raise UserError(f"no step {n} in session {self.id}", field="step")
        return self._record(rows[0], self._artifacts("WHERE step = ? ORDER BY role", (n,)))

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
        found = self._artifacts("WHERE id = ?", (artifact_id,))
        if not found:
            raise UserError(f"no artifact {artifact_id!r} in session {self.id}", field="artifact_id")
        return found[0]

    def artifact_path(self, artifact_id: str) -> Path:
        """The artifact's file, resolved and proven to lie inside the session directory.

        Why resolve here: every reader (resources, thumbnails, the loop) comes through this one place, so
        an artifact row or a symlink that points elsewhere (``/etc/passwd``) is refused for all of them.
        """
        rel = self.artifact(artifact_id).path
        try:
            resolved = (self.dir / rel).resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise damaged(self.dir, f"{rel} cannot be read ({exc.__class__.__name__})") from None
        if not resolved.is_relative_to(self.dir) or not resolved.is_file():
            raise UserError(f"artifact {artifact_id!r} does not lead to a file inside the session", field="artifact_id")
        return resolved

    def load_image(self, artifact_id: str) -> Image.Image:
        path = self.artifact_path(artifact_id)
        try:
            with Image.open(path) as img:
                img.load()
                return img.copy()
        except (OSError, Image.DecompressionBombError) as exc:  # truncated, unreadable, replaced by a folder
            raise damaged(self.dir, f"{self.artifact(artifact_id).path} is not a readable image ({exc})") from None

    def latest(self, role: Role = "mask") -> Artifact | None:
        return next(iter(self._artifacts("WHERE role = ? ORDER BY step DESC LIMIT 1", (role,))), None)

    def image_of(self, step: int) -> Artifact | None:
        """The image the step itself wrote (``None`` for steps that wrote none, e.g. a mask step)."""
        return next(iter(self._artifacts("WHERE step = ? AND role = 'image'", (step,))), None)

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
        threshold_used = info.options.get("threshold")
        for s in steps:
            img = next((a for a in s.artifacts if a.role == "image"), None)
            entry = {
                "step": s.step,
                "tool": s.tool,
                "args": s.args,
                "satisfaction_score": s.score,
                "image": str(self.dir / img.path) if img else None,
                "vetoes": [v.model_dump() for v in s.vetoes],
                "rolled_back": s.rolled_back,
            }
            if s.decision and s.decision.threshold is not None:  # an adaptive session's bar after this step
                entry["threshold"] = threshold_used = s.decision.threshold
            history.append(entry)
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
            "threshold_used": threshold_used,
            "speed": info.options.get("speed"),
            "history": history,
            "vlm": self.vlm_used(),
        }

    def vlm_used(self) -> dict[str, dict[str, str | None]]:
        """The backend and model that last answered each purpose (evaluate, plan, rewrite)."""
        used: dict[str, dict[str, str | None]] = {}
        for row in self._q(f"SELECT purpose, model, extra FROM {VLM_CALL_TABLE} ORDER BY id", ()):
            extra = json.loads(row["extra"] or "{}")
            used[row["purpose"]] = {"backend": extra.get("backend"), "model": row["model"]}
        return used

    def write_summary(self) -> Path:
        """Rewrite ``summary.json`` atomically; a reader sees the old or the new file, never half."""
        path = self.dir / SUMMARY_NAME
        atomic_write_bytes(path, (json.dumps(self.summary(), indent=2, ensure_ascii=False) + "\n").encode())
        return path
