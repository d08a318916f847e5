"""The Gradio page: layout and wiring only; what the buttons do lives in ``page``, ``runs``, ``views``, ``guards``.

Only the public actions have endpoints, with stable names, for ``gradio_client`` (``docs/ui.md``):
``/run``, ``/send``, ``/undo``, ``/revert``, ``/resume``, ``/stop``, ``/open_session`` and ``/sessions``.
Internal callbacks (picking a step or a history card, the history gallery) are ``api_visibility="private"``.
Files the page shows are copied by Gradio into its cache, which ``serve`` places inside the sessions
folder; nothing outside that folder is served.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from emage_agent.adapters.netguard import HostGuard, host_rule
from emage_agent.adapters.ui import controls
from emage_agent.adapters.ui.page import Page, Parts
from emage_agent.adapters.ui.runs import UI_DIR, RetryNotes, Studio

UPLOAD_CACHE = (600, 3600)  # every 10 minutes, Gradio deletes uploads and copies older than an hour
CSS = """
.emage-title {margin-bottom: 0}
#status textarea {font-size: 0.95em}
#steps .grid-container {display: flex !important; flex-wrap: nowrap; overflow-x: auto; gap: 8px}
#steps .thumbnail-item {flex: 0 0 128px; height: 128px}
#steps .caption-label, #sessions .caption-label {white-space: normal; overflow: visible; text-overflow: clip;
  max-width: none; font-size: 12px; line-height: 1.25}
#sessions .grid-container {grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)) !important}
#chart svg {max-height: 200px}
@media (max-width: 640px) {
  .emage-intro {display: none}
  #image {height: 260px !important} #image img {max-height: 230px}
  #steps .thumbnail-item {flex-basis: 104px; height: 104px}
}
"""
INTRO = (
    "Write a prompt and press **Run**: EMage makes the image, has it judged, and repairs it step by step. "
    "Pick a step to see its issues and why it ran; paint on the image and write **Feedback** to steer the next repair."
)
PUBLIC = {"concurrency_limit": None, "show_progress": "hidden"}
PRIVATE = {"api_visibility": "private", "show_progress": "hidden"}


def build(studio: Studio, defaults: dict[str, Any] | None = None) -> gr.Blocks:
    """The page: prompt on top, then the image and its steps, then steering; options folded away."""
    return layout(studio, defaults)[0]


def layout(studio: Studio, defaults: dict[str, Any] | None = None) -> tuple[gr.Blocks, Page]:
    """The page and its handlers (tests call the handlers directly)."""
    page = Page(studio)
    with gr.Blocks(title="EMage", delete_cache=UPLOAD_CACHE) as demo:
        gr.Markdown("# EMage", elem_classes="emage-title")
        gr.Markdown(INTRO, elem_classes="emage-intro")
        with gr.Row(equal_height=False):
            prompt = gr.Textbox(label="Prompt", lines=2, scale=4, placeholder="a red fox on the roof of a blue car")
            with gr.Column(scale=1, min_width=140):
                run_btn = gr.Button("Run", variant="primary")
                stop_btn = gr.Button("Stop", variant="stop", size="sm")
        status = gr.Textbox(label="Status", lines=2, max_lines=6, interactive=False, elem_id="status")
        with gr.Row():
            with gr.Column(scale=3, min_width=320):
                image = gr.Image(label="Image", type="pil", interactive=False, height=420, elem_id="image")
                steps = gr.Gallery(label="Steps (newest first)", columns=8, rows=1, height=190, allow_preview=False,
                                   object_fit="contain", elem_id="steps")  # fmt: skip
                chart = gr.HTML(label="Score over steps", elem_id="chart")
                issues = gr.AnnotatedImage(label="Issues on the image", height=320, elem_id="issues")
                details = gr.Markdown(label="Decision", elem_id="details")
            with gr.Column(scale=2, min_width=320):
                with gr.Row():
                    session_id = gr.Textbox(label="Session id", max_lines=1, scale=3, elem_id="session-id")
                    step = gr.Number(label="Step", precision=0, minimum=1, scale=1, elem_id="step")
                feedback = gr.Textbox(label="Feedback", lines=2, placeholder="what should change, in words")
                editor = gr.ImageEditor(
                    label="Paint where the next repair may change (optional)", type="pil", sources=(),
                    transforms=(), layers=False, height=300, elem_id="mask",
                    brush=gr.Brush(colors=["#ff3b30"], default_size=12, color_mode="fixed"),
                )  # fmt: skip
                send_btn = gr.Button("Send feedback", variant="primary")
                with gr.Row():
                    undo_btn = gr.Button("Undo", size="sm")
                    revert_btn = gr.Button("Revert to this step", size="sm")
                    resume_btn = gr.Button("Resume", size="sm")
                    open_btn = gr.Button("Open session", size="sm")
                with gr.Accordion("Options", open=False):
                    values = controls.defaults(defaults)
                    options = {name: controls.control(name, values[name]) for name in controls.UI_OPTIONS}
                    start_image = gr.File(  # a file, not gr.Image: EMage reads it and says what is wrong with it
                        label="Start from an image (optional)", type="filepath", height=160, elem_id="start-image"
                    )
                downloads = gr.File(label="Downloads: best image, session (zip), report", file_count="multiple",
                                    elem_id="downloads")  # fmt: skip
        history = gr.Gallery(label="History", columns=6, height=260, allow_preview=False, object_fit="contain",
                             elem_id="sessions")  # fmt: skip
        sessions_json = gr.JSON(label="Sessions", visible=False)
        refresh_btn = gr.Button("Refresh history", size="sm")
        numbers, history_ids = gr.State([]), gr.State([])
        page.c = Parts(session_id, numbers, step, status, image, steps, chart, issues, details, downloads, editor,
                       history, history_ids, prompt, options)  # fmt: skip

        c = page.c
        listing = [history, history_ids]
        run_inputs = [prompt, *options.values(), start_image]
        ran = run_btn.click(page.run, run_inputs, c.view, api_name="run", **PUBLIC)
        ran.then(page.history, None, listing, **PRIVATE)
        send_btn.click(page.send, [session_id, feedback, editor], c.view, api_name="send", **PUBLIC).then(
            lambda: "", None, feedback, **PRIVATE
        ).then(page.history, None, listing, **PRIVATE)
        resume_btn.click(page.resume, [session_id], c.view, api_name="resume", **PUBLIC).then(
            page.history, None, listing, **PRIVATE
        )
        stop_btn.click(page.stop, [session_id], [status], api_name="stop", **PUBLIC)
        revert_btn.click(page.revert, [session_id, step], c.view, api_name="revert", **PUBLIC)
        undo_btn.click(page.undo, [session_id], c.view, api_name="undo", **PUBLIC)
        open_btn.click(page.open_session, [session_id], c.opened, api_name="open_session", **PUBLIC)
        refresh_btn.click(page.sessions, None, [sessions_json], api_name="sessions", **PUBLIC).then(
            page.history, None, listing, **PRIVATE
        )
        steps.select(page.pick_step, [session_id, numbers], c.view, **PRIVATE)
        history.select(page.pick_session, [history_ids], c.opened, **PRIVATE)
        demo.load(page.history, None, listing, **PRIVATE)
    return demo, page


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
    RetryNotes(studio).install()
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
