"""The Python API: ``Agent`` and ``Session`` for embedding, ``FluxVLMPipeline`` for the seed's usage.

The agent builds its collaborators lazily and once: one executor per agent (so the FLUX
models load once per process), one client per VLM backend in use (``EMAGE_VLM`` for the judge,
``EMAGE_PLANNER_VLM`` for the planner and rewriter), and one planner chat per session.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from emage_agent import strategy
from emage_agent.core.decisions import Decision
from emage_agent.core.errors import UserError
from emage_agent.core.evaluation import Evaluation
from emage_agent.core.events import AgentEvent
from emage_agent.core.options import CONTINUING_OPTIONS, parse_options
from emage_agent.core.options import FIXED_OPTIONS as RUN_FIXED_OPTIONS
from emage_agent.core.planning import ToolCall
from emage_agent.core.ports import png_bytes
from emage_agent.core.redact import remember_settings
from emage_agent.core.settings import Settings, load_settings
from emage_agent.core.tools import first_image_tool, validate_arguments
from emage_agent.loop.session_loop import SessionLoop
from emage_agent.session import SessionStore
from emage_agent.vlm import VLM, CallLog, Role, choose, local_model, open_vlm

log = logging.getLogger(__name__)
# What a continuing session may change and what it may not (with why): from the options model, plus the picture.
FIXED_OPTIONS = {
    **RUN_FIXED_OPTIONS,
    "image": "a session starts from one picture; start a new session for another",
    "mask": "the region belongs to the picture the session started from",
}


class Agent:
    """Runs sessions. Pass your own collaborators to embed EMage in another system or test it."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        root: Path | str | None = None,
        executor: Any = None,
        evaluator: Any = None,
        rewriter: Any = None,
        planner_factory: Callable[[], Any] | None = None,
        selector_config: strategy.SelectorConfig | None = None,
        on_event: Callable[[AgentEvent], None] | None = None,
        limiter: Any = None,
        calls: CallLog | None = None,
        demo: bool = False,
    ) -> None:
        self.settings = settings or load_settings()
        remember_settings(self.settings)  # configured secrets are scrubbed from everything that leaves
        self.root = Path(root) if root is not None else self.settings.session_root
        self._executor = executor
        self._evaluator = evaluator
        self._rewriter = rewriter
        self._planner_factory = planner_factory
        self._vlms: dict[str, VLM] = {}
        # Every backend's call records, in order; each session takes its thread's share. Agents that share
        # another's VLM collaborators (one per UI run) pass its log, so their sessions see their calls.
        self.calls = calls if calls is not None else CallLog()
        self.limiter = limiter  # shared VLM rate limit (``engine.RateLimiter``) when sessions run side by side
        # An exact --threshold by default: a session never reports "threshold" below what the user asked for.
        # The instruction edit is offered when its Kontext model is configured (EMAGE_KONTEXT_MODEL=none: never).
        self.selector_config = selector_config or strategy.SelectorConfig(
            threshold_relax_per_iteration=0.0, edit_tool=self.settings.edit_enabled
        )
        self.on_event = on_event
        self.demo = demo  # sessions are marked DEMO and planned by the selector (see ``demo_agent``)

    def derive(
        self,
        *,
        root: Path | str | None = None,
        executor: Any = None,
        on_event: Callable[[AgentEvent], None] | None = None,
        planner_factory: Callable[[], Any] | None = None,
        selector_config: strategy.SelectorConfig | None = None,
    ) -> Agent:
        """A variant of this agent for one adapter or run: its own executor handle, events or planner, sharing
        the settings, the VLM clients (evaluator, rewriter, planners), the call log and the rate limiter.

        Why: MCP and the UI put each run's executor behind a GPU-queue lane and route its events; copying the
        fields by hand forgot one (the limiter) before. Unset arguments keep this agent's own.
        """
        derived = Agent(
            self.settings,
            root=root if root is not None else self.root,
            executor=executor if executor is not None else self.executor,
            evaluator=self.evaluator,  # built here, once: racing builds would split the call records
            rewriter=self.rewriter,
            planner_factory=planner_factory or self._new_planner,
            selector_config=selector_config or self.selector_config,
            on_event=on_event if on_event is not None else self.on_event,
            limiter=self.limiter,
            calls=self.calls,
            demo=self.demo,
        )
        derived._vlms = self._vlms  # the same backends for every role
        return derived

    # ---- collaborators, built on first use ------------------------------------------
    @property
    def executor(self) -> Any:
        if self._executor is None:
            from emage_agent.executor import Executor

            self._executor = Executor(self.settings, local_vlm=local_model(self.settings))
        return self._executor

    def vlm(self, role: Role = "evaluator") -> VLM:
        """The backend for ``role`` (built once; backends shared by both roles are built once)."""
        name = choose(self.settings, role)
        if name not in self._vlms:
            backend = open_vlm(self.settings, name, limiter=self.limiter)
            backend.share_calls(self.calls)
            self._vlms[name] = backend
        return self._vlms[name]

    @property
    def evaluator(self) -> Any:
        if self._evaluator is None:
            self._evaluator = self.vlm("evaluator").evaluator
        return self._evaluator

    @property
    def rewriter(self) -> Any:
        if self._rewriter is None:
            self._rewriter = self.vlm("planner").rewriter
        return self._rewriter

    def _new_planner(self) -> Any:
        if self._planner_factory is not None:
            return self._planner_factory()
        return self.vlm("planner").new_planner()

    def _new_calls(self) -> list[dict[str, Any]]:
        """VLM call records this session's thread made since its last look (backend, model, tokens, latency).

        Per thread, because sessions running side by side share this agent's clients, each in its own
        thread: one session must not book another's calls."""
        return [c.model_dump(mode="json") for c in self.calls.take()]

    def _loop(self, store: SessionStore) -> SessionLoop:
        by_rules = self.demo or store.info.options.get("planner", "vlm") == "selector"
        planner = None if by_rules else self._new_planner()
        return SessionLoop(
            store,
            tools=self.executor,
            evaluator=self.evaluator,
            rewriter=self.rewriter,
            planner=planner,
            config=self.selector_config,
            usage=self._new_calls,
            emit=self._emit,
            detector=getattr(self.executor, "detect", None) if self.settings.detector_enabled else None,
            detector_confidence=self.settings.detector_threshold,
        )

    def _emit(self, event: AgentEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def check_ready(self) -> None:
        """Refuse to start what cannot finish: no VLM configured, or no GPU without an explicit CPU choice."""
        if self._evaluator is None:
            self.vlm("evaluator")
        if self.settings.planner_vlm and (self._rewriter is None or self._planner_factory is None):
            self.vlm("planner")
        if self._executor is None:
            from emage_agent.executor import resolve_device

            resolve_device(self.settings)

    # ---- sessions -------------------------------------------------------------------
    def start(
        self,
        prompt: str,
        *,
        image: str | Path | Image.Image | None = None,
        mask: str | Path | Image.Image | None = None,
        announce: Callable[[Session], None] | None = None,
        **options: Any,
    ) -> Session:
        """Create a session and make its first image (generated and evaluated).

        ``image`` starts from the user's picture instead (evaluated first, then repaired like any other);
        ``mask`` (white = may change) limits every repair to a region of it. ``announce`` sees the new
        session before any work, so a display can name its folder from the first second. A failure or an
        interruption before the first step is committed leaves no folder behind.
        """
        session = self.create(prompt, image=image, mask=mask, **options)
        try:
            if announce is not None:  # inside: an interruption while it shows the folder still discards it
                announce(session)
            if image is not None:
                session.loop.evaluate_head()
            else:
                session.loop.start()
        except BaseException:
            if not session.discard_if_empty():
                self.record_speed(session.store)
                session.try_report()
            raise
        self.record_speed(session.store)  # as the executor resolved them, once it has loaded
        session.write_report()
        return session

    def create(
        self,
        prompt: str,
        *,
        root: Path | str | None = None,
        image: str | Path | Image.Image | None = None,
        mask: str | Path | Image.Image | None = None,
        **options: Any,
    ) -> Session:
        """A new stored session with nothing run yet (``Session.run`` makes its first image).

        ``image`` (and ``mask``) is recorded as its first step, an ``upload``, judged when the session runs.
        """
        prompt = _clean_prompt(prompt)
        if self.demo:
            options = {**options, "demo": True, "planner": "selector"}
        if mask is not None and image is None:
            raise UserError("a mask limits repairs of a picture you give; pass --image too", field="mask")
        picture, region, note = None, None, ""
        if image is not None:
            from emage_agent.core.pictures import load_region_mask, load_start_image

            picture, note = load_start_image(image)
            region = load_region_mask(mask, picture.size) if mask is not None else None
            options = {**options, "width": picture.width, "height": picture.height}
        opts = parse_options(**options)  # also checks the first image's size, steps and guidance
        opts.generate_args(prompt)  # and the prompt itself, before anything is written
        where = Path(root) if root is not None else self.root
        store = SessionStore.create(where, original_prompt=prompt, options=opts.model_dump(mode="json"))
        session: Session | None = None
        try:
            self.record_speed(store)
            session = Session(self, store)
            if picture is not None:
                session.loop.record_upload(picture, region, note)
        except BaseException:  # a bad setting or Ctrl-C before the first step: no empty folder is left behind
            if session is None:
                store.close()
                shutil.rmtree(store.dir, ignore_errors=True)
            elif not session.discard_if_empty():
                store.close()  # its upload step is kept
            raise
        return session

    def record_speed(self, store: SessionStore) -> None:
        """Store the speed settings in the session: as configured, then as the executor resolved them."""
        from emage_agent.core.settings import speed_settings

        speed = speed_settings(self.settings)
        counters = getattr(self._executor, "counters", None)
        for key in ("quantize", "compile", "attention", "residency"):
            value = getattr(counters, key, None)
            if isinstance(value, str):
                speed[key] = value
        why = getattr(counters, "speed_why", None)
        if why:
            speed["why"] = dict(why)
        store.update_options({"speed": speed})

    def open(self, session: str | Path) -> Session:
        """An existing session, by directory or by id under the session root."""
        path = Path(session)
        if not path.exists() and (self.root / str(session)).exists():
            path = self.root / str(session)
        return Session(self, SessionStore.open(path))

    def evaluate(self, image: Image.Image, prompt: str) -> Evaluation:
        return self.evaluator.evaluate(png_bytes(image), prompt)

    def run_tool(self, tool: str, args: dict[str, Any], session: Session | None = None) -> dict[str, Any]:
        """One tool in a session, outside the loop (MCP, scripts). ``generate`` may start a session."""
        args = validate_arguments(tool, args)
        created = session is None
        if session is None:
            if tool != first_image_tool():
                raise UserError(f"{tool} works on a session's image; pass a session_id", field="session_id")
            options = {k: args[k] for k in ("width", "height", "steps", "guidance", "seed") if k in args}
            options |= {"iterations": 0, **({"demo": True, "planner": "selector"} if self.demo else {})}
            store = SessionStore.create(self.root, original_prompt=args["prompt"], options=options)
            session = Session(self, store)
        try:
            return self._run_one(session, tool, args)
        finally:
            if created:  # the caller holds no handle to it; it opens the session again by id when it needs it
                session.close()

    @staticmethod
    def _run_one(session: Session, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        loop = session.loop
        with loop.running():
            report = loop.execute(ToolCall(name=tool, args=args), decision=Decision(strategy="direct"), kind="direct")
            session.store.set_status("done", stopped_because="tool call")
        session.write_report()
        head = session.store.head()
        artifact = report.artifact_id
        return {
            "session_id": session.id,
            "session_dir": str(session.dir),
            "ok": report.ok,
            "step": head.step if head else None,
            "artifact_id": artifact,
            "image": str(session.store.artifact_path(artifact)) if artifact else None,
            "note": report.summary,
            "prompt": session.store.info.current_prompt,
        }


def demo_agent(root: Path | str | None = None, **agent_kwargs: Any) -> Agent:
    """An agent for ``--demo``: the real loop, executor and store on tiny random-weight models built on the fly,
    judged by a scripted in-process judge. No GPU, key or network; every session it makes says DEMO."""
    from emage_agent.executor.tiny import demo_family
    from emage_agent.vlm.demo import DemoJudge

    family = demo_family()
    settings = family.settings(hf_token=None, **({"session_root": Path(root)} if root is not None else {}))
    judge = DemoJudge()
    return Agent(settings, root=root, evaluator=judge, rewriter=judge, demo=True, **agent_kwargs)


def _clean_prompt(prompt: str | None) -> str:
    prompt = (prompt or "").strip()
    if not prompt:
        raise UserError("the prompt is empty; say what the image should show", field="prompt")
    return prompt


class Session:
    """One stored session: run it, refine it with feedback, move back through its history."""

    def __init__(self, agent: Agent, store: SessionStore) -> None:
        self.agent = agent
        self.store = store
        self._loop: SessionLoop | None = None

    @property
    def loop(self) -> SessionLoop:
        """Built on first use, so reading or reverting a session loads no model and needs no key."""
        if self._loop is None:
            self._loop = self.agent._loop(self.store)
        return self._loop

    @property
    def id(self) -> str:
        return self.store.id

    @property
    def dir(self) -> Path:
        return self.store.dir

    def run(self, iterations: int | None = None) -> dict[str, Any]:
        self.agent.record_speed(self.store)
        try:
            summary = self.loop.run(iterations)
        except BaseException:
            self.try_report()
            raise
        self.write_report()
        return summary

    def configure(self, **changes: Any) -> None:
        """Change options of a continuing session; they apply to the next steps.

        Size and seed belong to the first image and are refused with the reason (``UserError``).
        """
        for key in changes:
            if key in FIXED_OPTIONS:
                raise UserError(f"cannot change for a continuing session: {FIXED_OPTIONS[key]}", field=key)
            if key not in CONTINUING_OPTIONS:
                raise UserError(f"not an option; a continuing session takes {', '.join(CONTINUING_OPTIONS)}", field=key)
        merged = parse_options(**{**self.store.info.options, **changes})
        with self.store.writing():
            self.store.update_options({k: getattr(merged, k) for k in changes})
        self._loop = None  # rebuilt from the stored options (a new planner choice included)

    def step(self) -> dict[str, Any]:
        """One more iteration of the automatic loop."""
        return self.run(iterations=1)

    def refine(self, feedback: str, iterations: int = 1) -> dict[str, Any]:
        """The user's words become the highest-weight issue of the next evaluation, then the loop runs."""
        with self.store.writing():
            self.loop.add_feedback(feedback)
            return self.run(iterations=iterations)

    def revert(self, step: int) -> None:
        with self.store.writing():
            self.store.revert(step)
        self.write_report()

    def undo(self) -> None:
        with self.store.writing():
            self.store.undo()
        self.write_report()

    def close(self) -> None:
        """Close the session's database (its files stay); the object is not used afterwards."""
        self.store.close()

    def discard_if_empty(self) -> bool:
        """Remove the session's folder when no step was ever committed (nothing to resume); True if removed."""
        try:
            if self.store.steps():
                return False
        except Exception:  # noqa: BLE001 - an unreadable new session holds nothing worth keeping either
            log.debug("new session unreadable; discarding it", exc_info=True)
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return True

    def history(self) -> list[dict[str, Any]]:
        return self.store.summary()["history"]

    def summary(self) -> dict[str, Any]:
        return self.store.summary()

    def best_image(self) -> Image.Image:
        best = self.store.best()
        if best is None:
            raise UserError("the session has no scored image yet", field="session")
        artifact = self.store.current_image(best.step)
        if artifact is None:
            raise UserError("the session has no image yet", field="session")
        return self.store.load_image(artifact.id)

    def write_report(self) -> Path:
        from emage_agent.session.report import write_report

        return write_report(self.store)

    def try_report(self) -> None:
        """The report after a failure: best effort, so a full disk never hides the failure itself."""
        try:
            self.write_report()
        except Exception as exc:  # noqa: BLE001 - the error in flight is the one to report
            log.warning("report.html not written: %r", exc)


class FluxVLMPipeline:
    """The seed's interface, unchanged: one call, a dict with the final image and the history."""

    def __init__(self, settings: Settings | None = None, **agent_kwargs: Any) -> None:
        self.agent = Agent(settings, **agent_kwargs)

    def generate_and_evaluate(
        self,
        prompt: str,
        num_iterations: int = 3,
        guidance_scale: float = 7.5,
        num_inference_steps: int = 30,
        seed: int | None = None,
        width: int = 1024,
        height: int = 1024,
    ) -> dict[str, Any]:
        session = self.agent.start(
            prompt,
            iterations=num_iterations,
            guidance=guidance_scale,
            steps=num_inference_steps,
            seed=seed,
            width=width,
            height=height,
        )
        summary = session.run()
        return {
            "final_image": session.best_image(),
            "final_prompt": summary["final_prompt"],
            "satisfaction_score": summary["satisfaction_score"],
            "history": summary["history"],
            "session_dir": summary["session_dir"],
        }
