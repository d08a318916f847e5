"""``emage-agent``: a thin adapter over the agent and the session store.

Start-up stays fast: torch, diffusers and google-genai load only inside the commands that
need them. Every exception ends in one place (``outcome``): one scrubbed line on stderr and the
exit code, never a traceback. Exit codes: 0 done, 1 a failure during the run (the session stays
resumable), 2 bad usage, configuration or a damaged session, 3 the session is busy (another
process is writing it), 130 interrupted.
"""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from emage_agent.adapters.endings import CURRENT, resume_line
from emage_agent.adapters.logsink import StderrLog
from emage_agent.core.errors import EmageError, SessionBusy, UserError
from emage_agent.core.redact import install_log_scrubber, one_line

app = typer.Typer(
    name="emage-agent",
    help="Make FLUX.1 images match their prompt: generate, judge with a VLM "
    "(Gemini, an OpenAI-compatible server or a local model), repair, repeat.\n\n"
    'Run a session with: emage-agent "PROMPT" [OPTIONS]',
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
# typer vendors its own click; find its usage-error class without importing a private module.
UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
SUBCOMMANDS = {"run", "resume", "doctor", "chat", "mcp", "tools", "report", "ui", "batch", "bench"}
err = Console(stderr=True, highlight=False)
QUANTIZE_HELP = "none, fp8, int8, nf4 or auto (overrides EMAGE_QUANTIZE)."
OPTION_NAMES = {
    "max_vlm_calls": "--max-vlm-calls",
    "max_gpu_seconds": "--max-gpu-seconds",
    "adaptive_floor": "--adaptive-floor",
    "adaptive_step": "--adaptive-step",
}
ADAPTIVE_HELP = "Lower the threshold while the scores plateau (see --adaptive-floor, --adaptive-step)."
DEMO_HELP = "Try EMage without a GPU or key: tiny random-weight models built on the fly and a scripted judge."
VERBOSE_HELP = "Also show log records and other libraries' warnings on stderr (they are always in emage.log)."
STDERR = StderrLog(verbose=True)  # replaced in ``main``; tests that call commands directly keep stderr as it is
# What a demo session looks like when the user did not choose: small and quick on any CPU.
DEMO_DEFAULTS = {"width": 128, "height": 128, "steps": 4}


def _check_options(options: dict[str, Any]) -> None:
    """Run options checked up front; a bad one is named as its command-line flag."""
    from emage_agent.core.options import parse_options

    try:
        parse_options(**options)
    except UserError as exc:
        field = OPTION_NAMES.get(exc.field or "", f"--{exc.field}")
        raise UserError(str(exc).split(": ", 1)[-1], field=field) from None


def _settings(device: str | None = None, quantize: str | None = None) -> Any:
    from emage_agent.core.settings import load_settings

    overrides = {"device": device, "quantize": quantize}
    return load_settings(**{k: v for k, v in overrides.items() if v})


def _agent(settings: Any, *, quiet: bool, demo: bool = False, root: Path | None = None) -> tuple[Any, Any]:
    from emage_agent.adapters.progress import ProgressView

    view = ProgressView(err, enabled=not quiet)
    if demo:
        from emage_agent.api import demo_agent

        if not quiet:
            err.print("DEMO: building tiny random-weight models (once) and a scripted judge ...", markup=False)
        return demo_agent(root, on_event=view.handle), view
    from emage_agent.api import Agent

    return Agent(settings, on_event=view.handle), view


def _announce(view: Any, iterations: int | None) -> Any:
    """What a command does the moment its session folder exists: name it, and keep the log there."""

    def announce(session: Any) -> None:
        CURRENT.session = session.dir
        STDERR.attach(session.dir)
        view.session(session.dir, iterations=iterations)

    return announce


def _was_demo(session_dir: Path) -> bool:
    """Whether a session was made by ``--demo`` (its summary says so): it continues on the demo's models."""
    try:
        return bool(json.loads((session_dir / "summary.json").read_text(encoding="utf-8")).get("demo"))
    except (OSError, ValueError, AttributeError):
        return False


def _finish(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    out = Console(highlight=False, soft_wrap=True)  # paths stay on one line, ready to copy
    where = Path(summary["session_dir"])
    rows = [
        ("Stopped", summary["stopped_because"]),
        ("Best score", f"{summary['satisfaction_score']} (step {summary['best_step']})"),
        ("Iterations", f"{summary.get('iterations')} ({summary.get('steps')} steps)"),
        ("Best image", summary["final_image"]),
        ("Report", str(where / "report.html")),
        ("Session", f"{where}  (continue it with: {resume_line(where)})"),
    ]
    if summary.get("demo"):
        rows.insert(0, ("DEMO", "tiny random-weight models and a scripted judge: the flow is real, the images are not"))
    for label, value in rows:
        out.print(f"{label}: {value}", markup=False)


@app.command("run", help="Run a session for PROMPT (the default command).")
def run_command(
    prompt: Annotated[str, typer.Argument(help="What the image should show.")],
    iterations: Annotated[int, typer.Option(help="Repair iterations after the first image.")] = 3,
    threshold: Annotated[float, typer.Option(help="Stop when the satisfaction score reaches this.")] = 0.8,
    seed: Annotated[int | None, typer.Option(help="Seed of the first image.")] = None,
    width: Annotated[int, typer.Option(help="Width, a multiple of 16.")] = 1024,
    height: Annotated[int, typer.Option(help="Height, a multiple of 16.")] = 1024,
    steps: Annotated[int | None, typer.Option(help="Denoising steps (default: the model card's).")] = None,
    guidance: Annotated[float | None, typer.Option(help="Guidance (default: the model card's).")] = None,
    out: Annotated[Path, typer.Option(help="Parent directory for sessions.")] = Path("emage-sessions"),
    planner: Annotated[
        str,
        typer.Option(help="vlm or gemini (the VLM plans by function calling) or selector (rules)."),
    ] = "gemini",
    max_vlm_calls: Annotated[int | None, typer.Option(help="Budget of VLM calls.")] = None,
    max_gpu_seconds: Annotated[float | None, typer.Option(help="Budget of tool seconds.")] = None,
    adaptive_threshold: Annotated[bool, typer.Option("--adaptive-threshold", help=ADAPTIVE_HELP)] = False,
    adaptive_floor: Annotated[float | None, typer.Option(help="Lowest adaptive threshold (default 0.6).")] = None,
    adaptive_step: Annotated[float | None, typer.Option(help="Adaptive threshold step (default 0.05).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cuda or cpu (overrides EMAGE_DEVICE).")] = None,
    quantize: Annotated[str | None, typer.Option(help=QUANTIZE_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the summary as one JSON object.")] = False,
    image: Annotated[Path | None, typer.Option(help="Start from this picture instead of generating one.")] = None,
    mask: Annotated[Path | None, typer.Option(help="With --image: repairs change only its white region.")] = None,
    candidates: Annotated[int, typer.Option(help="First images and variants per repair; the best is kept.")] = 1,
    demo: Annotated[bool, typer.Option("--demo", help=DEMO_HELP)] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help=VERBOSE_HELP)] = False,
) -> None:
    if demo:  # the demo's own small size where the user kept the defaults
        width, height = (
            (DEMO_DEFAULTS["width"], DEMO_DEFAULTS["height"]) if (width, height) == (1024, 1024) else (width, height)
        )
        steps = steps if steps is not None else DEMO_DEFAULTS["steps"]
    options = dict(
        iterations=iterations,
        threshold=threshold,
        seed=seed,
        width=width,
        height=height,
        steps=steps,
        guidance=guidance,
        planner=planner,
        max_vlm_calls=max_vlm_calls,
        max_gpu_seconds=max_gpu_seconds,
        adaptive_threshold=adaptive_threshold,
        adaptive_floor=adaptive_floor,
        adaptive_step=adaptive_step,
        candidates=candidates,
    )
    if not prompt.strip():
        raise UserError("the prompt is empty; say what the image should show", field="PROMPT")
    _check_options(options)
    settings = None if demo else _settings(device, quantize)
    agent, view = _agent(settings, quiet=as_json, demo=demo, root=out)
    agent.root = out
    agent.check_ready()
    with view:
        try:
            session = agent.start(prompt, image=image, mask=mask, announce=_announce(view, iterations), **options)
        except UserError as exc:
            if exc.field != "session root":
                raise
            raise UserError(str(exc).split(": ", 1)[-1], field="--out") from None
        summary = session.run()
    _finish(summary, as_json)


@app.command("resume", help="Continue a stopped or interrupted session from its last committed step.")
def resume_command(
    session_dir: Annotated[Path, typer.Argument(help="The session's directory.")],
    iterations: Annotated[int | None, typer.Option(help="Run this many more iterations.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cuda or cpu.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the summary as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help=VERBOSE_HELP)] = False,
) -> None:
    demo = _was_demo(session_dir)
    settings = None if demo else _settings(device)
    agent, view = _agent(settings, quiet=as_json, demo=demo, root=session_dir.parent)
    session = agent.open(session_dir)  # a wrong folder is named before any other check
    agent.check_ready()
    with view:
        _announce(view, iterations or session.store.info.options.get("iterations"))(session)
        summary = session.run(iterations)
    _finish(summary, as_json)


@app.command("doctor", help="Check the GPU, the keys and the models, and say what is missing.")
def doctor_command(
    vram: Annotated[float | None, typer.Option(help="Plan memory for a card with this many GiB.")] = None,
    quantize: Annotated[str | None, typer.Option(help=QUANTIZE_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks and the memory plan as JSON.")] = False,
) -> None:
    from emage_agent.adapters.doctor import run_doctor

    if vram is not None and vram <= 0:
        raise UserError("give the card's memory in GiB, e.g. --vram 24", field="--vram")
    settings = _settings(quantize=quantize)
    code = run_doctor(settings, Console(highlight=False), vram_gb=vram, quantize=quantize, as_json=as_json)
    raise typer.Exit(code)


@app.command("tools", help="Print the tool schemas for other agent systems.")
def tools_command(
    fmt: Annotated[str, typer.Option("--format", help="gemini, openai, mcp or json.")] = "json",
) -> None:
    from emage_agent.core.tools import export_tools

    sys.stdout.write(json.dumps(export_tools(fmt), indent=2) + "\n")  # type: ignore[arg-type]


@app.command("report", help="Rebuild a session's report.html.")
def report_command(session_dir: Annotated[Path, typer.Argument(help="The session's directory.")]) -> None:
    from emage_agent.session import SessionStore
    from emage_agent.session.report import write_report

    store = SessionStore.open(session_dir)
    try:
        Console(highlight=False).print(str(write_report(store)))
    finally:
        store.close()


@app.command("chat", help="Refine an image over several turns: feedback, undo, revert N, history, more, quit.")
def chat_command(
    prompt: Annotated[str | None, typer.Argument(help="Start a new session with this prompt.")] = None,
    session_dir: Annotated[Path | None, typer.Option("--session", help="Continue this session (any way made).")] = None,
    out: Annotated[Path, typer.Option(help="Parent directory for new sessions.")] = Path("emage-sessions"),
    iterations: Annotated[int | None, typer.Option(help="Repair iterations after the first image.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Stop when the satisfaction score reaches this.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the first image.")] = None,
    width: Annotated[int | None, typer.Option(help="Width, a multiple of 16 (default 1024).")] = None,
    height: Annotated[int | None, typer.Option(help="Height, a multiple of 16 (default 1024).")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps (default: the model card's).")] = None,
    guidance: Annotated[float | None, typer.Option(help="Guidance (default: the model card's).")] = None,
    planner: Annotated[str | None, typer.Option(help="vlm or gemini (function calling) or selector (rules).")] = None,
    max_vlm_calls: Annotated[int | None, typer.Option(help="Budget of VLM calls.")] = None,
    max_gpu_seconds: Annotated[float | None, typer.Option(help="Budget of tool seconds.")] = None,
    adaptive_threshold: Annotated[bool, typer.Option("--adaptive-threshold", help=ADAPTIVE_HELP)] = False,
    adaptive_floor: Annotated[float | None, typer.Option(help="Lowest adaptive threshold (default 0.6).")] = None,
    adaptive_step: Annotated[float | None, typer.Option(help="Adaptive threshold step (default 0.05).")] = None,
    candidates: Annotated[int | None, typer.Option(help="First images and variants per repair.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cuda or cpu.")] = None,
    quantize: Annotated[str | None, typer.Option(help=QUANTIZE_HELP)] = None,
    image: Annotated[Path | None, typer.Option(help="Start from this picture instead of generating one.")] = None,
    mask: Annotated[Path | None, typer.Option(help="With --image: repairs change only its white region.")] = None,
    demo: Annotated[bool, typer.Option("--demo", help=DEMO_HELP)] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help=VERBOSE_HELP)] = False,
) -> None:
    from emage_agent.adapters.chat import run_chat

    if prompt is None and session_dir is None:
        raise UserError("give a PROMPT to start or --session DIR to continue", field="chat")
    if session_dir is not None and (image is not None or mask is not None):
        raise UserError("a continuing session keeps its picture; start a new chat for another", field="--image")
    options = dict(
        iterations=iterations, threshold=threshold, seed=seed, width=width, height=height, steps=steps,
        guidance=guidance, planner=planner, max_vlm_calls=max_vlm_calls, max_gpu_seconds=max_gpu_seconds,
        adaptive_threshold=adaptive_threshold or None, adaptive_floor=adaptive_floor, adaptive_step=adaptive_step,
        candidates=candidates,
    )  # fmt: skip
    options = {k: v for k, v in options.items() if v is not None}
    if session_dir is not None:
        demo = demo or _was_demo(session_dir)
    elif demo:
        options = {**DEMO_DEFAULTS, **options}
    _check_options(options)
    settings = None if demo else _settings(device, quantize)
    agent, view = _agent(settings, quiet=False, demo=demo, root=out)
    agent.root = out
    agent.on_event = None  # the chat shows events on the view itself (once)
    agent.check_ready()
    start = {"image": image, "mask": mask} if session_dir is None else {}
    run_chat(
        agent, prompt, session_dir, console=Console(highlight=False), view=view,
        announce=_announce(view, None), **start, **options,
    )  # fmt: skip


@app.command("bench", help="Compare single-shot, best-of-N and EMage on a prompt set; writes a table and gallery.")
def bench_command(
    prompts: Annotated[Path, typer.Argument(help="JSONL prompts (EMage's or GenEval metadata).")],
    out: Annotated[Path, typer.Option(help="Directory for the table, the gallery and the sessions.")] = Path("bench"),
    modes: Annotated[str, typer.Option(help="Comma-separated: single, best_of_n, emage.")] = "single,best_of_n,emage",
    n: Annotated[int, typer.Option(help="Images for best_of_n (without --equal-compute).")] = 4,
    iterations: Annotated[int, typer.Option(help="EMage's repair iterations.")] = 3,
    threshold: Annotated[float, typer.Option(help="Success threshold of the judge's score.")] = 0.8,
    seed: Annotated[int, typer.Option(help="Base seed; prompt i uses seed + 1000 i in every mode.")] = 0,
    equal_compute: Annotated[bool, typer.Option(help="Give best_of_n the GPU seconds EMage used.")] = False,
    limit: Annotated[int | None, typer.Option(help="Only the first N prompts.")] = None,
    width: Annotated[int, typer.Option(help="Width, a multiple of 16.")] = 1024,
    height: Annotated[int, typer.Option(help="Height, a multiple of 16.")] = 1024,
    steps: Annotated[int | None, typer.Option(help="Denoising steps (default: the model card's).")] = None,
    planner: Annotated[str, typer.Option(help="gemini or selector, for the emage mode.")] = "gemini",
    device: Annotated[str | None, typer.Option(help="auto, cuda or cpu.")] = None,
) -> None:
    from emage_agent.adapters.bench import Bench, load_prompts, parse_modes

    chosen = parse_modes(modes)
    if not 1 <= n <= 8:
        raise UserError(f"--n is {n}; it must be in [1, 8]", field="--n")
    records = load_prompts(prompts)[:limit]
    settings = _settings(device)
    agent, view = _agent(settings, quiet=False)
    agent.on_event = lambda e: view.handle(e) if e.kind in ("diffusion", "wait", "step") else None  # bars only
    agent.check_ready()
    options = {"width": width, "height": height, "steps": steps, "planner": planner}
    bench = Bench(
        agent, out, modes=chosen, n=n, iterations=iterations, threshold=threshold, seed=seed,
        equal_compute=equal_compute, session_options={k: v for k, v in options.items() if v is not None},
    )  # fmt: skip
    bench.say = lambda line: view.line("bench", line)
    with view:
        rows = bench.run(records)
    table = Console(highlight=False, soft_wrap=True)
    for o in bench.overall(rows):
        ci = o["mean_score_ci95"]
        interval = f" (95% CI {ci[0]}-{ci[1]})" if ci else ""
        table.print(
            f"{o['mode']:<10} mean score {o['mean_score']}{interval}  success {o['success_rate']}  "
            f"GPU {o['gpu_seconds']} s  VLM calls {o['vlm_calls']}",
            markup=False,
        )
    table.print(f"model loading (warm-up, counted in no mode): {bench.loading_seconds} GPU s", markup=False)
    table.print(f"table: {out / 'results.md'}  gallery: {out / 'gallery.html'}", markup=False)


@app.command("mcp", help="Serve EMage's tools over the Model Context Protocol (stdio, or HTTP with --http).")
def mcp_command(
    http: Annotated[bool, typer.Option("--http", help="Serve streamable HTTP instead of stdio.")] = False,
    host: Annotated[str, typer.Option(help="HTTP host.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8765,
) -> None:
    from emage_agent.adapters.mcp.server import main as serve

    serve(http=http, host=host, port=port)


@app.command("ui", help="Serve the web UI: run, watch and steer sessions in a browser (the ui extra).")
def ui_command(
    out: Annotated[Path, typer.Option(help="Folder of sessions the UI starts and lists.")] = Path("emage-sessions"),
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --auth.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 7860,
    auth: Annotated[
        str | None, typer.Option(help="USER:PASS required to sign in (or set EMAGE_UI_AUTH).", show_default=False)
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cuda or cpu.")] = None,
    demo: Annotated[bool, typer.Option("--demo", help=DEMO_HELP)] = False,
) -> None:
    import importlib.util
    import os

    from emage_agent.adapters.ui import resolve_auth

    credentials = resolve_auth(host, auth, os.environ.get("EMAGE_UI_AUTH"))
    if importlib.util.find_spec("gradio") is None:
        raise UserError("the web UI needs Gradio; install it with: pip install -e '.[ui]'", field="ui")
    from emage_agent.adapters.ui import Studio
    from emage_agent.adapters.ui.app import serve

    agent, _view = _agent(None if demo else _settings(device), quiet=True, demo=demo, root=out)
    agent.check_ready()
    studio = Studio(agent, out)
    label = "EMage UI (DEMO: tiny random models, scripted judge)" if demo else "EMage UI"
    err.print(f"{label} on http://{host}:{port} (sessions in {studio.root}); Ctrl-C stops it", markup=False)
    serve(studio, host=host, port=port, auth=credentials, allowed_hosts=agent.settings.ui_allowed_hosts)


@app.command("batch", help="Run every prompt of a text file (one a line) or JSONL file as its own session.")
def batch_command(
    prompts: Annotated[Path, typer.Argument(help="Text (one prompt a line) or JSONL ({id, prompt, options}).")],
    out: Annotated[Path, typer.Option(help="The batch folder: sessions, results.jsonl/csv, index.html.")],
    concurrency: Annotated[int, typer.Option(help="Sessions at once (they share the GPU queue).")] = 1,
    retry_failed: Annotated[bool, typer.Option(help="Run failed items again on a re-run.")] = True,
    ray: Annotated[
        str | None, typer.Option(help="Run the GPU work on Ray: auto, local or an address (EMAGE_RAY_ADDRESS).")
    ] = None,
    ray_actors: Annotated[int | None, typer.Option(help="GPU actors to start (default: one per GPU).")] = None,
    iterations: Annotated[int | None, typer.Option(help="Repair iterations (items may override).")] = None,
    threshold: Annotated[float | None, typer.Option(help="Stop score (items may override).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of each first image.")] = None,
    width: Annotated[int | None, typer.Option(help="Width, a multiple of 16.")] = None,
    height: Annotated[int | None, typer.Option(help="Height, a multiple of 16.")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps.")] = None,
    guidance: Annotated[float | None, typer.Option(help="Guidance.")] = None,
    planner: Annotated[str | None, typer.Option(help="gemini or selector.")] = None,
    max_vlm_calls: Annotated[int | None, typer.Option(help="Gemini calls per item.")] = None,
    max_gpu_seconds: Annotated[float | None, typer.Option(help="Tool seconds per item.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cuda or cpu.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per finished item on stdout.")] = False,
) -> None:
    from emage_agent.adapters.batch import BatchOptions, run_batch

    defaults = dict(
        iterations=iterations,
        threshold=threshold,
        seed=seed,
        width=width,
        height=height,
        steps=steps,
        guidance=guidance,
        planner=planner,
        max_vlm_calls=max_vlm_calls,
        max_gpu_seconds=max_gpu_seconds,
    )
    defaults = {k: v for k, v in defaults.items() if v is not None}
    _check_options(defaults)
    settings = _settings(device)
    address = (ray or settings.ray_address or "auto") if ray is not None or settings.ray_address else None
    opts = BatchOptions(
        prompts=prompts,
        out=out,
        defaults=defaults,
        concurrency=concurrency,
        retry_failed=retry_failed,
        ray=address,
        ray_actors=ray_actors,
        as_json=as_json,
    )
    raise typer.Exit(run_batch(settings, opts, err))


def _bare_ray(args: list[str]) -> list[str]:
    """``batch --ray`` without an address means EMAGE_RAY_ADDRESS or auto: give the option its empty value."""
    if not args or args[0] != "batch":
        return args
    fixed = list(args)
    for i, arg in enumerate(fixed):
        nxt = fixed[i + 1] if i + 1 < len(fixed) else None
        if arg == "--ray" and (nxt is None or nxt.startswith("-") or Path(nxt).is_file()):
            fixed[i] = "--ray="
    return fixed


# I/O errors that name something the user gave or can fix (a path, a permission), not a failure of the run.
USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT}


def outcome(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one line (scrubbed, no traceback) for anything that escapes a command."""
    if isinstance(exc, typer.Exit):
        return int(exc.exit_code or 0), ""
    if isinstance(exc, UsageError):
        return 2, f"error: {exc.format_message()}"  # type: ignore[attr-defined]
    if isinstance(exc, typer.Abort | KeyboardInterrupt):
        return 130, f"interrupted {CURRENT.hint()}"
    if isinstance(exc, SessionBusy):
        return 3, f"busy: {exc}"
    if isinstance(exc, UserError):
        return 2, f"error: {exc}"
    if isinstance(exc, EmageError):
        return 1, f"failed: {exc} {CURRENT.hint()}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return (
            1,
            f"failed: the disk is full ({exc.filename or 'while writing'}); free space, then resume {CURRENT.hint()}",
        )
    if isinstance(exc, OSError) and exc.errno in USER_ERRNOS:
        where = f" {exc.filename}" if exc.filename else ""
        return 2, f"error: cannot use{where}: {exc.strerror or exc}"
    if isinstance(exc, sqlite3.DatabaseError):
        return 2, f"error: the session database is damaged ({exc}); it cannot be continued as is"
    return 1, f"failed: unexpected {type(exc).__name__}: {exc} {CURRENT.hint()}"


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``emage-agent "PROMPT"`` is ``emage-agent run "PROMPT"``."""
    global STDERR
    install_log_scrubber()
    logging.captureWarnings(True)
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in SUBCOMMANDS and args[0] not in ("--help", "-h"):
        args.insert(0, "run")
    args = _bare_ray(args)
    CURRENT.session, CURRENT.as_json = None, "--json" in args and args[0] in ("run", "resume")
    if argv is None and args and args[0] in ("run", "resume", "chat", "bench"):
        STDERR = StderrLog(verbose="--verbose" in args).start()
        err.file = STDERR.terminal
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="emage-agent", standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C into a plain 130: it is still an interruption to report
            raise KeyboardInterrupt
    except (Exception, KeyboardInterrupt) as exc:  # the one place: every error becomes one line and a code
        code, line = outcome(exc)
        line = one_line(line)
        if line:
            err.print(f"emage-agent: {line}", markup=False, soft_wrap=True)
        if CURRENT.as_json and code:
            sys.stdout.write(json.dumps(CURRENT.as_object(code, line)) + "\n")
    if argv is None:
        sys.exit(code if isinstance(code, int) else 0)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    main()
