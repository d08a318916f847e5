"""The page's handlers: what each button and endpoint does, as values for the components (``app`` wires them).

Every handler returns a dict keyed by component, so a refusal or a failure updates the status area
alone and every other panel keeps its last content (no red badges). EMage's own errors become one
status line that says what failed and what to do; they are never raised into Gradio, so a person's
mistake prints no traceback in the server log. Text from a model or a person reaches the status as
plain text (a ``gr.Textbox``) and the decision panel escaped (``views._md``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image

from emage_agent.adapters.ui import controls, views
from emage_agent.adapters.ui.guards import check_step, check_upload
from emage_agent.adapters.ui.runs import UI_DIR, Run, Studio
from emage_agent.core.errors import EmageError, UserError
from emage_agent.core.options import option_default

WHAT_NEXT = "The session is kept: press Resume to continue it, or change the options and Run again."


@dataclass
class Parts:
    """The page's components that handlers read or write (built in ``app.build``)."""

    session_id: Any
    numbers: Any
    step: Any
    status: Any
    image: Any
    steps: Any
    chart: Any
    issues: Any
    details: Any
    downloads: Any
    editor: Any
    history: Any
    history_ids: Any
    prompt: Any
    options: dict[str, Any]

    @property
    def view(self) -> list[Any]:
        return [self.session_id, self.numbers, self.step, self.status, self.image, self.steps, self.chart,
                self.issues, self.details, self.downloads, self.editor]  # fmt: skip

    @property
    def opened(self) -> list[Any]:
        return [*self.view, self.prompt, *self.options.values()]


def _refusal(page: Page, exc: EmageError) -> dict[Any, Any]:
    return {page.c.status: f"Not done: {exc}"}


