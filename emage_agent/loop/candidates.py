"""``--candidates K``: more seeds of an image call, each evaluated, the best kept as the current image.

Every candidate is an ordinary committed step (so it is recorded, counted in the budgets and can be
reverted to); the view does not count the extra ones as iterations nor show them to the selector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emage_agent.core.decisions import Decision
from emage_agent.core.events import Decided
from emage_agent.core.planning import ToolCall

if TYPE_CHECKING:
    from emage_agent.loop.session_loop import SessionLoop


def more_candidates(loop: SessionLoop, call: ToolCall, decision: Decision, base: int | None) -> None:
    """``--candidates K``: K-1 more seeds of the image call just run, each from the same start; best kept.

    First images (``base`` None) follow one another, so the rollback of a worse one keeps the best; repair
    variants each start from ``base``. Every candidate is a committed step and counts in the budgets.
    """
    first = loop.store.info.head_step
    tried = [first]
    for index in range(1, loop.options.candidates):
        if base is not None:
            loop.store.revert(base)
        args = {k: v for k, v in call.args.items() if k != "seed"}
        if "seed" in call.args and call.name == "generate" and loop.options.seed is not None:
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
            loop._emit(f"kept candidate step {best.step} (score {best.score:.2f})", Decided(step=best.step))
