"""The loop: evaluate -> stop? -> recommend -> plan -> veto -> execute -> record.

A plain ``while``. The loop sees its collaborators only through the small protocols
in ``ports``, so the VLM planner, the selector-only mode and tests plug in the same way.
Every step is committed to the session store before the next begins; the best image is
never lost, and a regression is rolled back so the next edit starts from the best image.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from PIL import Image

from emage_agent import strategy
from emage_agent.core import events as ev
from emage_agent.core.decisions import Clamp, Decision, StepKind, Veto
from emage_agent.core.detection import Detection
from emage_agent.core.errors import ExecutionFailure, ModelMistake, UserError
from emage_agent.core.evaluation import Evaluation
from emage_agent.core.options import RunOptions
from emage_agent.core.planning import Recommendation, ToolCall, ToolReport
from emage_agent.core.ports import RunsTools, StepWatcher, png_bytes
from emage_agent.core.redact import scrub
from emage_agent.core.tools import (
    UPLOAD,
    first_image_tool,
    get_tool,
    mask_tool,
)
from emage_agent.loop.candidates import more_candidates
from emage_agent.loop.checking import DetectorCheck
from emage_agent.loop.deciding import Deciding
from emage_agent.loop.feedback import as_request, with_request
from emage_agent.session import IMAGE_TOOLS, SessionStore, SessionView, StepRecord
from emage_agent.vlm import Evaluates, Plans, Rewrites

log = logging.getLogger(__name__)


class SessionLoop(Deciding):
    """Runs one stored session. Holds no state the store does not also hold, so it can resume."""

    def __init__(
        self,
        store: SessionStore,
        *,
        tools: RunsTools,
        evaluator: Evaluates,
        rewriter: Rewrites,
        planner: Plans | None,
        config: strategy.SelectorConfig,
        usage: Callable[[], list[dict[str, Any]]] = list,
        emit: Callable[[ev.AgentEvent], None] | None = None,
        detector: Callable[[Image.Image, list[str]], list[Detection]] | None = None,
        detector_confidence: float = 0.3,
    ) -> None:
        self.store = store
        self.view = SessionView(store)
        self.tools = tools
        self.evaluator = evaluator
        self.rewriter = rewriter
        self.planner = planner
        self.config = config
        self._usage = usage
        self._emit_fn = emit
        self._diffusion: dict[str, int] = {}  # the last diffusion step reported, for the preview after it
        self.options = RunOptions(**store.info.options)
        self.halt: Callable[[], bool] = lambda: False  # asked between steps; True ends the run, resumable
        self.detector_check = (
            None
            if detector is None
            else DetectorCheck(store, evaluator, detector, detector_confidence, self._emit, self.record_usage)
        )

    # ---- small helpers -------------------------------------------------------------
    def _emit(self, message: str, payload: ev.EventPayload) -> None:
        if self._emit_fn is not None:
            clean = type(payload).model_validate(scrub(payload.model_dump(mode="json")))
            self._emit_fn(ev.AgentEvent(message=scrub(message), payload=clean))

    def budget(self) -> strategy.BudgetState:
        info = self.store.info
        return strategy.BudgetState(
            iteration=self.view.iterations_done(),
            max_iterations=self.options.iterations,
            vlm_calls=info.vlm_calls,
            max_vlm_calls=self.options.max_vlm_calls,
            gpu_seconds=info.gpu_seconds,
            max_gpu_seconds=self.options.max_gpu_seconds,
        )

    def take_usage(self) -> list[dict[str, Any]]:
        """The VLM call records made on this thread since the last take (candidates judge in worker threads)."""
        return self._usage()

    def record_usage(self, step: int | None, records: list[dict[str, Any]] | None = None) -> None:
        """Book the VLM calls this thread made (or ``records``, taken in another thread) on ``step``."""
        records = self._usage() if records is None else records
        if records:
            self.store.record_calls(step, records)
            self.store.add_usage(vlm_calls=len(records))

    # ---- evaluation ----------------------------------------------------------------
    def evaluate_head(self) -> Evaluation:
        """Evaluate the current image when it (or new feedback) has not been judged; roll back a regression."""
        rec = self.view.image_step()
        if rec is None:
            raise UserError("the session has no image to evaluate", field="session")
        pending = self.view.pending_feedback(rec)
        current = self.view.current_evaluation()
        if current is not None and not pending:
            return current
        request = self.judge_request(rec, pending)
        self._emit("asking the judge ...", ev.Waiting(role="judge", step=rec.step))
        try:
            evaluation = self.evaluator.evaluate(*request)
        finally:
            self.record_usage(rec.step)
        return self.settle(rec, pending, evaluation)

    def judge_request(self, rec: StepRecord, pending: list[StepRecord]) -> tuple[bytes, str, str | None, Any]:
        """The evaluator's arguments for ``rec``'s image (read here, on the store's thread)."""
        image = self.store.load_image(self.store.image_of(rec.step).id)
        info = self.store.info
        prompt = rec.prompt or info.current_prompt
        original = info.original_prompt if prompt != info.original_prompt else None
        feedback = [f.feedback for f in pending if f.feedback]
        return png_bytes(image), prompt, original, feedback or None

    def settle(self, rec: StepRecord, pending: list[StepRecord], evaluation: Evaluation) -> Evaluation:
        """Record ``rec``'s evaluation (after the detector's check) and roll back a regression."""
        if self.detector_check is not None:
            image = self.store.load_image(self.store.image_of(rec.step).id)
            evaluation = self.detector_check(image, evaluation)
        target = pending[-1].step if pending else rec.step
        self.store.attach_evaluation(target, evaluation)
        score = evaluation.satisfaction_score
        issues = [i.model_dump(include={"category", "severity", "description", "target"}) for i in evaluation.issues]
        self._emit(  # numbered like the history: the step the evaluation is stored with
            f"step {target}: score {score:.2f}",
            ev.Scored(step=target or 0, score=score, summary=evaluation.summary, issues=issues),
        )
        before = self.view.score_on_line(rec.parent)
        requested = bool(rec.decision and rec.decision.request)  # the person asked for it; they may undo it
        if not pending and not requested and rec.tool in IMAGE_TOOLS and before is not None and score < before:
            self.store.mark_rolled_back(rec.step)
            self.store.revert(rec.parent)
            self._emit(
                f"step {rec.step} lowered the score ({before:.2f} -> {score:.2f}); continuing from the best image",
                ev.RolledBack(step=rec.step or 0),
            )
            return self.view.current_evaluation() or evaluation
        return evaluation

    # ---- one iteration -------------------------------------------------------------
    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """The session's writer lock and its status: "running" inside, never left so when anything escapes.

        Why one guard for the start and the loop: a first evaluation that fails for good used to leave a
        session "running" forever. A failure to write the final status (disk full) never hides the error
        that is already on its way out.
        """
        with self.store.writing():
            self.store.set_status("running")
            try:
                yield
            except Exception as exc:
                self._final_status("failed", f"failure: {exc}")
                raise
            except BaseException:
                self._final_status("interrupted", "interrupted")
                raise

    def _final_status(self, status: Any, reason: str) -> None:
        try:
            self.store.set_status(status, stopped_because=reason)
        except Exception as exc:  # noqa: BLE001 - the error in flight matters more than this record
            log.warning("could not record the session's %s status: %r", status, exc)

    def start(self) -> None:
        """First image of a new session: generate with the user's prompt and evaluate it."""
        with self.running():
            self._first_image()

    def _first_image(self) -> None:
        args = self.options.generate_args(self.store.info.original_prompt)
        call = ToolCall(name=first_image_tool(), args=args)
        report = self.execute(call, decision=Decision(strategy="initial"), kind="initial")
        if not report.ok:
            raise UserError(report.summary.removeprefix("error: "), field=call.name)
        self._candidates(call, Decision(strategy="initial"), base=None)

    def _candidates(self, call: ToolCall, decision: Decision, base: int | None) -> None:
        best = more_candidates(self, call, decision, base=base)
        if best is not None and self.options.candidates > 1:
            self._emit(f"kept candidate step {best.step} (score {best.score:.2f})", ev.Decided(step=best.step))

    def start_from(self, image: Image.Image, region: Image.Image | None = None, note: str = "") -> None:
        """First image of a session from the user's own picture (and region mask): recorded, then evaluated."""
        self.record_upload(image, region, note)
        self.evaluate_head()

    def record_upload(self, image: Image.Image, region: Image.Image | None = None, note: str = "") -> None:
        """The user's picture (and region mask) as the session's first step, an ``upload``; judged when it runs."""
        images = {"image": image} | ({"mask": region} if region is not None else {})
        record = StepRecord(
            kind="upload",
            tool=UPLOAD,
            args={"width": image.width, "height": image.height},
            decision=Decision(strategy="initial"),
        )
        step = self.store.commit_step(record.model_copy(update={"note": note or "the user's picture"}), images=images)
        if region is not None:
            self.options = self.options.model_copy(update={"region": f"s{step}-mask"})
            self.store.update_options({"region": self.options.region})
        if note:
            self._emit(note, ev.Warned(step=step))

    def run(self, iterations: int | None = None) -> dict[str, Any]:
        """Loop until a stop condition; returns the session summary."""
        with self.running():
            self.options = RunOptions(**self.store.info.options)  # another writer may have changed them since
            if iterations is not None:
                self.options = self.options.model_copy(update={"iterations": self.view.iterations_done() + iterations})
                self.store.update_options({"iterations": self.options.iterations})
            if self.view.image_step() is None:
                self._first_image()
            while True:
                evaluation = self.evaluate_head()
                stop = strategy.should_stop(
                    evaluation.satisfaction_score, self.view.history(), self._config(), self.budget()
                )
                self._note_threshold(stop)
                if self.halt():
                    self.store.set_status("interrupted", stopped_because="stopped")
                    self._emit("stopped on request after the last finished step", ev.Stopped(reason="stopped"))
                    break
                requests = self.open_requests()
                # A request overrides a satisfied judge or a plateau, never a budget.
                if requests and stop.reason in ("threshold", "adaptive_threshold", "plateau"):
                    stop = strategy.should_stop(0.0, self.view.history(), self._config(), self.budget())
                    stop = (
                        stop if stop.reason not in ("plateau", "continue") else stop.model_copy(update={"stop": False})
                    )
                if stop.stop:
                    self.store.set_status("done", stopped_because=stop.reason)
                    self._emit(f"stopped: {stop.detail}", ev.Stopped(reason=stop.reason))
                    break
                if not self.iterate(evaluation, requests):
                    self.store.set_status("done", stopped_because="threshold")
                    break
        return self.store.summary()

    def _note_threshold(self, stop: strategy.StopDecision) -> None:
        """An adaptive session records the bar in force after each judged step, so every adjustment shows."""
        if not self.options.adaptive_threshold or stop.threshold is None:
            return
        line = [s.decision.threshold for s in self.store.lineage() if s.decision and s.decision.threshold is not None]
        before = line[-1] if line else self.options.threshold
        rec = self.view.image_step()
        if rec is None or abs(stop.threshold - before) < 1e-9:
            return
        self.store.note_decision(rec.step, threshold=stop.threshold, threshold_before=before)
        self._emit(
            f"scores plateaued: threshold {before:.2f} -> {stop.threshold:.2f}",
            ev.Decided(threshold=stop.threshold, step=rec.step),
        )

    def _config(self) -> strategy.SelectorConfig:
        adaptive = {
            k: v
            for k, v in (("adaptive_floor", self.options.adaptive_floor), ("adaptive_step", self.options.adaptive_step))
            if v is not None
        }
        return self.config.model_copy(
            update={
                "threshold": self.options.threshold,
                "max_iterations": self.options.iterations,
                "max_vlm_calls": self.options.max_vlm_calls,
                "max_gpu_seconds": self.options.max_gpu_seconds,
                "adaptive_threshold": self.options.adaptive_threshold,
                **adaptive,
            }
        )

    def open_requests(self) -> list[str]:
        """The person's words about the current image that no repair has answered yet.

        Feedback is a request, not a hint: while one is open the loop does not stop at the threshold
        (or a plateau), so a satisfied judge cannot end the turn without a new image.
        """
        return self.view.recent_feedback()

    def iterate(self, evaluation: Evaluation, requests: list[str] | None = None) -> bool:
        """One decide-execute-evaluate round; False when the selector says there is nothing to do.

        ``requests`` (open feedback) make the round a repair even when the judge is satisfied.
        """
        config = self._config()
        history = self.view.history()
        prompt = self.store.info.current_prompt
        requests = requests or []
        weighed = as_request(evaluation, requests, self.options.threshold) if requests else evaluation
        rec = strategy.recommend(weighed, history, config, self.view.iterations_done(), prompt)
        if rec.strategy == "stop" or not rec.ranked:
            return False
        if requests:
            self._emit(f"repairing at your request: {'; '.join(requests)}", ev.Decided(requests=requests))
        self._emit(f"{rec.strategy}: {rec.reason}", ev.Decided(strategy=rec.strategy, ranked=rec.ranked))
        calls, vetoes = self.decide(rec, weighed, history)
        if requests:
            calls = [(with_request(call, requests, prompt), clamps) for call, clamps in calls]
        decision = Decision.of(rec, requests)
        reports: list[ToolReport] = []
        produced_image = False
        for call, clamps in calls:
            base = self.store.info.head_step
            report = self.execute(call, decision=decision, vetoes=vetoes, clamps=clamps)
            vetoes = []
            reports.append(report)
            if not report.ok:
                break
            if call.name in IMAGE_TOOLS:
                produced_image = True
                self._candidates(call, decision, base=base)
        if not produced_image and reports and reports[-1].ok and get_tool(calls[-1][0].name).rewrites_prompt:
            follow = self._follow_up(rec)
            reports.append(self.execute(follow, decision=decision, kind="follow_up"))
            self.evaluate_head()
        if self.planner is not None and reports:
            self.planner.report(reports)
        return True

    def _follow_up(self, rec: Recommendation) -> ToolCall:
        """After a rewrite, the image must follow the new prompt: regenerate or edit with it."""
        prompt = self.store.info.current_prompt
        if rec.strategy == "hybrid":
            for choice in rec.ranked:
                if get_tool(choice.tool).takes_strength:  # an edit that keeps the layout, with the new prompt
                    return ToolCall(name=choice.tool, args={**choice.args, "prompt": prompt})
        args = self.options.generate_args(prompt)
        args.pop("seed", None)
        return ToolCall(name=first_image_tool(), args=args)

    # ---- executing -----------------------------------------------------------------
    def execute(
        self,
        call: ToolCall,
        *,
        decision: Decision,
        vetoes: list[Veto] | None = None,
        clamps: list[Clamp] | None = None,
        kind: StepKind = "tool",
    ) -> ToolReport:
        """Run one accepted call and commit it as a step of ``kind``; model mistakes go back as failed reports."""
        info = self.store.info
        self._emit(f"running {call.name}", ev.StepStarted(tool=call.name, args=call.args))
        started = time.perf_counter()
        if call.target:
            decision = decision.model_copy(update={"target": call.target})
        record = StepRecord(
            kind=kind,
            tool=call.name,
            args=call.args,
            prompt=info.current_prompt,
            decision=decision,
            vetoes=vetoes or [],
            clamps=clamps or [],
        )
        try:
            if get_tool(call.name).rewrites_prompt:
                return self._rewrite(call, record)
            images = self._inputs(call)
            out = self.tools.run(call.name, call.args, images, on_step=StepWatcher(self._on_step, self._on_preview))
        except (ModelMistake, UserError) as exc:
            record = record.model_copy(update={"error": str(exc)})
            step = self.store.commit_step(record, make_head=False)
            self._emit(f"{call.name} failed: {exc}", ev.Warned(step=step))
            if getattr(exc, "field", None) == "EMAGE_KONTEXT_MODEL":
                self.config = self.config.model_copy(update={"edit_tool": False})  # no Kontext: not again
            return ToolReport(call=call, ok=False, summary=f"error: {exc}")
        except ExecutionFailure as exc:
            self.store.commit_step(record.model_copy(update={"error": str(exc)}), make_head=False)
            raise
        args = dict(call.args)
        if out.seed is not None:
            args["seed"] = out.seed
        if call.name == first_image_tool():
            self.store.set_prompt(args["prompt"])
        new_images = {role: img for role in ("image", "mask", "control") if (img := getattr(out, role)) is not None}
        record = record.model_copy(
            update={
                "args": args,
                "prompt": args.get("prompt", info.current_prompt),
                "note": out.note,
                "timings": {"tool_s": round(out.seconds, 3), "wall_s": round(time.perf_counter() - started, 3)},
            }
        )
        step = self.store.commit_step(record, images=new_images)
        self.store.add_usage(gpu_seconds=out.seconds)
        role = "image" if "image" in new_images else "mask"
        artifact = f"s{step}-{role}"
        summary = out.note or f"{call.name} done in {out.seconds:.1f}s"
        if out.coverage is not None:
            summary += f"; mask covers {out.coverage:.0%} of the image"
        return ToolReport(
            call=call,
            ok=True,
            summary=summary,
            artifact_id=artifact,
            image_png=png_bytes(new_images[role]) if role in new_images else None,
        )

    def _rewrite(self, call: ToolCall, record: StepRecord) -> ToolReport:
        info = self.store.info
        evaluation = self.view.current_evaluation()
        issues = evaluation.issues if evaluation else []
        result = self.rewriter.rewrite(info.current_prompt, info.original_prompt, issues, call.args.get("focus"))
        self.record_usage(info.head_step)
        self.store.set_prompt(result.prompt)
        record = record.model_copy(update={"prompt": result.prompt, "note": f"{result.source}: {result.rationale}"})
        self.store.commit_step(record)
        self._emit(f"prompt rewritten ({result.source}): {result.prompt}", ev.Decided(prompt=result.prompt))
        return ToolReport(call=call, ok=True, summary=f"new prompt: {result.prompt} ({result.rationale})")

    def _inputs(self, call: ToolCall) -> dict[str, Image.Image]:
        images: dict[str, Image.Image] = {}
        traits = get_tool(call.name)
        if traits.reads_image:
            ref = call.args.get("image", "current")
            images["image"] = self.view.current_image() if ref == "current" else self.store.load_image(ref)
        if self.options.region and call.name in IMAGE_TOOLS:  # the user's region: the rest is pasted back
            images["region"] = self.store.load_image(self.options.region)
            images.setdefault("image", self.view.current_image())
        if traits.needs_mask:
            ref = call.args.get("mask", "latest")
            if ref == "latest":
                latest = self.store.latest("mask")
                if latest is None:
                    raise ModelMistake(f"{call.name} needs a mask: call {mask_tool()} first")
                ref = latest.id
            images["mask"] = self.store.load_image(ref)
        return images

    def _on_step(self, step: int, total: int) -> None:
        self._diffusion = {"step": step, "total": total}
        self._emit(f"diffusion step {step}/{total}", ev.DiffusionProgress(step=step, total=total))

    def _on_preview(self, png: bytes) -> None:
        """The image forming, as the executor previewed it after the step just reported (PNG, not JSON)."""
        if self._emit_fn is not None:
            progress = ev.DiffusionProgress(**(self._diffusion or {"step": 0, "total": 0}))
            self._emit_fn(ev.AgentEvent(message="preview", payload=progress, preview=png))

    # ---- conversation --------------------------------------------------------------
    def add_feedback(self, text: str) -> int:
        """User feedback: a step of its own, judged with the current image at the highest weight."""
        text = text.strip()
        if not text:
            raise UserError("feedback is empty", field="feedback")
        record = StepRecord(kind="feedback", tool="feedback", prompt=self.store.info.current_prompt, feedback=text)
        return self.store.commit_step(record)
