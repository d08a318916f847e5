"""The UI's sessions: runs in the background on one shared GPU queue, watched and steered from the browser.

No Gradio here. A :class:`Studio` holds one base ``Agent`` (settings, VLM clients, the executor) and
one :class:`~emage_agent.engine.GpuQueue` in front of its executor. Every run (a new prompt, feedback,
resume) gets its own light ``Agent`` whose executor is a lane of that queue, so several tabs or users
run side by side while GPU work stays one job at a time and each run knows its place in the queue.
A :class:`Run` is what the page polls: a version number that changes with every event, the queue
position, the current diffusion step, and a halt flag that ends the run after the current step.
"""

from __future__ import annotations

import io
import logging
import re
import sqlite3
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from emage_agent.adapters.ui.guards import check_session_id, check_text
from emage_agent.api import Agent, Session
from emage_agent.core.decisions import Decision
from emage_agent.core.errors import EmageError, UserError
from emage_agent.core.events import AgentEvent, DiffusionProgress
from emage_agent.engine import GpuQueue
from emage_agent.session import SessionStore, StepRecord

UI_DIR = ".ui"  # inside the sessions folder: Gradio's cache and the zips offered for download
THREAD_PREFIX = "emage-ui-"
RETRY_LINE = re.compile(r"^(gemini|openai)\b.*attempt (\d+).*failed \((.{0,80})\); retrying in ([\d.]+)s")


@dataclass
class Run:
    """One background run of one session, as the page sees it."""

    session_id: str
    halt: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    version: int = 0
    position: int | None = None  # jobs ahead in the GPU queue; 0 = on the GPU now; None = not waiting
    diffusion: tuple[int, int] | None = None
    last: str = "starting"
    error: str | None = None
    events: list[AgentEvent] = field(default_factory=list)
    preview: Image.Image | None = None  # the image forming, as the executor last previewed it
    previews: int = 0
    retry: str | None = None  # the VLM call being retried now, in words; cleared by the next event

    def on_event(self, event: AgentEvent) -> None:
        self.retry = None
        if isinstance(event.payload, DiffusionProgress):
            self.diffusion = (event.payload.step, event.payload.total)
            if event.preview is not None:
                with Image.open(io.BytesIO(event.preview)) as img:
                    self.preview = img.convert("RGB")
                self.previews += 1
        else:
            self.events.append(event)
            self.last = event.message
            if event.kind in ("score", "step"):
                self.diffusion = None
        self.version += 1

    def on_wait(self, ahead: int) -> None:
        self.position = ahead
        self.version += 1

    def on_retry(self, text: str) -> None:
        self.retry = text
        self.version += 1

    def status(self) -> str:
        """One line for the page: where the run is now."""
        if self.done.is_set():
            return f"failed: {self.error}" if self.error else f"finished: {self.last}"
        parts = []
        if self.position:
            parts.append(f"waiting for the GPU: {self.position} job(s) ahead in the queue")
        if self.diffusion:
            parts.append(f"diffusion step {self.diffusion[0]}/{self.diffusion[1]}")
        if self.retry:
            parts.append(self.retry)
        if self.halt.is_set():
            parts.append("stopping after this step")
        return " · ".join(parts + [self.last])


def _mtime(path: Path) -> float:
    """When an entry last changed; 0 for one that cannot be stat'ed (a dangling link, a vanished folder)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class RetryNotes(logging.Handler):
    """Turns the VLM clients' "retrying" log lines into a note on the run whose thread made the call.

    The clients log each retry (``vlm/gemini/client.py``, ``vlm/openai_compat/client.py``); the page shows
    it in the status area while it happens instead of an unchanged page. Installed by ``serve``.
    """

    def __init__(self, studio: Studio) -> None:
        super().__init__(logging.INFO)
        self.studio = studio

    def emit(self, record: logging.LogRecord) -> None:
        name = threading.current_thread().name
        if not name.startswith(THREAD_PREFIX):
            return
        run = self.studio.running(name.removeprefix(THREAD_PREFIX))
        match = RETRY_LINE.match(record.getMessage())
        if run is not None and match:
            who = "the judge" if match.group(1) == "gemini" else "the VLM server"
            run.on_retry(f"{who} did not answer ({match.group(3)}); retrying in {float(match.group(4)):.1f} s, "
                         f"attempt {int(match.group(2)) + 1}")  # fmt: skip

    def install(self, logger_name: str = "emage_agent.vlm") -> None:
        """Listen on ``logger_name`` (INFO, where retries are logged), replacing an earlier page's listener."""
        logger = logging.getLogger(logger_name)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        for old in [h for h in logger.handlers if isinstance(h, RetryNotes)]:
            logger.removeHandler(old)
        logger.addHandler(self)


