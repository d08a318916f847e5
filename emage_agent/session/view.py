"""What a session's history means now: the current image, its evaluation, pending feedback, what was tried.

Everything here is derived from the store on demand, never cached, so a resumed session and a running
one see the same state.
"""

from __future__ import annotations

from PIL import Image

from emage_agent.core.errors import UserError
from emage_agent.core.evaluation import Evaluation
from emage_agent.core.planning import HistoryEntry
from emage_agent.core.tools import image_step_kinds
from emage_agent.session.store import SessionStore, StepRecord

IMAGE_TOOLS = image_step_kinds()  # steps whose image becomes the current one (from the tool registry)


class SessionView:
    """Read-only questions about a session, answered from its store."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    def line(self, since: int | None = None) -> list[StepRecord]:
        """Steps from the root (or after ``since``) to the head, skipping rolled-back ones."""
        line = [r for r in self.store.lineage() if not r.rolled_back]
        return [r for r in line if since is None or r.step > since]

    def image_step(self) -> StepRecord | None:
        """The step holding the current image: the latest on the line that made one."""
        for rec in reversed(self.line()):
            if rec.error is None and self.store.image_of(rec.step) is not None and rec.tool in IMAGE_TOOLS:
                return rec
        return None

    def current_image(self) -> Image.Image:
        rec = self.image_step()
        if rec is None:
            raise UserError("the session has no image yet", field="session")
        return self.store.load_image(self.store.image_of(rec.step).id)

    def current_evaluation(self) -> Evaluation | None:
        """The newest evaluation of the current image (a feedback step may hold a fresher one)."""
        rec = self.image_step()
        if rec is None:
            return None
        evaluated = [r for r in [rec, *self.line(rec.step)] if r.evaluation is not None]
        return evaluated[-1].evaluation if evaluated else None

    def pending_feedback(self, image_step: StepRecord) -> list[StepRecord]:
        """Feedback given since the current image was last evaluated."""
        pending: list[StepRecord] = []
        for rec in self.line(image_step.step):
            if rec.tool == "feedback":
                pending = [] if rec.evaluation is not None else [*pending, rec]
        return pending

    def recent_feedback(self) -> list[str]:
        """The user's words about the current image, shown to the planner verbatim."""
        rec = self.image_step()
        steps = self.line(rec.step) if rec else []
        return [r.feedback for r in steps if r.tool == "feedback" and r.feedback]

    def iterations_done(self) -> int:
        """Repair iterations run so far: image-producing steps after the first image."""
        steps = self.store.steps()
        images = [s for s in steps if s.tool in IMAGE_TOOLS and s.error is None and not s.is_extra_candidate]
        return max(0, len(images) - 1)

    def history(self) -> list[HistoryEntry]:
        """What was tried and what it scored, for the selector and the planner."""
        steps = self.store.steps()
        by_step = {s.step: s for s in steps}
        entries = []
        for s in steps:
            if s.tool in (None, "feedback") or s.is_extra_candidate:  # further candidates are search, not decisions
                continue
            entries.append(
                HistoryEntry(
                    step=s.step,
                    tool=s.tool,
                    args=s.args,
                    target=(s.decision.target if s.decision else None) or s.args.get("target"),
                    score_before=self.score_on_line(s.parent, by_step),
                    score_after=s.score if s.tool in IMAGE_TOOLS else None,
                    rolled_back=s.rolled_back,
                )
            )
        return entries

    def score_on_line(self, step: int | None, steps: dict[int, StepRecord] | None = None) -> float | None:
        """Score of the image that was current at ``step`` (what an edit started from).

        ``steps`` (all steps by number) saves a database read per ancestor when called in a loop.
        """
        while step is not None:
            rec = steps[step] if steps is not None else self.store.step(step)
            if rec.tool in IMAGE_TOOLS and rec.error is None and rec.score is not None and not rec.rolled_back:
                return rec.score
            step = rec.parent
        return None
