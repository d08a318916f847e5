"""The Gradio page: run, watch and steer sessions. Wiring only; what it does lives in ``runs``, ``views``, ``guards``.

Every handler takes values the browser may have forged, so names go through ``guards`` (a session is
an id from the list, a step a number, prompts and feedback are words) and EMage's ``UserError`` becomes
a ``gr.Error`` toast with its one line. Files the page shows are copied by Gradio into its cache, which
``serve`` places inside the sessions folder; nothing outside that folder is served.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gradio as gr
from PIL import Image
from starlette.middleware import Middleware

from emage_agent.adapters.netguard import HostGuard, host_rule
from emage_agent.adapters.ui import controls, views
from emage_agent.adapters.ui.guards import check_step, check_upload
from emage_agent.adapters.ui.runs import UI_DIR, Run, Studio
from emage_agent.core.errors import EmageError, UserError

UPLOAD_CACHE = (600, 3600)  # every 10 minutes, Gradio deletes uploads and copies older than an hour
CSS = (  # fixed thumbnail sizes: a gallery with one or two items would otherwise stretch them across the page
    "#status {min-height: 1.5em} .emage-title {margin-bottom: 0}"
    " #steps .grid-container {grid-template-columns: repeat(4, minmax(100px, 1fr)) !important}"
    " #sessions .grid-container {grid-template-columns: repeat(6, minmax(100px, 1fr)) !important}"
)
INTRO = (
    "Write a prompt and press **Run**: EMage makes the image, has it judged, and repairs it step by step. "
    "Pick a step in **Steps** to see its issues and the decision; tell it what to change in **Feedback**."
)


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """EMage's errors as a toast with their one line; anything else is a bug and shows its kind."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EmageError as exc:
            raise gr.Error(views.toast(str(exc))) from None

    return wrapper


