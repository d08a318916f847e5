"""The loop: evaluate -> stop? -> recommend -> plan -> veto -> execute -> record.

A plain ``while``. The loop sees its collaborators only through the small protocols
in ``ports``, so the Gemini planner, the selector-only mode and tests plug in the same way.
Every step is committed to the session store before the next begins; the best image is
never lost, and a regression is rolled back so the next edit starts from the best image.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PIL import Image

from emage_agent import strategy
from emage_agent.candidates import more_candidates
from emage_agent.checking import DetectorCheck
from emage_agent.contracts import TOOL_NAMES
from emage_agent.errors import ExecutionFailure, ModelMistake, UserError
from emage_agent.evaluation import Evaluation
from emage_agent.options import AgentEvent, RunOptions
from emage_agent.planning import HistoryEntry, PlanningContext, PlanResult, Recommendation, ToolCall, ToolReport
from emage_agent.ports import RunsTools, png_bytes
from emage_agent.session import IMAGE_TOOLS, SessionStore, SessionView, StepRecord
from emage_agent.verification import Detection
from emage_agent.vlm import Evaluates, Plans, Rewrites

MAX_CALLS_PER_TURN = 3
EDIT_TOOLS = ("canny_edit", "depth_edit", "inpaint", "edit")  # tools that change the current image


class SessionLoop:
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
        emit: Callable[[AgentEvent], None] | None = None,
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
        self.options = RunOptions(**store.info.options)
        self.detector_check = (
            None
            if detector is None
            else DetectorCheck(store, evaluator, detector, detector_confidence, self._emit, self._record_usage)
        )

    # ---- small helpers -------------------------------------------------------------
    def _emit(self, kind: str, message: str, **data: Any) -> None:
        if self._emit_fn is not None:
            self._emit_fn(AgentEvent(kind=kind, message=message, data=data))  # type: ignore[arg-type]

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

    def _record_usage(self, step: int | None) -> None:
        records = self._usage()
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
        image = self.store.load_image(self.store.image_of(rec.step).id)
        info = self.store.info
        prompt = rec.prompt or info.current_prompt
        original = info.original_prompt if prompt != info.original_prompt else None
        feedback = [f.feedback for f in pending if f.feedback]
        try:
            evaluation = self.evaluator.evaluate(png_bytes(image), prompt, original, feedback or None)
        finally:
            self._record_usage(rec.step)
        if self.detector_check is not None:
            evaluation = self.detector_check(image, evaluation)
        target = pending[-1].step if pending else rec.step
        self.store.attach_evaluation(target, evaluation)
        score = evaluation.satisfaction_score
        self._emit(
            "score", f"step {rec.step}: score {score:.2f}", step=rec.step, score=score, summary=evaluation.summary
        )
        before = self.view.score_on_line(rec.parent)
        if not pending and rec.tool in IMAGE_TOOLS and before is not None and score < before:
            self.store.mark_rolled_back(rec.step)
            self.store.revert(rec.parent)
            self._emit(
                "rollback",
                f"step {rec.step} lowered the score ({before:.2f} -> {score:.2f}); continuing from the best image",
                step=rec.step,
            )
            return self.view.current_evaluation() or evaluation
        return evaluation

    # ---- one iteration -------------------------------------------------------------
    def start(self) -> None:
        """First image of a new session: generate with the user's prompt and evaluate it."""
        args = self.options.generate_args(self.store.info.original_prompt)
        call = ToolCall(name="generate", args=args)
        report = self.execute(call, decision={"strategy": "initial"}, vetoes=[])
        if not report.ok:
            raise UserError(report.summary.removeprefix("error: "), field="generate")
        self.evaluate_head()
        more_candidates(self, call, {"strategy": "initial"}, base=None)

    def start_from(self, image: Image.Image, region: Image.Image | None = None, note: str = "") -> None:
        """First image of a session from the user's own picture (and region mask): recorded, then evaluated."""
        images = {"image": image} | ({"mask": region} if region is not None else {})
        record = StepRecord(
            tool="upload", args={"width": image.width, "height": image.height}, decision={"strategy": "initial"}
        )
        step = self.store.commit_step(record.model_copy(update={"note": note or "the user's picture"}), images=images)
        if region is not None:
            self.options = self.options.model_copy(update={"region": f"s{step}-mask"})
            self.store.update_options({"region": self.options.region})
        if note:
            self._emit("warning", note, step=step)
        self.evaluate_head()

    def run(self, iterations: int | None = None) -> dict[str, Any]:
        """Loop until a stop condition; returns the session summary."""
        if iterations is not None:
            self.options = self.options.model_copy(update={"iterations": self.view.iterations_done() + iterations})
            self.store.update_options({"iterations": self.options.iterations})
        self.store.set_status("running")
        try:
            if self.view.image_step() is None:
                self.start()
            while True:
                evaluation = self.evaluate_head()
                stop = strategy.should_stop(
                    evaluation.satisfaction_score, self.view.history(), self._config(), self.budget()
                )
                if stop.stop:
                    self.store.set_status("done", stopped_because=stop.reason)
                    self._emit("stopped", f"stopped: {stop.detail}", reason=stop.reason)
                    break
                if not self.iterate(evaluation):
                    self.store.set_status("done", stopped_because="threshold")
                    break
        except ExecutionFailure as exc:
            self.store.set_status("failed", stopped_because=f"failure: {exc}")
            raise
        except BaseException:
            self.store.set_status("interrupted", stopped_because="interrupted")
            raise
        return self.store.summary()

    def _config(self) -> strategy.SelectorConfig:
        return self.config.model_copy(
            update={
                "threshold": self.options.threshold,
                "max_iterations": self.options.iterations,
                "max_vlm_calls": self.options.max_vlm_calls,
                "max_gpu_seconds": self.options.max_gpu_seconds,
            }
        )

    def iterate(self, evaluation: Evaluation) -> bool:
        """One decide-execute-evaluate round; False when the selector says there is nothing to do."""
        config = self._config()
        history = self.view.history()
        prompt = self.store.info.current_prompt
        rec = strategy.recommend(evaluation, history, config, self.view.iterations_done(), prompt)
        if rec.strategy == "stop" or not rec.ranked:
            return False
        self._emit(
            "decision",
            f"{rec.strategy}: {rec.reason}",
            strategy=rec.strategy,
            ranked=[c.model_dump() for c in rec.ranked],
        )
        calls, vetoes = self.decide(rec, evaluation, history)
        decision = {
            "strategy": rec.strategy,
            "reason": rec.reason,
            "prompt_side": rec.prompt_side,
            "image_side": rec.image_side,
            "ranked": [c.model_dump() for c in rec.ranked],
        }
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
                self.evaluate_head()
                more_candidates(self, call, decision, base=base)
        if not produced_image and reports and reports[-1].ok and calls[-1][0].name == "rewrite_prompt":
            follow = self._follow_up(rec)
            reports.append(self.execute(follow, decision=decision, vetoes=[]))
            self.evaluate_head()
        if self.planner is not None and reports:
            self.planner.report(reports)
        return True

    def _follow_up(self, rec: Recommendation) -> ToolCall:
        """After a rewrite, the image must follow the new prompt: regenerate or edit with it."""
        prompt = self.store.info.current_prompt
        if rec.strategy == "hybrid":
            for choice in rec.ranked:
                if choice.tool in ("canny_edit", "depth_edit"):
                    return ToolCall(name=choice.tool, args={**choice.args, "prompt": prompt})
        args = self.options.generate_args(prompt)
        args.pop("seed", None)
        return ToolCall(name="generate", args=args)

    # ---- deciding ------------------------------------------------------------------
    def decide(
        self, rec: Recommendation, evaluation: Evaluation, history: list[HistoryEntry]
    ) -> tuple[list[tuple[ToolCall, list[str]]], list[dict[str, str]]]:
        """Planner proposals that pass the selector; after a second veto, the selector's own choice."""
        vetoes: list[dict[str, str]] = []
        budget = self.budget()
        prompt = self.store.info.current_prompt
        if self.planner is not None and rec.ranked:
            feedback: str | None = None
            for _attempt in range(2):
                result = self._plan(rec, evaluation, history, feedback)
                if result is None:
                    break
                accepted: list[tuple[ToolCall, list[str]]] = []
                problems = [f"{e.kind}: {e.message}" for e in result.errors]
                for call in result.calls[:MAX_CALLS_PER_TURN]:
                    verdict = strategy.review(
                        self._with_schedule(call, rec), rec, history, budget, self._config(), prompt=prompt
                    )
                    if verdict.accepted:
                        accepted.append((self._targeted(verdict.call, verdict.target), verdict.clamps))
                    else:
                        vetoes.append({"tool": call.name, "reason": verdict.reason or "vetoed"})
                        problems.append(f"{call.name} vetoed: {verdict.reason}")
                        self._emit(
                            "veto", f"vetoed {call.name}: {verdict.reason}", tool=call.name, reason=verdict.reason
                        )
                if accepted:
                    return accepted, vetoes
                for err in result.errors:
                    vetoes.append({"tool": err.tool or "(none)", "reason": f"{err.kind}: {err.message}"})
                feedback = "; ".join(problems) or "no tool call was proposed"
        fallback = strategy.fallback_call(rec, prompt)
        verdict = strategy.review(
            self._with_schedule(fallback, rec), rec, history, budget, self._config(), prompt=prompt
        )
        call = self._targeted(verdict.call, verdict.target) if verdict.accepted else fallback
        self._emit("decision", f"selector runs {call.name}", tool=call.name)
        return [(call, verdict.clamps if verdict.accepted else [])], vetoes

    @staticmethod
    def _targeted(call: ToolCall, target: str | None) -> ToolCall:
        """Remember what a call aimed at, so a repeat of a failed action can be recognised."""
        return call.model_copy(update={"target": target}) if target else call

    def _with_schedule(self, call: ToolCall, rec: Recommendation) -> ToolCall:
        """Diminishing guidance and strength: fill them from the schedule when the call leaves them out."""
        args = dict(call.args)
        if call.name in ("canny_edit", "depth_edit") and rec.strength is not None:
            args.setdefault("strength", rec.strength)
        if call.name in EDIT_TOOLS and "image" in args and args["image"] != "current":
            args["image"] = "current"  # edits always start from the best image
        if call.name == "generate":
            args.setdefault("width", self.options.width)
            args.setdefault("height", self.options.height)
        return call.model_copy(update={"args": args})

    def _plan(
        self, rec: Recommendation, evaluation: Evaluation, history: list[HistoryEntry], feedback: str | None
    ) -> PlanResult | None:
        assert self.planner is not None
        info = self.store.info
        ctx = PlanningContext(
            prompt=info.current_prompt,
            original_prompt=info.original_prompt,
            evaluation=evaluation,
            recommendation=rec,
            history=history[-8:],
            image_png=png_bytes(self.view.current_image()),
            allowed_tools=[t for t in TOOL_NAMES if t != "edit" or self.config.edit_tool],
            user_feedback=self.view.recent_feedback(),
            max_calls=MAX_CALLS_PER_TURN,
        )
        try:
            return self.planner.plan(ctx, feedback)
        except ExecutionFailure as exc:  # unreachable, refused or unreadable: the selector decides instead
            self._emit("warning", f"planner failed ({exc}); the selector decides this step")
            return None
        finally:
            self._record_usage(self.store.info.head_step)

    # ---- executing -----------------------------------------------------------------
    def execute(
        self, call: ToolCall, *, decision: dict[str, Any], vetoes: list[dict[str, str]], clamps: list[str] | None = None
    ) -> ToolReport:
        """Run one accepted call and commit it as a step; model mistakes go back as failed reports."""
        info = self.store.info
        self._emit("step", f"running {call.name}", tool=call.name, args=call.args)
        started = time.perf_counter()
        if call.target:
            decision = {**decision, "target": call.target}
        record = StepRecord(
            tool=call.name,
            args=call.args,
            prompt=info.current_prompt,
            decision=decision,
            vetoes=vetoes,
            clamps=clamps or [],
        )
        try:
            if call.name == "rewrite_prompt":
                return self._rewrite(call, record)
            images = self._inputs(call)
            out = self.tools.run(call.name, call.args, images, on_step=self._on_step)
        except (ModelMistake, UserError) as exc:
            record = record.model_copy(update={"error": str(exc)})
            step = self.store.commit_step(record, make_head=False)
            self._emit("warning", f"{call.name} failed: {exc}", step=step)
            if call.name == "edit" and getattr(exc, "field", None) == "EMAGE_KONTEXT_MODEL":
                self.config = self.config.model_copy(update={"edit_tool": False})  # no Kontext: not again
            return ToolReport(call=call, ok=False, summary=f"error: {exc}")
        except ExecutionFailure as exc:
            self.store.commit_step(record.model_copy(update={"error": str(exc)}), make_head=False)
            raise
        args = dict(call.args)
        if out.seed is not None:
            args["seed"] = out.seed
        if call.name == "generate":
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
        self._record_usage(info.head_step)
        self.store.set_prompt(result.prompt)
        record = record.model_copy(update={"prompt": result.prompt, "note": f"{result.source}: {result.rationale}"})
        self.store.commit_step(record)
        self._emit("decision", f"prompt rewritten ({result.source}): {result.prompt}", prompt=result.prompt)
        return ToolReport(call=call, ok=True, summary=f"new prompt: {result.prompt} ({result.rationale})")

    def _inputs(self, call: ToolCall) -> dict[str, Image.Image]:
        images: dict[str, Image.Image] = {}
        if call.name in (*EDIT_TOOLS, "make_mask"):
            ref = call.args.get("image", "current")
            images["image"] = self.view.current_image() if ref == "current" else self.store.load_image(ref)
        if self.options.region and call.name in IMAGE_TOOLS:  # the user's region: the rest is pasted back
            images["region"] = self.store.load_image(self.options.region)
            images.setdefault("image", self.view.current_image())
        if call.name == "inpaint":
            ref = call.args.get("mask", "latest")
            if ref == "latest":
                latest = self.store.latest("mask")
                if latest is None:
                    raise ModelMistake("inpaint needs a mask: call make_mask first")
                ref = latest.id
            images["mask"] = self.store.load_image(ref)
        return images

    def _on_step(self, step: int, total: int) -> None:
        self._emit("diffusion", f"diffusion step {step}/{total}", step=step, total=total)

    # ---- conversation --------------------------------------------------------------
    def add_feedback(self, text: str) -> int:
        """User feedback: a step of its own, judged with the current image at the highest weight."""
        text = text.strip()
        if not text:
            raise UserError("feedback is empty", field="feedback")
        return self.store.commit_step(StepRecord(tool="feedback", prompt=self.store.info.current_prompt, feedback=text))