def safe(fn: Callable[..., Any]) -> Callable[..., Any]:
    """EmageError as one status line (the other panels untouched); a generator's updates pass through."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(self: Page, *args: Any, **kwargs: Any) -> Iterator[dict[Any, Any]]:
            try:
                yield from fn(self, *args, **kwargs)
            except EmageError as exc:
                yield _refusal(self, exc)

        return stream

    @functools.wraps(fn)
    def call(self: Page, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except EmageError as exc:
            return _refusal(self, exc)

    return call


class Page:
    """The handlers of one page over one studio; per-tab values live in the components themselves."""

    def __init__(self, studio: Studio, parts: Parts | None = None) -> None:
        self.studio = studio
        self.placeholder = studio.root / UI_DIR / "no-image.png"
        self.c: Parts = parts  # type: ignore[assignment]  # set by ``app.build`` once the components exist

    # ---- rendering -------------------------------------------------------------------
    def render(self, session_id: str, step: int | None = None, note: str = "", files: bool = True) -> dict:
        """Every panel for one session: steps newest first, the chosen step's issues and decision, the chart."""
        c = self.c
        with self.studio.open_store(session_id) as store:
            items, numbers = views.gallery(store)
            head = store.head()
            current = store.current_image(head.step) if head and head.step else None
            chosen = step if step in numbers else (current.step if current else (numbers[0] if numbers else None))
            rec = store.step(chosen) if chosen else None
            text = views.details(store, rec) if rec else "No image yet."
            said = views.feedback_lines(store)
            out = {
                c.session_id: store.id,
                c.numbers: numbers,
                c.step: chosen,
                c.status: self._headline(store, note),
                c.image: views.current_image(store),
                c.steps: items,
                c.chart: views.chart(store),
                c.issues: views.boxes(store, rec) if rec else None,
                c.details: f"{text}\n\n{said}" if said else text,
            }
            if files:
                out[c.downloads] = self._downloads(store) if numbers else None
                out[c.editor] = views.current_image(store)
        return out

    def _headline(self, store: Any, note: str) -> str:
        run = self.studio.running(store.id)
        state = "running" if run else store.info.status
        shown = store.info.stopped_because and not run and state != "failed"  # a failure is told once, in the note
        why = f" ({store.info.stopped_because})" if shown else ""
        seed = views.seed_of(store)
        line = f"Session {store.id} · {state}{why}" + (f" · seed {seed}" if seed is not None else "")
        return f"{line}\n{note}" if note else line

    def _downloads(self, store: Any) -> list[str]:
        best = store.best()
        art = store.current_image(best.step) if best and best.step else None
        files = [str(store.dir / art.path)] if art else []
        files.append(str(self.studio.zip_session(store.id)))
        report = store.dir / "report.html"
        return files + ([str(report)] if report.is_file() else [])

    def follow(self, run: Run) -> Iterator[dict]:
        """The page as the run goes: each step as it lands, the preview as it forms, queue and retries in the status."""
        seen, steps_seen, previews_seen = -1, -1, 0
        while True:
            finished = run.done.is_set()
            if run.version != seen or finished:
                seen = run.version
                changes = sum(1 for e in run.events if e.kind != "diffusion")
                if finished:
                    note = f"Failed: {run.error}\n{WHAT_NEXT}" if run.error else run.status()
                    yield self.render(run.session_id, note=note)
                    return
                if changes != steps_seen:
                    steps_seen = changes
                    update = self.render(run.session_id, note=run.status(), files=False)
                else:
                    update = {self.c.status: f"Session {run.session_id} · running\n{run.status()}"}
                if run.previews != previews_seen and run.preview is not None:
                    previews_seen = run.previews
                    update[self.c.image] = run.preview
                yield update
            self.studio.wait(run, seen)

    # ---- public actions (the scriptable endpoints) ---------------------------------------
    @safe
    def run(self, prompt: str, *values: Any, **named: Any) -> Iterator[dict]:
        """Start a session for `prompt` and stream it; an empty seed picks a random one (shown when done).

        Its parameters are ``RUN_PARAMETERS``: the prompt, every option in ``controls.UI_OPTIONS`` order
        (each optional), then the start image, so ``/run`` names them all for ``gradio_client``.
        """
        given = RUN_SIGNATURE.bind(self, prompt, *values, **named).arguments
        image = check_upload(given.get("start_image"), "start image")
        options = controls.read(tuple(given.get(name) for name in controls.UI_OPTIONS))
        yield from self.follow(self.studio.start(prompt, options, image))

    @safe
    def send(self, session_id: str, feedback: str, mask: dict | None = None) -> Iterator[dict]:
        """Feedback on the session's current image; a region painted on it limits that repair to the region."""
        if not session_id:
            raise UserError("run a prompt or open a session first", field="feedback")
        yield from self.follow(self.studio.feedback(session_id, feedback, painted_region(mask)))

    @safe
    def resume(self, session_id: str) -> Iterator[dict]:
        """Continue a stopped or failed session where it ended."""
        if not session_id:
            raise UserError("open a session first", field="session")
        yield from self.follow(self.studio.resume(session_id))

    @safe
    def stop(self, session_id: str) -> dict:
        """Stop the running session after its current step."""
        if session_id and self.studio.stop(session_id):
            return {self.c.status: f"Session {session_id} · stopping after the current step"}
        return {self.c.status: "Nothing is running in this session."}

    @safe
    def revert(self, session_id: str, step: float) -> dict:
        """Make `step` the current image again; later steps stay in the history."""
        if not session_id:
            raise UserError("open a session first", field="session")
        chosen = check_step(step)
        self.studio.revert(session_id, chosen)
        return self.render(session_id, chosen, note=f"Reverted to step {chosen}.")

    @safe
    def undo(self, session_id: str) -> dict:
        """Undo the last move of the current image."""
        if not session_id:
            raise UserError("open a session first", field="session")
        self.studio.undo(session_id)
        return self.render(session_id, note="Undone.")

    @safe
    def open_session(self, session_id: str) -> dict:
        """Show a session and fill the prompt and options with the ones it ran with."""
        out = self.render(session_id, note="Opened.")
        with self.studio.open_store(session_id) as store:
            info = store.info
            out[self.c.prompt] = info.original_prompt
            for name, box in self.c.options.items():
                value = info.options.get(name)
                if name == "seed":
                    seed = views.seed_of(store)
                    value = "" if seed is None else str(seed)
                if value is not None or option_default(name) is None:
                    out[box] = value  # an unset option empties its box
        run = self.studio.running(session_id)
        if run is not None:
            out[self.c.status] = f"{out[self.c.status]}\n{run.status()}"
        return out

    def sessions(self) -> list[dict[str, Any]]:
        """Every session here, newest first: id, prompt, best score, status, why it stopped, last change."""
        return [{k: v for k, v in row.items() if k != "image"} for row in self.studio.sessions()]

    # ---- internal callbacks (no endpoint) ------------------------------------------------
    def history(self) -> dict:
        rows = self.studio.sessions()
        if not self.placeholder.is_file():
            self.placeholder.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (64, 64), (230, 230, 230)).save(self.placeholder)
        items = [(row["image"] or str(self.placeholder), views.session_caption(row)) for row in rows]
        return {self.c.history: items, self.c.history_ids: [row["id"] for row in rows]}

    @safe
    def pick_step(self, session_id: str, numbers: list[int], evt: gr.SelectData) -> dict:
        index = evt.index if isinstance(evt.index, int) else -1
        if not session_id or not 0 <= index < len(numbers):
            raise UserError("pick a step of the open session", field="step")
        out = self.render(session_id, numbers[index], files=False)
        with self.studio.open_store(session_id) as store:
            art = store.image_of(numbers[index])
            out[self.c.editor] = str(store.dir / art.path) if art else gr.skip()
        return out

    @safe
    def pick_session(self, ids: list[str], evt: gr.SelectData) -> dict:
        index = evt.index if isinstance(evt.index, int) else -1
        if not 0 <= index < len(ids):
            raise UserError("pick a session in the history", field="session")
        return self.open_session(ids[index])


def painted_region(value: dict | None) -> Image.Image | None:
    """The strokes painted in the image editor as a mask (white = may change); ``None`` when nothing was painted."""
    layers = [layer for layer in (value or {}).get("layers") or [] if isinstance(layer, Image.Image)]
    if not layers:
        return None
    mask = Image.new("L", layers[0].size, 0)
    for layer in layers:
        alpha = layer.convert("RGBA").getchannel("A").resize(mask.size)
        mask.paste(255, mask=alpha.point(lambda v: 255 if v > 0 else 0))
    return mask if mask.getextrema()[1] else None


def _run_signature() -> inspect.Signature:
    """``Page.run`` as Gradio and scripts see it: named, optional options generated from the options model."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("self", kind), inspect.Parameter("prompt", kind, annotation=str)]
    params += [inspect.Parameter(name, kind, default=None, annotation=Any) for name in controls.UI_OPTIONS]
    params.append(inspect.Parameter("start_image", kind, default=None, annotation=str | None))
    return inspect.Signature(params)


RUN_SIGNATURE = _run_signature()
Page.run.__signature__ = RUN_SIGNATURE  # type: ignore[attr-defined]
