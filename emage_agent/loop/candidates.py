"""``--candidates K``: more seeds of an image call, each evaluated, the best kept as the current image.

Every candidate is an ordinary committed step (so it is recorded, counted in the budgets and can be
reverted to); the view does not count the extra ones as iterations nor show them to the selector.
"""

from __future__ import annotations

from typing import Any, Protocol

from emage_agent.core.decisions import Decision
from emage_agent.core.evaluation import Evaluation
from emage_agent.core.options import RunOptions
from emage_agent.core.planning import ToolCall
from emage_agent.core.tools import first_image_tool
from emage_agent.session.records import StepRecord
from emage_agent.session.store import SessionStore


class CandidateRunner(Protocol):
    """What candidates need of the loop (a protocol, so this module does not import the loop)."""

    store: SessionStore
    options: RunOptions

    def execute(self, call: ToolCall, *, decision: Decision, kind: str = "tool") -> Any: ...

    def evaluate_head(self) -> Evaluation: ...


def more_candidates(loop: CandidateRunner, call: ToolCall, decision: Decision, base: int | None) -> StepRecord | None:
    """``--candidates K``: K-1 more seeds of the image call just run, each from the same start; best kept.

    First images (``base`` None) follow one another, so the rollback of a worse one keeps the best; repair
    variants each start from ``base``. Every candidate is a committed step and counts in the budgets.
    Returns the kept step when there was more than one candidate (the loop tells the displays).
    """
    first = loop.store.info.head_step
    tried = [first]
    for index in range(1, loop.options.candidates):
        if base is not None:
            loop.store.revert(base)
        args = {k: v for k, v in call.args.items() if k != "seed"}
        if "seed" in call.args and call.name == first_image_tool() and loop.options.seed is not None:
            args["seed"] = (loop.options.seed + index) % 2**32
        variant = call.model_copy(update={"args": args})
        report = loop.execute(variant, decision=decision.model_copy(update={"candidate": index}), kind="candidate")
        if not report.ok:
            break
        loop.evaluate_head()
        tried.append(loop.store.info.head_step)
    if len(tried) > 1:
        kept = [r for r in (loop.store.step(s) for s in set(tried) if s is not None) if r.score is not None]
        kept = [r for r in kept if not r.rolled_back]
        if kept:
            best = max(kept, key=lambda r: (r.score, -r.step))
            loop.store.revert(best.step)
            return best
    return None
