"""What each MCP tool does, on the shared agent and its open sessions (the server wires them to the SDK).

Every call goes through the same ``Agent`` and session store as the CLI. Arguments are checked against
schemas derived from ``tools/*.json``; image and session arguments are confined to the session root,
resource reads to the session's directory; GPU work waits its turn in the shared ``engine.GpuQueue``.
"""

from __future__ import annotations

import base64
import itertools
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from mcp import types
from mcp.server import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult
from PIL import Image, UnidentifiedImageError

from emage_agent.adapters.mcp.http import BearerAuth as BearerAuth
from emage_agent.adapters.mcp.http import http_app as http_app
from emage_agent.adapters.mcp.http import is_loopback as is_loopback
from emage_agent.adapters.mcp.listing import REPORT_URI_RE
from emage_agent.adapters.mcp.results import THUMB_PX as THUMB_PX
from emage_agent.adapters.mcp.results import artifact_link, error_result, tool_result
from emage_agent.adapters.mcp.results import thumbnail as thumbnail
from emage_agent.adapters.mcp.schemas import (
    BRIEF,
    NEW_SESSION_ONLY,
    PICTURE_OPTIONS,
    REFINE_OPTIONS,
    SCHEMAS,
    SESSION_ID,
    check_schema,
)
from emage_agent.adapters.mcp.sessions import MAX_OPEN_SESSIONS as MAX_OPEN_SESSIONS
from emage_agent.adapters.mcp.sessions import OpenSessions
from emage_agent.adapters.paths import is_artifact_id, resolve_image_arg, resolve_session_dir
from emage_agent.core.errors import EmageError, ExecutionFailure, UserError
from emage_agent.core.redact import one_line
from emage_agent.core.tools import first_image_tool, validate_arguments
from emage_agent.engine import GpuQueue
from emage_agent.session import SessionStore

if TYPE_CHECKING:
    from emage_agent.api import Agent, Session
    from emage_agent.core.events import AgentEvent

log = logging.getLogger(__name__)
KEYWORDS = ("current", "latest")  # artifact names the contracts define, resolved by the session
ARTIFACT_URI = "emage://sessions/{session_id}/artifacts/{artifact_id}"
_ARTIFACT_URI_RE = re.compile(r"^emage://sessions/(?P<session_id>[^/]+)/artifacts/(?P<artifact_id>[^/]+)$")


