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

from emage_agent.adapters.flags import flag, option_flags
from emage_agent.core.errors import EmageError, SessionBusy, UserError
from emage_agent.core.options import FIXED_OPTIONS
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
SUBCOMMANDS = {"run", "resume", "doctor", "chat", "mcp", "tools", "report", "ui", "batch", "bench", "serve"}
err = Console(stderr=True, highlight=False)
QUANTIZE_HELP = "none, fp8, int8, nf4 or auto (overrides EMAGE_QUANTIZE)."
COMPILE_HELP = "off, regional, full, max-autotune or auto (overrides EMAGE_COMPILE)."


def _check_options(options: dict[str, Any]) -> None:
    """Run options checked up front; a bad one is named as its command-line flag."""
    from emage_agent.core.options import parse_options

    try:
        parse_options(**options)
    except UserError as exc:
        field = flag(exc.field or "options")
        raise UserError(str(exc).split(": ", 1)[-1], field=field) from None


def _settings(device: str | None = None, quantize: str | None = None, compile_mode: str | None = None) -> Any:
    from emage_agent.core.settings import load_settings

    overrides = {"device": device, "quantize": quantize, "compile": compile_mode}
    return load_settings(**{k: v for k, v in overrides.items() if v})


def _agent(settings: Any, *, quiet: bool) -> tuple[Any, Any]:
    from emage_agent.adapters.progress import ProgressView
    from emage_agent.api import Agent

    view = ProgressView(err, enabled=not quiet)
    return Agent(settings, on_event=view.handle), view


