"""What a person sees while a session runs, from its first second: where the session is, what runs now.

Lines say what happens next in plain words ("next: canny_edit ..."), each judgement's issues get one
compact line each, and every wait has a live clock: loading models (the first tool of a process loads
them), diffusion with it/s and ETA, "asking the judge ..." and "planning ...". Retries of a VLM call
(logged by the transports) appear as they happen. Every line printed is also logged
(``emage_agent.progress``), so the session's ``emage.log`` holds what the screen showed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from emage_agent.core.events import AgentEvent, RetryNote
from emage_agent.core.tools import registry
from emage_agent.session import IMAGE_TOOLS

STYLES = {
    "decision": "cyan",
    "next": "cyan",
    "veto": "yellow",
    "score": "green",
    "issue": "dim",
    "rollback": "magenta",
    "warning": "yellow",
    "retry": "yellow",
    "stopped": "bold",
    "step": "bold blue",
    "session": "dim",
}
MAX_ISSUES = 5  # issues shown per judgement (all are in the session)
RETRY_WORDS = ("retrying in", "trying ")  # how the VLM transports log a retry or a fallback model
record = logging.getLogger("emage_agent.progress")


def rate(task: Any) -> Text:
    """Diffusion speed as it/s (or s/it when slower than one a second)."""
    speed = task.speed
    if not speed:
        return Text("")
    return Text(f"{speed:.2f} it/s" if speed >= 1 else f"{1 / speed:.1f} s/it", style="progress.data.speed")


class RateColumn(TextColumn):
    def __init__(self) -> None:
        super().__init__("")

    def render(self, task: Any) -> Text:
        return rate(task)


class BarsOnly(ProgressColumn):
    """A column shown for bars (known total) and blank for a wait, which has only its spinner and clock."""

    def __init__(self, column: ProgressColumn) -> None:
        super().__init__()
        self.column = column

    def render(self, task: Any) -> Any:
        return Text("") if task.total is None else self.column.render(task)


class RetryLines(logging.Handler):
    """Shows the transports' retries as one plain line each, from the typed note on their log record."""

    def __init__(self, view: ProgressView) -> None:
        super().__init__(logging.INFO)
        self.view = view

    def emit(self, log_record: logging.LogRecord) -> None:
        if not log_record.name.startswith("emage_agent.vlm"):
            return
        note = getattr(log_record, "emage_retry", None)
        if isinstance(note, RetryNote):  # typed: "judge unreachable (503), retry 2/5 in 4.0 s"
            self.view.line("retry", note.words())
            return
        message = log_record.getMessage()
        if any(word in message for word in RETRY_WORDS):  # a fallback model ("trying gemini-...")
            self.view.line("retry", message)


class ProgressView:
    """Turns agent events into lines and live bars; silent when disabled (``--json``)."""

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarsOnly(BarColumn(bar_width=24)),
            BarsOnly(MofNCompleteColumn()),
            BarsOnly(TaskProgressColumn()),
            BarsOnly(RateColumn()),
            TimeElapsedColumn(),
            BarsOnly(TextColumn("eta")),
            BarsOnly(TimeRemainingColumn()),
            console=console,
            transient=True,
        )
        self._bar: int | None = None
        self._wait: int | None = None
        self._wait_started = 0.0
        self._iterations: int | None = None
        self._decision = ""
        self._tools_run = 0
        self._retries = RetryLines(self)

    def __enter__(self) -> ProgressView:
        if self.enabled:
            self._progress.start()
            logging.getLogger("emage_agent.vlm").addHandler(self._retries)
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.enabled:
            self._end_wait()
            logging.getLogger("emage_agent.vlm").removeHandler(self._retries)
            self._progress.stop()

    # ---- lines ----------------------------------------------------------------------------
    def line(self, kind: str, message: str) -> None:
        """One line above the bars (and in the log)."""
        record.info("%s %s", kind, message)
        if not self.enabled:
            return
        text = Text(f"{kind:>8}  ", style=STYLES.get(kind, ""))
        text.append(message)
        self._progress.console.print(text, soft_wrap=True)

    def session(self, path: Path, iterations: int | None = None, done: int = 0) -> None:
        """Announce the session (first, before any work) and show a bar of repair iterations."""
        self.line("session", str(path))
        if self.enabled and iterations and self._iterations is None:
            self._iterations = self._progress.add_task("iterations", total=iterations, completed=done)

    # ---- waits with a clock ---------------------------------------------------------------------
    def _start_wait(self, what: str) -> None:
        self._end_wait()
        if self.enabled:
            self._wait = self._progress.add_task(what, total=None)
        self._wait_started = time.monotonic()

    def _end_wait(self, done: str = "") -> None:
        if self._wait is not None:
            self._progress.remove_task(self._wait)
            self._wait = None
            if done:
                self.line("", f"{done} ({time.monotonic() - self._wait_started:.1f} s)")

    # ---- events ---------------------------------------------------------------------------------
    def handle(self, event: AgentEvent) -> None:
        kind, data = event.kind, event.data
        if kind == "diffusion":
            self._diffusion(int(data.get("step", 0)), int(data.get("total", 1)))
            return
        if kind == "wait":
            self._start_wait(event.message)
            return
        self._end_wait()
        if kind == "step":
            self._step(event)
        elif kind == "decision" and data.get("strategy") and data.get("ranked") is not None:
            self._decision = event.message  # shown with what actually runs next
        elif kind == "decision" and data.get("tool") and len(data) == 1:
            self._decision = f"the selector's choice; {self._decision}" if self._decision else "the selector's choice"
        elif kind == "score":
            self.line("score", event.message + (f": {data['summary']}" if data.get("summary") else ""))
            issues = data.get("issues") or []
            for issue in issues[:MAX_ISSUES]:
                where = f" ({issue['target']})" if issue.get("target") else ""
                self.line("issue", f"[{issue['category']} {issue['severity']:.1f}] {issue['description']}{where}")
            if len(issues) > MAX_ISSUES:
                self.line("issue", f"... and {len(issues) - MAX_ISSUES} more (in the report)")
        elif kind == "decision" and data.get("prompt"):
            self.line("rewrite", event.message)
        else:
            self.line(kind, event.message)

    def _step(self, event: AgentEvent) -> None:
        """A tool starts: say what runs next and why; the first one of a process loads its models."""
        tool = event.data.get("tool", "?")
        if self._bar is not None:
            self._progress.remove_task(self._bar)
            self._bar = None
        why = f"  ({self._decision})" if self._decision else ""
        self._decision = ""
        self.line("next", f"{tool}{why}")
        self._tools_run += 1
        needs_models = (known := registry().get(tool)) is None or known.family != "none"
        if self._tools_run == 1 and needs_models:  # the first GPU tool loads its models: say so
            self._start_wait(f"loading models and starting {tool} ...")
        if self._iterations is not None and tool in IMAGE_TOOLS and self._tools_run > 1:
            self._progress.advance(self._iterations)

    def _diffusion(self, step: int, total: int) -> None:
        if self._wait is not None:
            self._end_wait("models ready" if self._tools_run == 1 and step <= 1 else "")
        if not self.enabled:
            return
        if self._bar is None:
            self._bar = self._progress.add_task("diffusion", total=total)
        self._progress.update(self._bar, completed=step, total=total)