def _guard_stream(fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            yield from fn(*args, **kwargs)
        except EmageError as exc:
            raise gr.Error(views.toast(str(exc))) from None

    return wrapper


class Page:
    """The handlers of one page, over one studio. Per-tab state lives in ``gr.State`` values."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.placeholder = studio.root / UI_DIR / "no-image.png"

    # ---- rendering -------------------------------------------------------------------
    def render(self, session_id: str | None, step: int | None = None, status: str = "", files: bool = True) -> tuple:
        """Values for: session, step numbers, selected step, status, Steps, issue image, details, downloads."""
        if not session_id:
            return None, [], None, status, [], None, "", None
        with self.studio.open_store(session_id) as store:
            items, numbers = views.gallery(store)
            head = store.head()
            current = store.current_image(head.step) if head and head.step else None
            chosen = step if step in numbers else (current.step if current else (numbers[-1] if numbers else None))
            rec = store.step(chosen) if chosen else None
            annotated = views.boxes(store, rec) if rec else None
            text = views.details(store, rec) if rec else "no image yet"
            said = views.feedback_lines(store)
            text = f"{text}\n\n{said}" if said else text
            downloads = None
            if files and numbers:
                best = store.best()
                art = store.current_image(best.step) if best and best.step else None
                report = store.dir / "report.html"
                downloads = [str(store.dir / art.path)] if art else []
                downloads.append(str(self.studio.zip_session(session_id)))
                if report.is_file():
                    downloads.append(str(report))
            header = f"**Session** `{store.id}` · {store.info.status}"
            if store.info.stopped_because:
                header += f" ({views.plain(store.info.stopped_because)})"
        status = f"{header} · {views.plain(status)}" if status else header
        return session_id, numbers, chosen, status, items, annotated, text, downloads

    def follow(self, run: Run) -> Iterator[tuple]:
        """Yield the page as the run goes: each finished step as it lands, the queue and diffusion in the status."""
        seen, steps_seen = -1, -1
        while True:
            finished = run.done.is_set()
            if run.version != seen or finished:
                seen = run.version
                changes = sum(1 for e in run.events if e.kind != "diffusion")
                if changes != steps_seen or finished:
                    steps_seen = changes
                    yield self.render(run.session_id, status=run.status(), files=finished)
                else:  # only the queue position or the diffusion step moved
                    yield (gr.skip(),) * 3 + (self.render_status(run),) + (gr.skip(),) * 4
            if finished:
                if run.error:
                    raise gr.Error(views.toast(run.error))
                return
            self.studio.wait(run, seen)

    def render_status(self, run: Run) -> str:
        return f"**Session** `{run.session_id}` · running · {views.plain(run.status())}"

    def sessions(self) -> tuple[list[tuple[str, str]], list[str]]:
        rows = self.studio.sessions()
        if not self.placeholder.is_file():
            self.placeholder.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (64, 64), (230, 230, 230)).save(self.placeholder)
        items = [(row["image"] or str(self.placeholder), views.session_caption(row)) for row in rows]
        return items, [row["id"] for row in rows]

    # ---- handlers ----------------------------------------------------------------------
    def run(self, prompt: str, start_image: str | None, *values: Any) -> Iterator[tuple]:
        """Run ``prompt``; ``values`` are the option controls' values in ``controls.UI_OPTIONS`` order."""
        image = check_upload(start_image, "start image")
        yield from self.follow(self.studio.start(prompt, controls.read(values), image))

    def send(self, session_id: str | None, text: str) -> Iterator[tuple]:
        if not session_id:
            raise UserError("run a prompt or open a session first", field="feedback")
        yield from self.follow(self.studio.feedback(session_id, text))

    def resume(self, session_id: str | None) -> Iterator[tuple]:
        if not session_id:
            raise UserError("open a session first", field="session")
        yield from self.follow(self.studio.resume(session_id))

    def stop(self, session_id: str | None) -> str:
        if session_id and self.studio.stop(session_id):
            return f"**Session** `{session_id}` · stopping after the current step"
        return "nothing is running"

    def pick_step(self, session_id: str | None, numbers: list[int], evt: gr.SelectData) -> tuple:
        index = evt.index if isinstance(evt.index, int) else 0
        step = numbers[index] if 0 <= index < len(numbers) else None
        return (*self.render(session_id, step, files=False)[:-1], gr.skip())  # the downloads stay as they are

    def revert(self, session_id: str | None, selected: int | None) -> tuple:
        if not session_id:
            raise UserError("open a session first", field="session")
        step = check_step(selected)
        self.studio.revert(session_id, step)
        return self.render(session_id, step, status=f"reverted to step {step}")

    def undo(self, session_id: str | None) -> tuple:
        if not session_id:
            raise UserError("open a session first", field="session")
        self.studio.undo(session_id)
        return self.render(session_id, status="undone")

    def open_session(self, ids: list[str], evt: gr.SelectData) -> tuple:
        index = evt.index if isinstance(evt.index, int) else -1
        if not 0 <= index < len(ids):
            raise UserError("pick a session in the list", field="session")
        run = self.studio.running(ids[index])
        return self.render(ids[index], status=run.status() if run else "opened")


def build(studio: Studio, defaults: dict[str, Any] | None = None) -> gr.Blocks:
    """The page. ``defaults`` preset the run options (the CLI passes the settings' size)."""
    d = controls.defaults(defaults)
    page = Page(studio)
    guard_stream = _guard_stream
    with gr.Blocks(title="EMage", delete_cache=UPLOAD_CACHE) as demo:
        session, numbers, selected, session_ids = gr.State(None), gr.State([]), gr.State(None), gr.State([])
        gr.Markdown("# EMage", elem_classes="emage-title")
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                prompt = gr.Textbox(label="Prompt", lines=3, placeholder="a red fox sitting on the roof of a blue car")
                with gr.Accordion("Options", open=False):
                    option_controls = [controls.control(name, d[name]) for name in controls.UI_OPTIONS]
                    start_image = gr.File(  # a file, not gr.Image: EMage reads it and says what is wrong with it
                        label="Start from an image (optional)", type="filepath", height=160
                    )
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary")
                    stop_btn = gr.Button("Stop", variant="stop")
                status = gr.Markdown("", elem_id="status")
                feedback = gr.Textbox(label="Feedback", lines=2, placeholder="what should change, in words")
                send_btn = gr.Button("Send")
                with gr.Row():
                    undo_btn = gr.Button("Undo")
                    revert_btn = gr.Button("Revert to this step")
                    resume_btn = gr.Button("Resume")
                downloads = gr.File(
                    label="Downloads: best image, session (zip), report", file_count="multiple", elem_id="downloads"
                )
            with gr.Column(scale=3, min_width=420):
                steps_gallery = gr.Gallery(
                    label="Steps", columns=4, height=260, allow_preview=False, object_fit="contain", elem_id="steps"
                )
                step_image = gr.AnnotatedImage(label="Issues on the image", height=340, elem_id="issues")
                step_details = gr.Markdown("", elem_id="details")
        sessions_gallery = gr.Gallery(
            label="Sessions", columns=6, height=220, allow_preview=False, object_fit="contain", elem_id="sessions"
        )
        refresh_btn = gr.Button("Refresh sessions", size="sm")

        view = [session, numbers, selected, status, steps_gallery, step_image, step_details, downloads]
        listing = [sessions_gallery, session_ids]
        options = [prompt, start_image, *option_controls]
        streamed = {"concurrency_limit": None, "show_progress": "minimal"}
        run_btn.click(guard_stream(page.run), options, view, **streamed).then(page.sessions, None, listing)
        send_btn.click(guard_stream(page.send), [session, feedback], view, **streamed).then(
            lambda: "", None, feedback
        ).then(page.sessions, None, listing)
        resume_btn.click(guard_stream(page.resume), [session], view, **streamed).then(page.sessions, None, listing)
        stop_btn.click(_guard(page.stop), [session], status, concurrency_limit=None)
        steps_gallery.select(_guard(page.pick_step), [session, numbers], view)
        revert_btn.click(_guard(page.revert), [session, selected], view)
        undo_btn.click(_guard(page.undo), [session], view)
        sessions_gallery.select(_guard(page.open_session), [session_ids], view)
        refresh_btn.click(page.sessions, None, listing)
        demo.load(page.sessions, None, listing)
    return demo


def serve(
    studio: Studio,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: tuple[str, str] | None = None,
    allowed_hosts: Sequence[str] = (),
    defaults: dict[str, Any] | None = None,
    block: bool = True,
) -> tuple[gr.Blocks, str]:
    """Serve the page; returns the Blocks and its URL. Gradio's cache goes inside the sessions folder.

    Every request must name this bind (``host:port``) or one of ``allowed_hosts`` in its ``Host`` and any
    ``Origin`` (421/403 otherwise): the same DNS-rebinding rule as the MCP server (``emage_agent.adapters.netguard``),
    added as a middleware of the FastAPI app Gradio builds (``app_kwargs``, its public hook).
    """
    cache = studio.root / UI_DIR / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(cache)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build(studio, defaults)
    demo.queue(default_concurrency_limit=4)
    _app, url, _share = demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        auth_message="EMage: sign in with the user and password given to --auth",
        prevent_thread_lock=not block,
        app_kwargs={"middleware": [Middleware(HostGuard, rule=host_rule(host, port, allowed_hosts))]},
        show_error=True,
        quiet=True,
        share=False,
        allowed_paths=[],
        footer_links=[],
        ssr_mode=False,
        max_file_size="20mb",
        css=CSS,
        theme=gr.themes.Soft(),
    )
    return demo, url
