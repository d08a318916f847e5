"""What a person sees while a session runs: decisions, scores and a diffusion progress bar."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from emage_agent.core.events import AgentEvent, DiffusionProgress, StepStarted
from emage_agent.session import IMAGE_TOOLS

STYLES = {
    "decision": "cyan",
    "veto": "yellow",
    "score": "green",
    "rollback": "magenta",
    "warning": "yellow",
    "stopped": "bold",
    "step": "bold blue",
}


class ProgressView:
    """Turns agent events into lines and a live bar; silent when disabled (``--json``)."""

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self.console = console
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task: int | None = None
        self._iterations: int | None = None

    def __enter__(self) -> ProgressView:
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.enabled:
            self._progress.stop()

    def session(self, path: Path, iterations: int | None = None, done: int = 0) -> None:
        """Announce the session and show a bar of repair iterations (the first image is iteration 0)."""
        if not self.enabled:
            return
        self._progress.console.print(Text(f"session: {path}", style="dim"))
        if iterations:
            self._iterations = self._progress.add_task("iterations", total=iterations, completed=done)

    def handle(self, event: AgentEvent) -> None:
        if not self.enabled:
            return
        payload = event.payload
        if isinstance(payload, DiffusionProgress):
            if self._task is None:
                self._task = self._progress.add_task("diffusion", total=payload.total)
            self._progress.update(self._task, completed=payload.step, total=payload.total)
            return
        if isinstance(payload, StepStarted) and self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        if isinstance(payload, StepStarted) and self._iterations is not None and payload.tool in IMAGE_TOOLS:
            self._progress.advance(self._iterations)
        line = Text(f"{event.kind:>8}  ", style=STYLES.get(event.kind, ""))
        line.append(event.message, style="")
        self._progress.console.print(line)