class Studio:
    """Sessions under one folder, run on one GPU queue. Every name from the browser is checked here."""

    def __init__(self, agent: Agent, root: Path | str, gpu: GpuQueue | None = None) -> None:
        self.agent = agent
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        agent.root = self.root
        self._gpu = gpu
        self.runs: dict[str, Run] = {}
        self._lock = threading.Lock()

    @property
    def gpu(self) -> GpuQueue:
        """Built on first use, so the page comes up before the models load."""
        with self._lock:  # two first runs at once must not make two queues
            if self._gpu is None:
                self._gpu = GpuQueue(self.agent.executor)
            return self._gpu

    # ---- runs -------------------------------------------------------------------------
    def _agent_for(self, run: Run) -> Agent:
        return self.agent.derive(root=self.root, executor=self.gpu.lane(run.on_wait), on_event=run.on_event)

    def _launch(self, run: Run, session: Session, work: Callable[[Session], Any]) -> Run:
        with self._lock:
            current = self.runs.get(run.session_id)
            if current is not None and not current.done.is_set():
                session.store.close()
                raise UserError("this session is running already; wait for it or press Stop", field="session")
            self.runs[run.session_id] = run
        session.loop.halt = run.halt.is_set

        def body() -> None:
            try:
                work(session)
            except EmageError as exc:
                run.error = str(exc)
            except Exception as exc:  # shown on the page; the session stays resumable
                run.error = f"{exc.__class__.__name__}: {exc}"
            finally:
                run.position = None
                try:
                    session.write_report()
                finally:
                    session.store.close()
                    run.done.set()
                    run.version += 1

        threading.Thread(target=body, name=f"{THREAD_PREFIX}{run.session_id}", daemon=True).start()
        return run

    def start(self, prompt: str, options: dict[str, Any], start_image: Image.Image | None = None) -> Run:
        """A new session for ``prompt``, made (or, from an uploaded image, judged) and refined in the background."""
        text = check_text(prompt, "prompt")
        if self.agent.demo:  # ``ui --demo``: marked as such, planned by rules
            options = {**options, "demo": True, "planner": "selector"}
        run = Run("")  # named once the session exists; its events reach the run from the start
        session = self._agent_for(run).create(text, image=start_image, **options)  # a picture is an upload step
        run.session_id = session.id
        return self._launch(run, session, lambda s: s.run())

    def feedback(self, session_id: str, text: str, region: Image.Image | None = None) -> Run:
        """The person's words as a request: the session continues until a repair has answered them.

        ``region`` (white = may change), painted on the image, limits that repair to it: stored as a mask
        step of its own and set as the session's region for this run only.
        """
        words = check_text(text, "feedback")
        if self.running(session_id):
            raise UserError("this session is running already; wait for it or press Stop", field="session")
        run = Run(session_id)
        session = self._agent_for(run).open(check_session_id(session_id, self.root))
        if region is None:
            return self._launch(run, session, lambda s: s.refine(words))
        store = session.store
        current = store.current_image(store.head().step) if store.head() else None
        if current is None:
            session.close()
            raise UserError("the session has no image to paint on yet", field="mask")
        mask = region.convert("L").resize((current.width, current.height)).point(lambda v: 255 if v >= 128 else 0)
        if mask.getextrema()[1] == 0:
            session.close()
            raise UserError("the painted region is empty; paint over the part to change, or clear it", field="mask")
        before = store.info.options.get("region")
        record = StepRecord(
            kind="direct", tool="make_mask", decision=Decision(strategy="direct"), note="the region you painted"
        )
        step = store.commit_step(record, images={"mask": mask}, make_head=False)
        store.update_options({"region": f"s{step}-mask"})  # before the loop is built: it reads the options once

        def limited(s: Session) -> Any:
            try:
                return s.refine(words)
            finally:
                s.store.update_options({"region": before})

        return self._launch(run, session, limited)

    def resume(self, session_id: str, iterations: int | None = None) -> Run:
        run = Run(session_id)
        session = self._agent_for(run).open(check_session_id(session_id, self.root))
        return self._launch(run, session, lambda s: s.run(iterations))

    def stop(self, session_id: str) -> bool:
        run = self.runs.get(session_id)
        if run is None or run.done.is_set():
            return False
        run.halt.set()
        run.version += 1
        return True

    def running(self, session_id: str | None) -> Run | None:
        run = self.runs.get(session_id or "")
        return run if run is not None and not run.done.is_set() else None

    def wait(self, run: Run, seen: int, timeout: float = 0.25) -> int:
        """Block until ``run`` changed since version ``seen`` (or ``timeout``); the new version."""
        deadline = time.monotonic() + timeout
        while run.version == seen and not run.done.is_set() and time.monotonic() < deadline:
            time.sleep(0.03)
        return run.version

    # ---- moving and reading -----------------------------------------------------------
    def open_store(self, session_id: str) -> SessionStore:
        """A session's store, for reading; the caller closes it."""
        return SessionStore.open(check_session_id(session_id, self.root))

    def _idle_session(self, session_id: str) -> Session:
        if self.running(session_id):
            raise UserError("the session is running; press Stop first", field="session")
        return Session(self.agent, self.open_store(session_id))

    def revert(self, session_id: str, step: int) -> None:
        session = self._idle_session(session_id)
        try:
            session.revert(step)
        finally:
            session.store.close()

    def undo(self, session_id: str) -> None:
        session = self._idle_session(session_id)
        try:
            session.undo()
        finally:
            session.store.close()

    def sessions(self) -> list[dict[str, Any]]:
        """Every session in the folder, newest first: id, prompt, best score and image, status, date."""
        rows = []
        for folder in sorted(self.root.iterdir(), key=_mtime, reverse=True):
            if folder.name.startswith(".") or not (folder / "session.db").is_file():
                continue  # (a dangling link is no file either: one bad entry never empties the list)
            try:
                with SessionStore.open(folder) as store:
                    info, best = store.info, store.best()
                    art = store.current_image(best.step) if best and best.step else None
                    rows.append(
                        {
                            "id": info.id,
                            "prompt": info.original_prompt,
                            "score": best.score if best else None,
                            "image": str(store.dir / art.path) if art else None,
                            "status": "running" if self.running(info.id) else info.status,
                            "stopped_because": info.stopped_because,
                            "date": info.updated_at,
                        }
                    )
            except (EmageError, OSError, sqlite3.Error):
                continue  # a folder that is not a readable session is not offered
        return rows

    def zip_session(self, session_id: str) -> Path:
        """The whole session folder as one zip, written under the UI's own folder inside the sessions folder."""
        folder = check_session_id(session_id, self.root)
        out = self.root / UI_DIR / "downloads" / f"{folder.name}.zip"
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    zf.write(path, Path(folder.name) / path.relative_to(folder))
        return out
