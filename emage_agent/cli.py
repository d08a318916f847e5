"""``emage-agent``: a thin adapter over the agent and the session store.

Start-up stays fast: torch, diffusers and google-genai load only inside the commands that
need them. Exit codes: 0 done, 2 bad usage or configuration (one line, no traceback),
1 a failure during the run (the session stays resumable).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from emage_agent.errors import EmageError, ExecutionFailure, UserError

app = typer.Typer(
    name="emage-agent",
    help="Make FLUX.1 images match their prompt: generate, judge with Gemini, repair, repeat.\n\n"
    'Run a session with: emage-agent "PROMPT" [OPTIONS]',
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
# typer vendors its own click; find its usage-error class without importing a private module.
UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
SUBCOMMANDS = {"run", "resume", "doctor", "chat", "mcp", "tools", "report", "bench"}
err = Console(stderr=True, highlight=False)
OPTION_NAMES = {"max_vlm_calls": "--max-vlm-calls", "max_gpu_seconds": "--max-gpu-seconds"}


def _settings(device: str | None = None) -> Any:
    from emage_agent.config import load_settings

    return load_settings(**({"device": device} if device else {}))


def _agent(settings: Any, *, quiet: bool) -> tuple[Any, Any]:
    from emage_agent.api import Agent
    from emage_agent.progress import ProgressView

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
    planner: Annotated[str, typer.Option(help="gemini (function calling) or selector (rules only).")] = "gemini",
    max_vlm_calls: Annotated[int | None, typer.Option(help="Budget of Gemini calls.")] = None,
    max_gpu_seconds: Annotated[float | None, typer.Option(help="Budget of tool seconds.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cuda or cpu (overrides EMAGE_DEVICE).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the summary as one JSON object.")] = False,
    image: Annotated[Path | None, typer.Option(help="Start from this picture instead of generating one.")] = None,
    mask: Annotated[Path | None, typer.Option(help="With --image: repairs change only its white region.")] = None,
    candidates: Annotated[int, typer.Option(help="First images and variants per repair; the best is kept.")] = 1,
) -> None:
    from emage_agent.options import parse_options

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
        candidates=candidates,
    )
    if not prompt.strip():
        raise UserError("the prompt is empty; say what the image should show", field="PROMPT")
    try:
        parse_options(**options)
    except UserError as exc:
        raise UserError(
            str(exc).split(": ", 1)[-1], field=OPTION_NAMES.get(exc.field or "", f"--{exc.field}")
        ) from None
    settings = _settings(device)
    agent, view = _agent(settings, quiet=as_json)
    agent.root = out
    agent.check_ready()
    with view:
        session = agent.start(prompt, image=image, mask=mask, **options)
        view.session(session.dir, iterations=iterations)
        summary = session.run()
    _finish(summary, as_json)


@app.command("resume", help="Continue a stopped or interrupted session from its last committed step.")
def resume_command(
    session_dir: Annotated[Path, typer.Argument(help="The session's directory.")],
    iterations: Annotated[int | None, typer.Option(help="Run this many more iterations.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cuda or cpu.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the summary as JSON.")] = False,
) -> None:
    settings = _settings(device)
    agent, view = _agent(settings, quiet=as_json)
    agent.check_ready()
    session = agent.open(session_dir)
    with view:
        view.session(session.dir, iterations=iterations or session.store.info.options.get("iterations"))
        summary = session.run(iterations)
    _finish(summary, as_json)


@app.command("doctor", help="Check the GPU, the keys and the models, and say what is missing.")
def doctor_command() -> None:
    from emage_agent.doctor import run_doctor

    raise typer.Exit(run_doctor(_settings(), Console(highlight=False)))


@app.command("tools", help="Print the tool schemas for other agent systems.")
def tools_command(
    fmt: Annotated[str, typer.Option("--format", help="gemini, openai, mcp or json.")] = "json",
) -> None:
    from emage_agent.contracts import export_tools

    sys.stdout.write(json.dumps(export_tools(fmt), indent=2) + "\n")  # type: ignore[arg-type]


@app.command("report", help="Rebuild a session's report.html.")
def report_command(session_dir: Annotated[Path, typer.Argument(help="The session's directory.")]) -> None:
    from emage_agent.report import write_report
    from emage_agent.session import SessionStore

    store = SessionStore.open(session_dir)
    try:
        Console(highlight=False).print(str(write_report(store)))
    finally:
        store.close()


@app.command("chat", help="Refine an image over several turns: feedback, undo, revert N, history, more, quit.")
def chat_command(
    prompt: Annotated[str | None, typer.Argument(help="Start a new session with this prompt.")] = None,
    session_dir: Annotated[Path | None, typer.Option("--session", help="Continue this session.")] = None,
    out: Annotated[Path, typer.Option(help="Parent directory for new sessions.")] = Path("emage-sessions"),
    device: Annotated[str | None, typer.Option(help="auto, cuda or cpu.")] = None,
    image: Annotated[Path | None, typer.Option(help="Start from this picture instead of generating one.")] = None,
    mask: Annotated[Path | None, typer.Option(help="With --image: repairs change only its white region.")] = None,
) -> None:
    from emage_agent.chat import run_chat

    if prompt is None and session_dir is None:
        raise UserError("give a PROMPT to start or --session DIR to continue", field="chat")
    settings = _settings(device)
    agent, _view = _agent(settings, quiet=True)
    agent.root = out
    agent.check_ready()
    run_chat(agent, prompt, session_dir, console=Console(highlight=False), image=image, mask=mask)


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
    from emage_agent.bench import Bench, load_prompts, parse_modes

    chosen = parse_modes(modes)
    if not 1 <= n <= 8:
        raise UserError(f"--n is {n}; it must be in [1, 8]", field="--n")
    records = load_prompts(prompts)[:limit]
    settings = _settings(device)
    agent, _view = _agent(settings, quiet=True)
    agent.check_ready()
    options = {"width": width, "height": height, "steps": steps, "planner": planner}
    bench = Bench(
        agent, out, modes=chosen, n=n, iterations=iterations, threshold=threshold, seed=seed,
        equal_compute=equal_compute, session_options={k: v for k, v in options.items() if v is not None},
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
    from emage_agent.mcp.server import main as serve

    serve(http=http, host=host, port=port)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``emage-agent "PROMPT"`` is ``emage-agent run "PROMPT"``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in SUBCOMMANDS and args[0] not in ("--help", "-h"):
        args.insert(0, "run")
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="emage-agent", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except UsageError as exc:
        err.print(f"emage-agent: error: {exc.format_message()}", markup=False, soft_wrap=True)  # type: ignore[attr-defined]
        code = 2
    except (typer.Abort, KeyboardInterrupt):
        err.print("emage-agent: interrupted; the session is saved and can be resumed")
        code = 130
    except UserError as exc:
        err.print(f"emage-agent: error: {exc}", markup=False, soft_wrap=True)
        code = 2
    except (ExecutionFailure, EmageError) as exc:
        err.print(
            f"emage-agent: failed: {exc} (the session is saved; `emage-agent resume DIR` continues it)",
            markup=False,
            soft_wrap=True,
        )
        code = 1
    if argv is None:
        sys.exit(code if isinstance(code, int) else 0)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    main()
