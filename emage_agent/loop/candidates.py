"""``--candidates K``: more seeds of an image call, each evaluated, the best kept as the current image.

Every candidate is an ordinary committed step (so it is recorded, counted in the budgets and can be
reverted to); the view does not count the extra ones as iterations nor show them to the selector.

The GPU and the VLM work side by side: candidate k+1 is made while candidate k is judged, and the
judgements run in parallel threads (the VLM transport's rate limit, shared by every session of the
process, still paces them). Only the judge's request leaves the loop's thread: every store read and
write (commits, evaluations, rollbacks) happens here, in step order, one transaction per step. So K
candidates cost about K generations plus one judgement, not K of each.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from emage_agent.core.planning import ToolCall

if TYPE_CHECKING:
    from emage_agent.core.evaluation import Evaluation
    from emage_agent.loop.session_loop import SessionLoop

MAX_PARALLEL_JUDGES = 4  # in flight at once for one session; the transport's limiter paces them further
OVERLAP = True  # False: generate, judge, generate, judge (the benchmark's baseline)


def more_candidates(loop: SessionLoop, call: ToolCall, decision: dict[str, Any], base: int | None) -> None:
    """Judge the image call just run and, with ``--candidates K``, K-1 more seeds of it; keep the best.

    First images (``base`` None) follow one another, so the rollback of a worse one keeps the best; repair
    variants each start from ``base``. Every candidate is a committed step and counts in the budgets.
    """
    if loop.options.candidates <= 1:
        loop.evaluate_head()
        return
    first = loop.store.info.head_step
    tried = [first]
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_JUDGES, loop.options.candidates)) as judges:
        judging = [_judge(loop, judges)]
        if not OVERLAP:
            _settle_in_order(loop, judging)
            judging.clear()
        for index in range(1, loop.options.candidates):
            if base is not None:
                loop.store.revert(base)
            args = {k: v for k, v in call.args.items() if k != "seed"}
            if "seed" in call.args and call.name == "generate" and loop.options.seed is not None:
                args["seed"] = (loop.options.seed + index) % 2**32
            variant = call.model_copy(update={"args": args})
            report = loop.execute(variant, decision={**decision, "candidate": index}, vetoes=[])
            if not report.ok:
                break
            tried.append(loop.store.info.head_step)
            judging.append(_judge(loop, judges))
            if not OVERLAP:
                _settle_in_order(loop, judging)
                judging.clear()
        _settle_in_order(loop, judging)
    kept = [r for r in (loop.store.step(s) for s in set(tried) if s is not None) if r.score is not None]
    kept = [r for r in kept if not r.rolled_back]
    if kept:
        best = max(kept, key=lambda r: (r.score, -r.step))
        loop.store.revert(best.step)
        loop._emit("decision", f"kept candidate step {best.step} (score {best.score:.2f})", step=best.step)


Judged = tuple["Evaluation | None", "BaseException | None", list[dict[str, Any]]]


def _judge(loop: SessionLoop, judges: ThreadPoolExecutor) -> tuple[Any, Future[Judged]] | None:
    """Start judging the head image in the background; None when it needs no judging."""
    rec = loop.view.image_step()
    if rec is None or loop.view.current_evaluation() is not None:
        return None
    request = loop.judge_request(rec, [])

    def evaluate() -> Judged:
        # the call records go to the thread that made them: take them here, book them on the loop's thread
        try:
            return loop.evaluator.evaluate(*request), None, loop._usage()
        except BaseException as exc:  # noqa: BLE001 - handed to the loop's thread, raised there
            return None, exc, loop._usage()

    return rec, judges.submit(evaluate)


def _settle_in_order(loop: SessionLoop, judging: list[tuple[Any, Future[Judged]] | None]) -> None:
    """Record the judgements in step order on the loop's thread; the first failure is raised once the
    others are recorded."""
    failure: BaseException | None = None
    for item in judging:
        if item is None:
            continue
        rec, future = item
        evaluation, error, records = future.result()
        loop._record_usage(rec.step, records)
        if evaluation is None:
            failure = failure or error
            continue
        loop.settle(rec, [], evaluation)
    if failure is not None:
        raise failure