def _finish(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    out = Console(highlight=False, soft_wrap=True)  # paths stay on one line, ready to copy
    for label, value in (
        ("Stopped", summary["stopped_because"]),
        ("Best score", f"{summary['satisfaction_score']} (step {summary['best_step']})"),
        ("Best image", summary["final_image"]),
        ("Session", f"{summary['session_dir']}  (report.html inside; `emage-agent resume DIR` continues it)"),
    ):
        out.print(f"{label}: {value}", markup=False)


@app.command("run", help="Run a session for PROMPT (the default command).")
@option_flags()  # --iterations, --threshold, --seed, ... from the options model
def run_command(
    prompt: Annotated[str, typer.Argument(help="What the image should show.")],
    out: Annotated[Path, typer.Option(help="Parent directory for sessions.")] = Path("emage-sessions"),
    device: Annotated[str | None, typer.Option(help="auto, cuda or cpu (overrides EMAGE_DEVICE).")] = None,
    quantize: Annotated[str | None, typer.Option(help=QUANTIZE_HELP)] = None,
    compile_mode: Annotated[str | None, typer.Option("--compile", help=COMPILE_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the summary as one JSON object.")] = False,
    image: Annotated[Path | None, typer.Option(help="Start from this picture instead of generating one.")] = None,
    mask: Annotated[Path | None, typer.Option(help="With --image: repairs change only its white region.")] = None,
    **options: Any,
) -> None:
    if not prompt.strip():
        raise UserError("the prompt is empty; say what the image should show", field="PROMPT")
    _check_options(options)
    settings = _settings(device, quantize, compile_mode)
    agent, view = _agent(settings, quiet=as_json)
    agent.root = out
    agent.check_ready()
    with view:
        try:
            session = agent.start(prompt, image=image, mask=mask, **options)
        except UserError as exc:
            if exc.field != "session root":
                raise
            raise UserError(str(exc).split(": ", 1)[-1], field="--out") from None
        view.session(session.dir, iterations=options["iterations"])
        summary = session.run()
    _finish(summary, as_json)


@app.command("resume", help="Continue a stopped or interrupted session from its last committed step.")
@option_flags(exclude=tuple(FIXED_OPTIONS), defaults=False)  # what a continuing session may change
def resume_command(
    session_dir: Annotated[Path, typer.Argument(help="The session's directory.")],
    iterations: Annotated[int | None, typer.Option(help="Run this many more iterations.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cuda or cpu.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the summary as JSON.")] = False,
    **options: Any,
) -> None:
    options = {k: v for k, v in options.items() if v is not None}
    _check_options(options)
    settings = _settings(device)
    agent, view = _agent(settings, quiet=as_json)
    agent.check_ready()
    session = agent.open(session_dir)
    if options:
        session.configure(**options)  # they apply to the steps this resume runs
    with view:
        view.session(session.dir, iterations=iterations or session.store.info.options.get("iterations"))
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
    from emage_agent.core.tools import available_tools, export_tools

    names = available_tools(_settings())  # a tool the settings switch off is not offered
    sys.stdout.write(json.dumps(export_tools(fmt, names), indent=2) + "\n")  # type: ignore[arg-type]


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
@option_flags(defaults=False)  # a continuing session takes only what is given (size and seed are refused)
def chat_command(
    prompt: Annotated[str | None, typer.Argument(help="Start a new session with this prompt.")] = None,
    session_dir: Annotated[Path | None, typer.Option("--session", help="Continue this session.")] = None,
    out: Annotated[Path, typer.Option(help="Parent directory for new sessions.")] = Path("emage-sessions"),
    device: Annotated[str | None, typer.Option(help="auto, cuda or cpu.")] = None,
    image: Annotated[Path | None, typer.Option(help="Start from this picture instead of generating one.")] = None,
    mask: Annotated[Path | None, typer.Option(help="With --image: repairs change only its white region.")] = None,
    **options: Any,
) -> None:
    from emage_agent.adapters.chat import run_chat

    if prompt is None and session_dir is None:
        raise UserError("give a PROMPT to start or --session DIR to continue", field="chat")
    settings = _settings(device)
    agent, _view = _agent(settings, quiet=True)
    agent.root = out
    agent.check_ready()
    options = {k: v for k, v in options.items() if v is not None}  # only what was asked for
    _check_options(options)
    run_chat(agent, prompt, session_dir, console=Console(highlight=False), image=image, mask=mask, **options)


@app.command("bench", help="Compare single-shot, best-of-N and EMage on a prompt set; writes a table and gallery.")
@option_flags(exclude=("candidates",), defaults=False)  # best_of_n sets the candidates; the rest from the model
def bench_command(
    prompts: Annotated[Path, typer.Argument(help="Prompts: text (one a line), JSONL items or GenEval metadata.")],
    out: Annotated[Path, typer.Option(help="Directory for the table, the gallery and the sessions.")] = Path("bench"),
    modes: Annotated[str, typer.Option(help="Comma-separated: single, best_of_n, emage.")] = "single,best_of_n,emage",
    n: Annotated[int, typer.Option(help="Images for best_of_n (without --equal-compute).")] = 4,
    iterations: Annotated[int, typer.Option(help="EMage's repair iterations.")] = 3,
    threshold: Annotated[float, typer.Option(help="Success threshold of the judge's score.")] = 0.8,
    seed: Annotated[int, typer.Option(help="Base seed; prompt i uses seed + 1000 i in every mode.")] = 0,
    equal_compute: Annotated[bool, typer.Option(help="Give best_of_n the GPU seconds EMage used.")] = False,
    limit: Annotated[int | None, typer.Option(help="Only the first N prompts.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cuda or cpu.")] = None,
    **options: Any,
) -> None:
    from emage_agent.adapters.bench import Bench, load_prompts, parse_modes

    chosen = parse_modes(modes)
    if not 1 <= n <= 8:
        raise UserError(f"--n is {n}; it must be in [1, 8]", field="--n")
    records = load_prompts(prompts)[:limit]
    settings = _settings(device)
    agent, _view = _agent(settings, quiet=True)
    agent.check_ready()
    options = {k: v for k, v in options.items() if v is not None}
    _check_options({"iterations": iterations, "threshold": threshold, "seed": seed, **options})
    bench = Bench(
        agent, out, modes=chosen, n=n, iterations=iterations, threshold=threshold, seed=seed,
        equal_compute=equal_compute, session_options=options,
    )  # fmt: skip
    rows = bench.run(records)
    for row in bench.overall(rows):
        print(json.dumps(row))
    print(f"table: {out / 'results.md'}  gallery: {out / 'gallery.html'}")


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
) -> None:
    import importlib.util
    import os

    from emage_agent.adapters.ui import resolve_auth

    credentials = resolve_auth(host, auth, os.environ.get("EMAGE_UI_AUTH"))
    if importlib.util.find_spec("gradio") is None:
        raise UserError("the web UI needs Gradio; install it with: pip install -e '.[ui]'", field="ui")
    from emage_agent.adapters.ui import Studio
    from emage_agent.adapters.ui.app import serve

    settings = _settings(device)
    agent, _view = _agent(settings, quiet=True)
    agent.check_ready()
    studio = Studio(agent, out)
    err.print(f"EMage UI on http://{host}:{port} (sessions in {studio.root}); Ctrl-C stops it", markup=False)
    serve(studio, host=host, port=port, auth=credentials, allowed_hosts=settings.ui_allowed_hosts)


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
    planner: Annotated[str | None, typer.Option(help="vlm or selector (gemini is read as vlm).")] = None,
    max_vlm_calls: Annotated[int | None, typer.Option(help="VLM calls per item.")] = None,
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


@app.command("serve", help="Serve an OpenAI-compatible images API and a session API over HTTP (the serve extra).")
def serve_command(
    out: Annotated[Path, typer.Option(help="Folder of the sessions the service runs.")] = Path("emage-sessions"),
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --auth.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    auth: Annotated[
        str | None, typer.Option(help="Token clients send as their API key (or EMAGE_SERVE_TOKEN).", show_default=False)
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Sessions run at once (they share the GPU queue).")] = 2,
    queue: Annotated[int, typer.Option(help="Runs that may wait beyond those; more get 429.")] = 16,
    ray: Annotated[
        str | None, typer.Option(help="Run the GPU work on Ray: auto, local or an address (EMAGE_RAY_ADDRESS).")
    ] = None,
    ray_actors: Annotated[int | None, typer.Option(help="GPU actors to start (default: one per GPU).")] = None,
    allowed_host: Annotated[
        list[str] | None, typer.Option(help="A host name clients use to reach the server (repeatable).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cuda or cpu.")] = None,
) -> None:
    import importlib.util
    import os

    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise UserError("serve needs FastAPI and uvicorn; install them with: pip install 'emage-agent[serve]'")
    from emage_agent.adapters.serve.main import ServeOptions, run_serve

    settings = _settings(device)
    address = (ray or settings.ray_address or "auto") if ray is not None or settings.ray_address else None
    fields = dict(out=out, host=host, port=port, token=auth or os.environ.get("EMAGE_SERVE_TOKEN") or None,
                  concurrency=concurrency, queue=queue, ray=address, ray_actors=ray_actors,
                  allowed_hosts=allowed_host or [])  # fmt: skip
    try:
        opts = ServeOptions(**fields)
    except ValueError as exc:
        first = exc.errors()[0]  # type: ignore[attr-defined]
        raise UserError(
            first["msg"],
            field="--" + {"token": "auth"}.get(str(first["loc"][0]), str(first["loc"][0])).replace("_", "-"),
        ) from None
    run_serve(settings, opts)


def _bare_ray(args: list[str]) -> list[str]:
    """``batch --ray`` without an address means EMAGE_RAY_ADDRESS or auto: give the option its empty value."""
    if not args or args[0] not in ("batch", "serve"):
        return args
    fixed = list(args)
    for i, arg in enumerate(fixed):
        nxt = fixed[i + 1] if i + 1 < len(fixed) else None
        if arg == "--ray" and (nxt is None or nxt.startswith("-") or Path(nxt).is_file()):
            fixed[i] = "--ray="
    return fixed


RESUME_HINT = "(the session is saved; `emage-agent resume DIR` continues it)"
# I/O errors that name something the user gave or can fix (a path, a permission), not a failure of the run.
USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT}


def outcome(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one line (scrubbed, no traceback) for anything that escapes a command."""
    if isinstance(exc, typer.Exit):
        return int(exc.exit_code or 0), ""
    if isinstance(exc, UsageError):
        return 2, f"error: {exc.format_message()}"  # type: ignore[attr-defined]
    if isinstance(exc, typer.Abort | KeyboardInterrupt):
        return 130, "interrupted; the session is saved and can be resumed"
    if isinstance(exc, SessionBusy):
        return 3, f"busy: {exc}"
    if isinstance(exc, UserError):
        return 2, f"error: {exc}"
    if isinstance(exc, EmageError):
        return 1, f"failed: {exc} {RESUME_HINT}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return 1, f"failed: the disk is full ({exc.filename or 'while writing'}); free space, then resume {RESUME_HINT}"
    if isinstance(exc, OSError) and exc.errno in USER_ERRNOS:
        where = f" {exc.filename}" if exc.filename else ""
        return 2, f"error: cannot use{where}: {exc.strerror or exc}"
    if isinstance(exc, sqlite3.DatabaseError):
        return 2, f"error: the session database is damaged ({exc}); it cannot be continued as is"
    return 1, f"failed: unexpected {type(exc).__name__}: {exc} {RESUME_HINT}"


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``emage-agent "PROMPT"`` is ``emage-agent run "PROMPT"``."""
    install_log_scrubber()
    logging.captureWarnings(True)
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in SUBCOMMANDS and args[0] not in ("--help", "-h"):
        args.insert(0, "run")
    args = _bare_ray(args)
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="emage-agent", standalone_mode=False)
    except (Exception, KeyboardInterrupt) as exc:  # the one place: every error becomes one line and a code
        code, line = outcome(exc)
        if line:
            err.print(f"emage-agent: {one_line(line)}", markup=False, soft_wrap=True)
    if argv is None:
        sys.exit(code if isinstance(code, int) else 0)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    main()
