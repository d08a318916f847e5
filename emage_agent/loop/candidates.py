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
from typing import Any, Protocol

from emage_agent.core.decisions import Decision
from emage_agent.core.evaluation import Evaluation
from emage_agent.core.options import RunOptions
from emage_agent.core.planning import ToolCall
from emage_agent.core.tools import first_image_tool
from emage_agent.session.records import StepRecord
from emage_agent.session.store import SessionStore
from emage_agent.session.view import SessionView
from emage_agent.vlm import Evaluates

MAX_PARALLEL_JUDGES = 4  # in flight at once for one session; the transport's limiter paces them further
OVERLAP = True  # False: generate, judge, generate, judge (the benchmark's baseline)


class CandidateRunner(Protocol):
    """What candidates need of the loop (a protocol, so this module does not import the loop)."""

    store: SessionStore
    options: RunOptions
    view: SessionView
    evaluator: Evaluates

    def execute(self, call: ToolCall, *, decision: Decision, kind: str = "tool") -> Any: ...

    def evaluate_head(self) -> Evaluation: ...

    def judge_request(self, rec: StepRecord, pending: list[StepRecord]) -> tuple[Any, ...]: ...

    def settle(self, rec: StepRecord, pending: list[StepRecord], evaluation: Evaluation) -> Evaluation: ...

    def take_usage(self) -> list[dict[str, Any]]: ...

    def record_usage(self, step: int | None, records: list[dict[str, Any]] | None = None) -> None: ...


def more_candidates(loop: CandidateRunner, call: ToolCall, decision: Decision, base: int | None) -> StepRecord | None:
    """Judge the image call just run and, with ``--candidates K``, K-1 more seeds of it; keep the best.

    First images (``base`` None) follow one another, so the rollback of a worse one keeps the best; repair
    variants each start from ``base``. Every candidate is a committed step and counts in the budgets.
    Returns the kept step when there was more than one candidate (the loop tells the displays).
    """
    if loop.options.candidates <= 1:
        loop.evaluate_head()
        return None
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
            if "seed" in call.args and call.name == first_image_tool() and loop.options.seed is not None:
                args["seed"] = (loop.options.seed + index) % 2**32
            variant = call.model_copy(update={"args": args})
            report = loop.execute(variant, decision=decision.model_copy(update={"candidate": index}), kind="candidate")
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
    if not kept:
        return None
    best = max(kept, key=lambda r: (r.score, -r.step))
    loop.store.revert(best.step)
    return best


Judged = tuple["Evaluation | None", "BaseException | None", list[dict[str, Any]]]


def _judge(loop: CandidateRunner, judges: ThreadPoolExecutor) -> tuple[Any, Future[Judged]] | None:
    """Start judging the head image in the background; None when it needs no judging."""
    rec = loop.view.image_step()
    if rec is None or loop.view.current_evaluation() is not None:
        return None
    request = loop.judge_request(rec, [])

    def evaluate() -> Judged:
        # the call records go to the thread that made them: take them here, book them on the loop's thread
        try:
            return loop.evaluator.evaluate(*request), None, loop.take_usage()
        except BaseException as exc:  # noqa: BLE001 - handed to the loop's thread, raised there
            return None, exc, loop.take_usage()

    return rec, judges.submit(evaluate)


def _settle_in_order(loop: CandidateRunner, judging: list[tuple[Any, Future[Judged]] | None]) -> None:
    """Record the judgements in step order on the loop's thread; the first failure is raised once the
    others are recorded."""
    failure: BaseException | None = None
    for item in judging:
        if item is None:
            continue
        rec, future = item
        evaluation, error, records = future.result()
        loop.record_usage(rec.step, records)
        if evaluation is None:
            failure = failure or error
            continue
        loop.settle(rec, [], evaluation)
    if failure is not None:
        raise failure
