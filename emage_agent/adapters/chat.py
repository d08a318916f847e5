"""``emage-agent chat``: refine one image over several turns, in a terminal.

Why a REPL on top of ``Session``: the automatic loop ends where a person's taste begins. Here the
person sees each step (score, issues, decision, image path) and answers in words; the words go
to ``Session.refine`` and become the weightiest issue of the next judgement. Every turn is a
committed step, so ``undo``/``revert`` only move the session's head and nothing is ever lost;
``summary.json`` is current after every command.

Input is read through ``input_fn`` and output written to a rich ``Console``, so tests script it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from emage_agent.core.errors import EmageError, ExecutionFailure

if TYPE_CHECKING:
    from emage_agent.api import Agent, Session
    from emage_agent.core.events import AgentEvent

COMMANDS = ("undo", "revert", "history", "more", "save", "help", "quit", "exit", "q", "?")
HELP = (
    "Type what is still wrong (for example: the fox should sit on the roof) and EMage repairs it.\n"
    "Commands: more [N] (let EMage repair on its own), undo, revert N, history, save, help, quit."
)
LIVE = {
    "score": "green",
    "decision": "cyan",
    "veto": "yellow",
    "rollback": "magenta",
    "stopped": "bold",
    "warning": "yellow",
    "step": "blue",
}


class Chat:
    """One conversation about one session. Each method is one command; bad input never ends it."""

    def __init__(self, session: Session, console: Console) -> None:
        self.session = session
        self.console = console

    # ---- what the person sees ----------------------------------------------------------
    def say(self, message: str, style: str = "") -> None:
        self.console.print(Text(message, style=style))

    def event(self, event: AgentEvent) -> None:
        """Live lines while the loop runs (diffusion steps are too many to print)."""
        if event.kind in LIVE:
            self.say(f"  {event.kind:>8}  {event.message}", LIVE[event.kind])

    def status(self) -> None:
        """The current image: its step, score, issues, what was decided, and where it is."""
        store, loop = self.session.store, self.session.loop
        head = store.head()
        if head is None:
            self.say("no steps yet")
            return
        art = store.current_image(head.step)
        image_step = store.step(art.step) if art else head
        score = "unscored" if image_step.score is None else f"{image_step.score:.2f}"
        best = store.best()
        best_text = f"best {best.score:.2f} at step {best.step}" if best and best.score is not None else "no best yet"
        self.say(f"step {image_step.step} ({image_step.tool}): score {score}; {best_text}", "bold")
        evaluation = loop.view.current_evaluation()
        if evaluation is not None:
            if evaluation.summary:
                self.say(f"  judge: {evaluation.summary}")
            for issue in sorted(evaluation.issues, key=lambda i: -i.severity):
                where = f" ({issue.target})" if issue.target else ""
                self.say(f"  - [{issue.category} {issue.severity:.1f}] {issue.description}{where}")
            if not evaluation.issues:
                self.say("  no issues found")
        decision = image_step.decision
        if decision is not None and decision.reason:
            self.say(f"  decided: {decision.strategy or '?'}: {decision.reason} -> {image_step.tool}")
        info = store.info
        if info.current_prompt != info.original_prompt:
            self.say(f"  prompt: {info.current_prompt}")
        self.say(f"  image: {store.dir / art.path if art else '(none)'}")

    # ---- commands ------------------------------------------------------------------------
    def feedback(self, text: str) -> None:
        self.session.refine(text)
        self.status()

    def more(self, arg: str) -> None:
        if arg and not (arg.isdigit() and 0 < int(arg) <= 20):
            raise ValueError("more takes a number of iterations from 1 to 20, e.g. `more 2`")
        self.session.run(iterations=int(arg) if arg else 1)
        self.status()

    def undo(self, arg: str) -> None:
        self.session.undo()
        self.say(f"undone; now at step {self.session.store.head().step}")
        self.status()

    def revert(self, arg: str) -> None:
        if not arg.isdigit():
            raise ValueError("revert needs a step number, e.g. `revert 2` (see `history`)")
        self.session.revert(int(arg))
        self.say(f"reverted to step {int(arg)}")
        self.status()

    def history(self, arg: str) -> None:
        store = self.session.store
        head, best = store.head(), store.best()
        table = Table("step", "tool", "score", "notes", show_edge=False, pad_edge=False)
        for rec in store.steps():
            notes = []
            if head and rec.step == head.step:
                notes.append("<- current")
            if best and rec.step == best.step:
                notes.append("best")
            if rec.rolled_back:
                notes.append("rolled back")
            if rec.feedback:
                notes.append(f"you: {rec.feedback}")
            if rec.error:
                notes.append(f"failed: {rec.error}")
            notes += [f"vetoed {v.tool}" for v in rec.vetoes]
            score = "" if rec.score is None else f"{rec.score:.2f}"
            table.add_row(str(rec.step), rec.tool or "-", score, "; ".join(notes))
        self.console.print(table)

    def save(self, arg: str) -> None:
        summary = self.session.summary()
        report = self.session.write_report()
        self.say(f"session: {summary['session_dir']}")
        self.say(f"best image: {summary['final_image']} (score {summary['satisfaction_score']})")
        self.say(f"summary: {Path(summary['session_dir']) / 'summary.json'} (kept up to date after every step)")
        self.say(f"report: {report}")

    # ---- dispatch --------------------------------------------------------------------------
    def handle(self, line: str) -> bool:
        """Run one input line; False when the conversation should end.

        A command word alone or with one argument is a command (``revert x`` is a bad one and says
        so); a sentence is feedback, even one that starts with a command word ("more red in the sky").
        """
        text = line.strip()
        tokens = text.removeprefix("/").split()
        if not tokens:
            return True
        word, rest = tokens[0].lower(), tokens[1:]
        if word in COMMANDS and len(rest) <= 1:
            arg = rest[0] if rest else ""
            if word in ("quit", "exit", "q", "help", "?", "history", "save", "undo") and arg:
                self.say(
                    f"{word} takes no argument" + ("; use `revert N` to go to step N" if word == "undo" else ""),
                    "yellow",
                )
                return True
            if word in ("quit", "exit", "q"):
                return False
            if word in ("help", "?"):
                self.say(HELP)
                return True
            actions: dict[str, Callable[[str], None]] = {
                "undo": self.undo,
                "revert": self.revert,
                "history": self.history,
                "more": self.more,
                "save": self.save,
            }
            self._guarded(lambda: actions[word](arg))
        elif text.startswith("/") or (len(tokens) == 1 and difflib.get_close_matches(word, COMMANDS, cutoff=0.75)):
            guess = difflib.get_close_matches(word, COMMANDS, n=1, cutoff=0.6)
            hint = f" (did you mean `{guess[0]}`?)" if guess else ""
            self.say(f"unknown command `{text}`{hint}; type help, or write a sentence to give feedback", "yellow")
        else:
            self._guarded(lambda: self.feedback(text))
        return True

    def _guarded(self, action: Callable[[], None]) -> None:
        """Run a command; a mistake or a failure is one line, and the conversation goes on."""
        try:
            action()
        except ValueError as exc:
            self.say(str(exc), "yellow")
        except ExecutionFailure as exc:
            self.say(f"failed: {exc} (the session is saved; try again with `more`, or `quit`)", "red")
        except EmageError as exc:
            self.say(f"error: {exc}", "yellow")
        except KeyboardInterrupt:
            self.say("interrupted; the session is saved up to the last finished step", "yellow")


def run_chat(
    agent: Agent,
    prompt: str | None,
    session_dir: Path | None,
    input_fn: Callable[[str], str] = input,
    console: Console | None = None,
    **options: Any,
) -> Session:
    """Start (``prompt``, with ``Agent.start`` options) or continue (``session_dir``) a session; converse until
    quit or end of input. Returns the session."""
    console = console or Console(highlight=False)
    previous = agent.on_event
    chat: Chat | None = None

    def on_event(event: AgentEvent) -> None:
        if previous is not None:
            previous(event)
        if chat is not None:
            chat.event(event)

    agent.on_event = on_event
    try:
        if session_dir is not None:
            session = agent.open(session_dir)
            if prompt:
                console.print(Text("continuing the session; the prompt argument is ignored", style="yellow"))
            if options:
                session.configure(**options)  # through the API: a size or seed is refused with the reason
        else:
            console.print(Text("making the first image ...", style="dim"))
            session = agent.start(prompt or "", **options)
        chat = Chat(session, console)
        chat.say(f"session: {session.dir}", "dim")
        chat.status()
        chat.say(HELP, "dim")
        while True:
            try:
                line = input_fn("you> ")
            except (EOFError, KeyboardInterrupt):
                console.print()
                break
            if not chat.handle(line):
                break
        summary = session.summary()
        chat.say(f"saved: {summary['session_dir']} (best image: {summary['final_image']})")
        return session
    finally:
        agent.on_event = previous