def _open_image(path: Path, field: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
        raise UserError(f"{path.name} is not a readable image ({exc.__class__.__name__})", field=field) from None


def _has(session: Session, artifact_id: str) -> bool:
    try:
        session.store.artifact(artifact_id)
    except UserError:
        return False
    return True


@dataclass(frozen=True)
class ToolSpec:
    """One tool as listed (name, description, input schema as data) and as called (check, then run)."""

    tool: types.Tool
    check: Callable[[dict[str, Any]], Any]
    run: Callable[[dict[str, Any]], CallToolResult]


class EmageTools:
    """The handlers behind the tools: one lazily built agent, calls side by side, events to progress.

    Each tool is a ``check`` (cheap, on the event loop, so a bad call fails at once) and a ``run``
    (on a worker thread). Runs overlap; their GPU work goes through one ``GpuQueue`` (``gpu``, or one
    made in front of the agent's executor), so one GPU serves every call one job at a time, in order.
    """

    def __init__(
        self,
        agent_factory: Callable[[], Agent],
        root: Path | None = None,
        max_open_sessions: int = MAX_OPEN_SESSIONS,
        gpu: GpuQueue | None = None,
    ) -> None:
        self._factory = agent_factory
        self._root = root
        self._agent: Agent | None = None
        self.gpu = gpu
        self._chained: Callable[[AgentEvent], None] | None = None
        self.sessions = OpenSessions(max_open_sessions)
        self._call = threading.local()  # the running call's progress reporter and sessions, per worker thread
        self._build_lock = threading.Lock()

    # ---- plumbing ---------------------------------------------------------------------
    def agent(self) -> Agent:
        """The agent every call uses: the factory's, with its executor behind the shared GPU queue."""
        with self._build_lock:
            if self._agent is None:
                base = self._factory()
                self.gpu = self.gpu or GpuQueue(base.executor)
                self._chained = base.on_event
                self._agent = base.derive(executor=self.gpu.lane(self._on_wait), on_event=self._on_event)
            return self._agent

    def _report(self, message: str) -> None:
        report = getattr(self._call, "report", None)
        if report is not None:
            report(message)

    def _on_event(self, event: AgentEvent) -> None:
        if self._chained is not None:
            self._chained(event)
        if event.preview is None:  # a preview picture is for displays; its progress step was reported already
            self._report(f"{event.kind}: {event.message}")

    def _on_wait(self, ahead: int) -> None:
        if ahead:
            self._report(f"queued: {ahead} GPU job(s) ahead")

    async def call(self, spec: ToolSpec, args: dict[str, Any], ctx: ServerRequestContext[Any]) -> CallToolResult:
        """``check`` then ``run``; EMage's errors become tool errors with their message, anything else a
        one-line tool error (logged), never a crashed server or a traceback sent to the client."""
        try:
            spec.check(args)
            return await self.work(ctx, lambda: spec.run(args))
        except EmageError as exc:
            return error_result(exc)
        except Exception as exc:  # noqa: BLE001 - the server lives on; the client gets one line
            log.exception("tool %s failed unexpectedly", spec.tool.name)
            return error_result(ExecutionFailure(one_line(f"{type(exc).__name__}: {exc}", 300)))

    async def work(self, ctx: ServerRequestContext[Any], fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on a worker thread beside other calls, turning its agent events into progress
        notifications for this call's client; the sessions it used are released afterwards."""
        counter = itertools.count(1)

        def report(message: str) -> None:
            try:  # progress is a courtesy: a gone client must not stop the run
                anyio.from_thread.run(ctx.session.report_progress, float(next(counter)), None, message)
            except Exception as exc:  # noqa: BLE001
                log.debug("progress not sent: %r", exc)

        def job() -> Any:
            self._call.report, self._call.held = report, []
            try:
                return fn()
            finally:
                for session in self._call.held:
                    self.sessions.release(session)
                self._call.report, self._call.held = None, None

        return await anyio.to_thread.run_sync(job)

    def _keep(
        self, path: Path, opener: Callable[[Path], Session] | None = None, session: Session | None = None
    ) -> Session:
        """The open session at ``path`` (``session`` put there, or the one kept, or ``opener``'s), counted
        as used by the running call until it ends, so no other call's eviction closes it meanwhile."""
        held = getattr(self._call, "held", None)
        if session is not None:
            found = self.sessions.put(path, session, hold=held is not None)
        else:
            assert opener is not None
            found = self.sessions.get(path, opener, hold=held is not None)
        if held is not None:
            held.append(found)
        return found

    def root(self) -> Path:
        """The session root: given up front (paths are then checked before any model is touched) or the agent's."""
        return Path(self._root) if self._root is not None else Path(self.agent().root)

    def session(self, session_id: str) -> Session:
        """A session by id or directory inside the root, kept open among the most recently used."""
        path = resolve_session_dir(session_id, self.root())
        return self._keep(path, self.agent().open)

    def artifact_arg(self, session: Session, value: str, field: str) -> str:
        """An image/mask argument as an artifact id of ``session`` (a file path must be one of its artifacts)."""
        if value in KEYWORDS:
            return value
        ref = resolve_image_arg(value, self.root(), field=field, has_artifact=lambda a: _has(session, a))
        found = ref.artifact_id or artifact_link(session, ref.path)
        if found is None:
            raise UserError(f"{value!r} is not an artifact of session {session.id}; pass its artifact id", field=field)
        return found

    # ---- tools ------------------------------------------------------------------------
    def check_contract(self, name: str, args: dict[str, Any]) -> None:
        check_schema({"properties": {"session_id": SESSION_ID}}, {k: v for k, v in args.items() if k == "session_id"})
        validate_arguments(name, {k: v for k, v in args.items() if k != "session_id"})
        if "session_id" not in args and name != first_image_tool():
            raise UserError(
                f"{name} works on a session's image; pass session_id ({first_image_tool()} or refine start one)",
                field="session_id",
            )

    def run_contract(self, name: str, args: dict[str, Any]) -> CallToolResult:
        call = dict(args)
        session = self.session(call.pop("session_id")) if "session_id" in call else None
        for field in ("image", "mask"):
            if field in call and session is not None:
                call[field] = self.artifact_arg(session, call[field], field)
        out = self.agent().run_tool(name, call, session)
        session = session or self.session(out["session_id"])
        return tool_result(out, out.get("image"), session, is_error=not out.get("ok", True))

    def evaluate(self, args: dict[str, Any]) -> CallToolResult:
        session = self.session(args["session_id"]) if args.get("session_id") else None
        lookup = (lambda a: a == "current" or _has(session, a)) if session else None
        ref = resolve_image_arg(args["image"], self.root(), field="image", has_artifact=lookup)
        if ref.artifact_id is not None and session is None:
            raise UserError(
                "an artifact id needs session_id (or give an image file inside the session root)", field="image"
            )
        if ref.artifact_id == "current":
            image = session.loop.view.current_image()
        else:
            image = session.store.load_image(ref.artifact_id) if ref.artifact_id else _open_image(ref.path, "image")
        prompt = args.get("prompt") or (session.store.info.current_prompt if session else None)
        if not prompt:
            raise UserError("needed when no session_id is given", field="prompt")
        evaluation = self.agent().evaluate(image, prompt)
        return tool_result({"prompt": prompt, "image": args["image"], **evaluation.model_dump(mode="json")}, None)

    @staticmethod
    def check_refine(args: dict[str, Any]) -> None:
        from emage_agent.api import FIXED_OPTIONS

        check_schema(SCHEMAS["refine"], args)
        fixed = [k for k in (*NEW_SESSION_ONLY, *PICTURE_OPTIONS) if k in args]
        if args.get("session_id") and args.get("prompt"):
            raise UserError("give prompt to start a session or session_id to continue one, not both", field="prompt")
        if args.get("session_id") and fixed:
            raise UserError(f"cannot change for a continuing session: {FIXED_OPTIONS[fixed[0]]}", field=fixed[0])
        if not args.get("session_id") and args.get("feedback"):
            raise UserError("feedback continues a session; pass its session_id", field="feedback")
        if not args.get("session_id") and not args.get("prompt"):
            raise UserError("give a prompt to start a session, or a session_id to continue one", field="prompt")

    def refine(self, args: dict[str, Any]) -> CallToolResult:
        iterations = args.get("iterations")
        if args.get("session_id"):
            session = self.session(args["session_id"])
            changes = {k: args[k] for k in REFINE_OPTIONS if k in args}
            if changes:
                session.configure(**changes)  # they apply to the next steps
            steps = 1 if iterations is None else iterations
            summary = session.refine(args["feedback"], steps) if args.get("feedback") else session.run(steps)
        else:
            options = {k: args[k] for k in (*REFINE_OPTIONS, "iterations") if k in args}
            for field in PICTURE_OPTIONS:
                if args.get(field):
                    ref = resolve_image_arg(args[field], self.root(), field=field)
                    if ref.path is None:
                        raise UserError("give a picture file inside the session root, not an artifact id", field=field)
                    options[field] = ref.path
            started = self.agent().start(args["prompt"], **options)
            session = self._keep(started.dir, session=started)
            summary = session.run()
        brief = {k: summary.get(k) for k in BRIEF}
        brief["history"] = [
            {k: h.get(k) for k in ("step", "tool", "satisfaction_score", "rolled_back")}
            for h in summary.get("history", [])[-12:]
        ]
        return tool_result(brief, summary.get("final_image"), session)

    def session_history(self, args: dict[str, Any]) -> CallToolResult:
        session = self.session(args["session_id"])
        head = session.store.head()
        summary = {**session.summary(), "head_step": head.step if head else None}
        return tool_result(summary, summary.get("final_image"), session)

    def revert(self, args: dict[str, Any]) -> CallToolResult:
        session = self.session(args["session_id"])
        session.revert(args["step"])
        current = session.store.current_image(args["step"])
        image = str(session.dir / current.path) if current else None
        head = {
            "session_id": session.id,
            "head_step": args["step"],
            "image": image,
            "prompt": session.store.info.current_prompt,
        }
        return tool_result(head, image, session)

    def read_artifact(self, session_id: str, artifact_id: str) -> bytes:
        """The full-size PNG behind an ``emage://sessions/{id}/artifacts/{artifact}`` link.

        The store resolves the artifact's path and refuses one that leads out of the session directory
        (an edited database row, a symlink), so a resource read never returns another file.
        """
        if not is_artifact_id(artifact_id):
            raise UserError("not an artifact id", field="artifact_id")
        with SessionStore.open(resolve_session_dir(session_id, self.root())) as store:
            return store.artifact_path(artifact_id).read_bytes()

    def read_report(self, session_id: str) -> str:
        """A session's report.html, as listed by ``resources/list`` (written by the session; never another file)."""
        folder = resolve_session_dir(session_id, self.root())
        report = folder / "report.html"
        if report.is_symlink() or not report.is_file():
            raise UserError("the session has no report yet", field="uri")
        return report.read_text(encoding="utf-8")

    async def read_resource(self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams) -> Any:
        uri = str(params.uri)
        match = _ARTIFACT_URI_RE.match(uri)
        report = REPORT_URI_RE.match(uri)
        try:
            if report is not None:
                text = await anyio.to_thread.run_sync(self.read_report, report.group("session_id"))
                return types.ReadResourceResult(
                    contents=[types.TextResourceContents(uri=uri, mime_type="text/html", text=text)]
                )
            if match is None:
                raise UserError(f"unknown resource {uri[:80]!r}", field="uri")
            data = await anyio.to_thread.run_sync(self.read_artifact, *match.group("session_id", "artifact_id"))
        except (EmageError, OSError) as exc:
            data_uri = {"uri": uri[:200]}  # a head of the URI only: a 1 MB one is not echoed back
            raise MCPError(code=types.INVALID_PARAMS, message=one_line(str(exc), 300), data=data_uri) from None
        blob = base64.b64encode(data).decode()
        return types.ReadResourceResult(
            contents=[types.BlobResourceContents(uri=uri, mime_type="image/png", blob=blob)]
        )
