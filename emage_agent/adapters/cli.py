"""``emage-agent``: a thin adapter over the agent and the session store.

Start-up stays fast: torch, diffusers and google-genai load only inside the commands that
need them. Every exception ends in one place (``outcome``): one scrubbed line on stderr and the
exit code, never a traceback. Exit codes: 0 done, 1 a failure during the run (the session stays
resumable; a full disk), 2 bad usage, configuration or a damaged session, 3 the session is busy (another
process is writing it or holds its database), 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from emage_agent.adapters.endings import CURRENT, resume_line
from emage_agent.adapters.flags import flag, option_flags
from emage_agent.adapters.logsink import StderrLog
from emage_agent.adapters.outcome import interrupted, outcome, signals, terminate
from emage_agent.core.errors import UserError
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
SUBCOMMANDS = {"run", "resume", "doctor", "chat", "mcp", "tools", "report", "ui", "batch", "bench", "serve"}
err = Console(stderr=True, highlight=False)
QUANTIZE_HELP = "none, fp8, int8, nf4 or auto (overrides EMAGE_QUANTIZE)."
COMPILE_HELP = "off, regional, full, max-autotune or auto (overrides EMAGE_COMPILE)."
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
        field = flag(exc.field or "options")
        raise UserError(str(exc).split(": ", 1)[-1], field=field) from None


def _settings(device: str | None = None, quantize: str | None = None, compile_mode: str | None = None) -> Any:
    from emage_agent.core.settings import load_settings

    overrides = {"device": device, "quantize": quantize, "compile": compile_mode}
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
    demo: Annotated[bool, typer.Option("--demo", help=DEMO_HELP)] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help=VERBOSE_HELP)] = False,
    **options: Any,
) -> None:
    if demo:  # the demo's own small size where the user kept the defaults
        if (options.get("width"), options.get("height")) == (1024, 1024):
            options["width"], options["height"] = DEMO_DEFAULTS["width"], DEMO_DEFAULTS["height"]
        if options.get("steps") is None:
            options["steps"] = DEMO_DEFAULTS["steps"]
    if not prompt.strip():
        raise UserError("the prompt is empty; say what the image should show", field="PROMPT")
    _check_options(options)
    settings = None if demo else _settings(device, quantize, compile_mode)
    agent, view = _agent(settings, quiet=as_json, demo=demo, root=out)
    agent.root = out
    agent.check_ready()
    with view:
        try:
            session = agent.start(
                prompt, image=image, mask=mask, announce=_announce(view, options["iterations"]), **options
            )
        except UserError as exc:
            if exc.field != "session root":
                raise
            raise UserError(str(exc).split(": ", 1)[-1], field="--out") from None
        summary = session.run()
    _finish(summary, as_json)


@app.command("resume", help="Continue a stopped or interrupted session from its last committed step.")
@option_flags(exclude=tuple(FIXED_OPTIONS), defaults=False)  # what a continuing session may change
def resume_command(
    session_dir: Annotated[Path, typer.Argument(help="The session's directory.")],
    iterations: Annotated[int | None, typer.Option(help="Run this many more iterations.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cuda or cpu.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the summary as JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help=VERBOSE_HELP)] = False,
    **options: Any,
) -> None:
    options = {k: v for k, v in options.items() if v is not None}
    _check_options(options)
    demo = _was_demo(session_dir)
    settings = None if demo else _settings(device)
    agent, view = _agent(settings, quiet=as_json, demo=demo, root=session_dir.parent)
    session = agent.open(session_dir)  # a wrong folder is named before any other check
    agent.check_ready()
    if options:
        session.configure(**options)  # they apply to the steps this resume runs
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
    session_dir: Annotated[Path | None, typer.Option("--session", help="Continue this session (any way made).")] = None,
    out: Annotated[Path, typer.Option(help="Parent directory for new sessions.")] = Path("emage-sessions"),
    device: Annotated[str | None, typer.Option(help="auto, cuda or cpu.")] = None,
    quantize: Annotated[str | None, typer.Option(help=QUANTIZE_HELP)] = None,
    image: Annotated[Path | None, typer.Option(help="Start from this picture instead of generating one.")] = None,
    mask: Annotated[Path | None, typer.Option(help="With --image: repairs change only its white region.")] = None,
    demo: Annotated[bool, typer.Option("--demo", help=DEMO_HELP)] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help=VERBOSE_HELP)] = False,
    **options: Any,
) -> None:
    from emage_agent.adapters.chat import run_chat

    if prompt is None and session_dir is None:
        raise UserError("give a PROMPT to start or --session DIR to continue", field="chat")
    if session_dir is not None and (image is not None or mask is not None):
        raise UserError("a continuing session keeps its picture; start a new chat for another", field="--image")
    options = {k: v for k, v in options.items() if v is not None}  # only what was asked for
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
    agent, view = _agent(settings, quiet=False)
    agent.on_event = lambda e: view.handle(e) if e.kind in ("diffusion", "wait", "step") else None  # bars only
    agent.check_ready()
    options = {k: v for k, v in options.items() if v is not None}
    _check_options({"iterations": iterations, "threshold": threshold, "seed": seed, **options})
    bench = Bench(
        agent, out, modes=chosen, n=n, iterations=iterations, threshold=threshold, seed=seed,
        equal_compute=equal_compute, session_options=options,
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


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``emage-agent "PROMPT"`` is ``emage-agent run "PROMPT"``."""
    global STDERR
    install_log_scrubber()
    logging.captureWarnings(True)
    signals["terminated"] = False
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in SUBCOMMANDS and args[0] not in ("--help", "-h"):
        args.insert(0, "run")
    # SIGTERM ends a session like Ctrl-C; ``serve`` drains its own runs on SIGTERM (uvicorn's handler)
    if threading.current_thread() is threading.main_thread() and (not args or args[0] != "serve"):
        signal.signal(signal.SIGTERM, terminate)
    args = _bare_ray(args)
    CURRENT.session, CURRENT.as_json = None, "--json" in args and args[0] in ("run", "resume")
    if argv is None and args and args[0] in ("run", "resume", "chat", "bench"):
        STDERR = StderrLog(verbose="--verbose" in args).start()
        err.file = STDERR.terminal
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="emage-agent", standalone_mode=False)
        if code == 130:  # typer turned Ctrl-C or SIGTERM into a bare exit code: say what stopped it
            raise interrupted()
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
