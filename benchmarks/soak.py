"""Fault-injection soak: many sessions against a misbehaving Gemini, random kill -9 and resume, a hostile MCP client.

What runs for real: every session is its own process with the real ``Agent``, loop, SQLite store and
``google-genai`` client, talking to the fake Gemini endpoint on 127.0.0.1 (``tests/fake_gemini.py``), which
answers a share of requests (``--faults``) with a 503, a 429, prose without a score, a score of 1.7, JSON
nested 10,000 deep (in the text, and in the body itself), a 2 MB summary, HTML in the summary, or a plan with
a long non-Latin make_mask target. Images come from a stand-in executor (solid colours, a short sleep per
tool), so the soak needs no model weights and no GPU. Some sessions are killed with SIGKILL at a random moment
and resumed; any session that ends failed (Gemini kept failing) is resumed too, up to ``--max-resumes``.
Meanwhile a hostile client drives ``emage-agent mcp --http`` on the same session root: foreign Host headers,
paths out of the root, oversized prompts, unknown tools, size changes on refine, resource reads of every
session, garbage bodies, a flood of ``initialize`` requests (then a new client must still get in), host-file
probes (outside and missing must read the same), a 1 MB resource URI and a decompression bomb as a start
picture.

Printed and written to JSON (``--json``): sessions completed, steps lost (steps committed before a kill that
are missing or unreadable afterwards), tracebacks seen (any process's stderr), unexpected errors, the MCP
server's open descriptors at start and end, and the largest ``session.db`` and ``report.html`` (model text is
bounded where it lands) and any raw HTML from the judge in a report.

    python benchmarks/soak.py --sessions 200 --faults 0.3 --kills 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.fake_gemini import (  # noqa: E402 - the repository root goes on the path first
    FAKE_KEY,
    FakeGemini,
    Reply,
    Request,
    error_reply,
    evaluation_reply,
    function_call_reply,
    rewrite_reply,
    text_reply,
)

DEEP = "[" * 10_000 + "]" * 10_000
HTML = '<img src="http://beacon.example/p.png"> <a href="http://evil.example/">click</a>'
DEEP_BODY = '{"candidates": [{"content": {"parts": [{"text": "x"}], "role": "model"}, "x": ' + DEEP + "}]}"

STYLE = {"category": "style", "severity": 0.7, "description": "the car should be blue", "target": "car"}


# ---- the worker: one session in its own process -----------------------------------------
def worker(args: argparse.Namespace) -> int:
    """Start (or resume) one session; errors end as the CLI ends them: one line and an exit code."""
    from emage_agent.adapters.cli import outcome
    from emage_agent.api import Agent
    from emage_agent.core.settings import Settings
    from tests.support.scripted import ScriptedExecutor, ScriptedRewriter

    class SlowExecutor(ScriptedExecutor):
        def run(self, tool: str, run_args: dict[str, Any], images: Any = None, on_step: Any = None) -> Any:
            time.sleep(0.15)  # a window for the kill to land in the middle of a step
            return super().run(tool, run_args, images, on_step)

    settings = Settings(
        _env_file=None,
        gemini_api_key=FAKE_KEY,
        gemini_base_url=args.gemini,
        gemini_api_version="v1beta",
        gemini_fallback_model=None,
        gemini_max_attempts=3,
        gemini_retry_initial_s=0.01,
        gemini_max_retry_s=5.0,
        gemini_timeout_s=10.0,
        session_root=Path(args.root),
        device="cpu",
    )
    agent = Agent(settings, root=Path(args.root), executor=SlowExecutor(), rewriter=ScriptedRewriter())
    try:
        if args.resume:
            session = agent.open(Path(args.resume))
            session.run()
        else:
            planner = random.Random(args.prompt).choice(["gemini", "selector"])
            session = agent.start(args.prompt, width=64, height=64, steps=2, iterations=3, planner=planner)
            session.run()
    except (Exception, KeyboardInterrupt) as exc:
        code, line = outcome(exc)
        print(f"emage-agent: {line}", file=sys.stderr)
        return code
    return 0


# ---- the fake Gemini with faults ------------------------------------------------------------
class Faulty:
    """Answers by purpose; a share ``rate`` of all requests gets a fault instead."""

    def __init__(self, rate: float, seed: int) -> None:
        self.rate = rate
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.faults = 0
        self.requests = 0

    def __call__(self, request: Request) -> Any:
        with self.lock:
            self.requests += 1
            roll, pick, score = self.rng.random(), self.rng.randrange(9), self.rng.uniform(0.3, 0.95)
            if roll < self.rate:
                self.faults += 1
        if roll < self.rate:
            return [
                error_reply(503, "UNAVAILABLE", "overloaded"),
                error_reply(429, "RESOURCE_EXHAUSTED", "slow down"),
                text_reply("I would rather not say."),
                evaluation_reply(1.7) if request.purpose == "evaluate" else text_reply("?"),
                text_reply('{"satisfaction_score": 0.5, "issues": ' + DEEP + "}"),
                Reply(200, DEEP_BODY),
                evaluation_reply(0.5, [STYLE], "s" * 2_000_000) if request.purpose == "evaluate" else text_reply("?"),
                evaluation_reply(0.5, [STYLE], HTML) if request.purpose == "evaluate" else text_reply(HTML),
                function_call_reply(("make_mask", {"target": "赤い車の上の狐" * 25, "threshold": 0.4}))
                if request.purpose == "plan"
                else text_reply("no"),
            ][pick]
        if request.purpose == "evaluate":
            return evaluation_reply(round(score, 2), [STYLE] if score < 0.8 else [])
        if request.purpose == "plan":
            return function_call_reply(("canny_edit", {"prompt": "a red fox on a blue car", "strength": 0.6}))
        if request.purpose == "rewrite":
            return rewrite_reply("a red fox sitting on a bright blue car")
        return None


# ---- the hostile MCP client ---------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Hostile:
    """Attacks ``emage-agent mcp --http`` in a loop until stopped; counts what it tried and what held."""

    def __init__(self, url: str, root: Path) -> None:
        self.url, self.root = url, root
        self.stop = threading.Event()
        self.warm = threading.Event()  # set after the first full round: the agent is built, the descriptors settle
        self.attempts = 0
        self.breaches: list[str] = []

    def sessions(self) -> list[str]:
        return [str(p.relative_to(self.root)) for p in self.root.glob("*/2*") if (p / "session.db").exists()]

    def raw(self, http: Any) -> None:
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
                "capabilities": {}, "clientInfo": {"name": "hostile", "version": "0"}}}  # fmt: skip
        if http.post(self.url, json=init, headers={**headers, "Host": "attacker.example"}).status_code != 421:
            self.breaches.append("foreign Host accepted")
        http.post(self.url, content=b"\x00{not json" * 100, headers=headers)
        for _ in range(150):  # a flood of sessions: the next client (``tools``) must still get in
            if http.post(self.url, json=init, headers=headers).status_code != 200:
                self.breaches.append("initialize refused during a flood")
                break
        self.attempts += 152

    async def tools(self) -> None:
        import httpx2
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        async with (
            httpx2.AsyncClient(timeout=60) as http,
            Client(streamable_http_client(self.url, http_client=http)) as client,
        ):
            calls = [
                ("evaluate", {"image": "../../etc/passwd", "prompt": "x"}),
                ("session_history", {"session_id": "/etc"}),
                ("generate", {"prompt": "x" * 100_000}),
                ("no_such_tool", {}),
            ]
            for name, arguments in calls:
                result = await client.call_tool(name, arguments)
                self.attempts += 1
                if not result.is_error:
                    self.breaches.append(f"{name} accepted {str(arguments)[:60]}")
            await self.probes(client)
            for sid in self.sessions():
                if self.stop.is_set():
                    break
                history = await client.call_tool("session_history", {"session_id": sid})
                refused = await client.call_tool("refine", {"session_id": sid, "width": 128})
                self.attempts += 2
                if not refused.is_error:
                    self.breaches.append("refine changed the size of a session")
                if not history.is_error:
                    with contextlib.suppress(Exception):  # a nested id is not a session id: refused is fine
                        await client.read_resource(f"emage://sessions/{sid.split('/')[-1]}/artifacts/s1-image")
                    self.attempts += 1
        await self.huge_uri()

    async def probes(self, client: Any) -> None:
        """Host-file probes and a decompression bomb: each must be refused plainly."""
        answers = []
        for path in ("/etc/passwd", "/etc/no-such-file"):
            result = await client.call_tool("evaluate", {"image": path, "prompt": "x"})
            answers.append(str(result.content[0].text).replace(path, "P") if result.content else "")
        if answers[0] != answers[1]:
            self.breaches.append("evaluate tells existing host files from missing ones")
        bomb = self.root / "bomb.png"
        if not bomb.exists():
            bomb.write_bytes(bomb_png())
        result = await client.call_tool("refine", {"prompt": "a fox", "image": str(bomb), "iterations": 0})
        text = str(result.content[0].text) if result.content else ""
        if not result.is_error or not text.startswith("bad input"):
            self.breaches.append(f"a decompression bomb was not bad input: {text[:100]}")
        self.attempts += 3

    async def huge_uri(self) -> None:
        """A 1 MB resource URI in its own client: the MCP client also sends it in a header, which uvicorn
        refuses by closing the connection; either way nothing may come back that echoes it."""
        import httpx2
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        uri = "emage://sessions/" + "a" * 1_000_000 + "/artifacts/s1-image"
        try:
            async with (
                httpx2.AsyncClient(timeout=60) as http,
                Client(streamable_http_client(self.url, http_client=http)) as client,
            ):
                await client.read_resource(uri)
            self.breaches.append("a 1 MB resource URI was read")
        except Exception as exc:  # noqa: BLE001 - refused is the point; its size is what matters
            if len(str(exc)) > 2000:
                self.breaches.append(f"a 1 MB resource URI was echoed ({len(str(exc))} characters)")
        self.attempts += 1

    def run(self) -> None:
        import anyio
        import httpx2

        with httpx2.Client(timeout=30) as http:
            while not self.stop.is_set():
                try:
                    self.raw(http)
                    anyio.run(self.tools)
                except Exception as exc:  # noqa: BLE001 - the soak reports, it does not stop
                    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:  # the task group's first cause
                        exc = exc.exceptions[0]
                    self.breaches.append(f"client error {type(exc).__name__}: {str(exc)[:120]}")
                self.warm.set()
                self.stop.wait(1.0)


def bomb_png(width: int = 40000, height: int = 40000) -> bytes:
    """A PNG header claiming ``width`` x ``height``: a decompression bomb as it looks before decoding."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# ---- the driver ----------------------------------------------------------------------------
def committed(session_dir: Path) -> dict[int, str | None]:
    """Committed steps and their image paths, read as any other reader would."""
    with sqlite3.connect(f"file:{session_dir / 'session.db'}?mode=ro", uri=True, timeout=30) as db:
        steps = {row[0]: None for row in db.execute("SELECT step FROM step")}
        for step, path in db.execute("SELECT step, path FROM artifact WHERE role = 'image'"):
            steps[step] = path
    return steps


def session_dir_of(folder: Path) -> Path | None:
    found = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")] if folder.exists() else []
    return found[0] if found else None


def status_of(session_dir: Path) -> str:
    with sqlite3.connect(f"file:{session_dir / 'session.db'}?mode=ro", uri=True, timeout=30) as db:
        return db.execute("SELECT status FROM session").fetchone()[0]


def drive(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.root or tempfile.mkdtemp(prefix="emage-soak-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    fake = FakeGemini().start()
    faulty = Faulty(args.faults, args.seed)
    fake.handler = faulty
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAGE_")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", NO_PROXY="127.0.0.1,localhost")
    port = free_port()
    server_env = dict(env, GEMINI_API_KEY=FAKE_KEY, EMAGE_SESSION_ROOT=str(root), EMAGE_DEVICE="cpu")
    server_env["EMAGE_MCP_OPEN_SESSIONS"] = str(args.open_sessions)
    server = subprocess.Popen(
        [sys.executable, "-m", "emage_agent.adapters.cli", "mcp", "--http", "--port", str(port)],
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    hostile = Hostile(url, root)
    attacker = threading.Thread(target=hostile.run, daemon=True)
    attacker.start()
    fds_start: int | None = None

    kills = set(rng.sample(range(args.sessions), min(args.kills, args.sessions)))
    stderr_all: list[str] = []
    lost = completed = resumes = killed = 0
    started = time.monotonic()
    pending = list(range(args.sessions))
    running: dict[int, tuple[subprocess.Popen[str], float | None]] = {}
    attempts: dict[int, int] = {}
    before_kill: dict[int, dict[int, str | None]] = {}

    def launch(n: int) -> None:
        folder = root / f"{n:04d}"
        existing = session_dir_of(folder)
        cmd = [sys.executable, __file__, "--worker", "--gemini", fake.url, "--root", str(folder)]
        cmd += ["--resume", str(existing)] if existing else ["--prompt", f"a red fox on a blue car, take {n}"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + rng.uniform(0.5, 4.0) if n in kills and n not in before_kill else None
        running[n] = (proc, deadline)

    while pending or running:
        if fds_start is None and hostile.warm.is_set():
            fds_start = fds(server.pid)
        while pending and len(running) < args.parallel:
            launch(pending.pop(0))
        time.sleep(0.05)
        for n, (proc, deadline) in list(running.items()):
            if deadline is not None and proc.poll() is None and time.monotonic() > deadline:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed += 1
                folder = session_dir_of(root / f"{n:04d}")
                before_kill[n] = committed(folder) if folder else {}
            if proc.poll() is None:
                continue
            stderr_all.append(proc.stderr.read() if proc.stderr else "")
            del running[n]
            folder = session_dir_of(root / f"{n:04d}")
            done = folder is not None and proc.returncode == 0 and status_of(folder) == "done"
            if done:
                completed += 1
            elif attempts.get(n, 0) < args.max_resumes:
                attempts[n] = attempts.get(n, 0) + 1
                resumes += 1
                pending.append(n)
    hostile.stop.set()
    attacker.join(120)
    fds_end = fds(server.pid)
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(20)
    except subprocess.TimeoutExpired:
        server.kill()
    stderr_all.append(server.stderr.read() if server.stderr else "")
    fake.stop()

    for n, steps in before_kill.items():
        folder = session_dir_of(root / f"{n:04d}")
        after = committed(folder) if folder else {}
        for step, image in steps.items():
            if step not in after or (image is not None and not (folder / image).is_file()):
                lost += 1
    text = "\n".join(stderr_all)
    dbs = [p.stat().st_size for p in root.glob("*/*/session.db")]
    reports = list(root.glob("*/*/report.html"))
    raw_html = sum(
        1 for p in reports if 'src="http://beacon.example' in p.read_text(encoding="utf-8", errors="replace")
    )
    return {
        "machine": f"{os.cpu_count()}-core CPU, no GPU (stand-in executor, fake Gemini on 127.0.0.1)",
        "sessions": args.sessions,
        "fault_rate": args.faults,
        "kills_planned": len(kills),
        "kills_landed": killed,
        "sessions_completed": completed,
        "resumes": resumes,
        "steps_lost": lost,
        "tracebacks_seen": text.count("Traceback"),
        "unexpected_errors": text.count("failed: unexpected"),
        "gemini_requests": faulty.requests,
        "gemini_faults": faulty.faults,
        "hostile_attempts": hostile.attempts,
        "hostile_breaches": hostile.breaches[:20],
        "mcp_fds_start": fds_start,
        "mcp_fds_end": fds_end,
        "largest_session_db_kb": round(max(dbs, default=0) / 1024, 1),
        "largest_report_kb": round(max((p.stat().st_size for p in reports), default=0) / 1024, 1),
        "reports_with_raw_judge_html": raw_html,
        "seconds": round(time.monotonic() - started, 1),
        "root": str(root),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--faults", type=float, default=0.3, help="share of Gemini requests answered with a fault")
    parser.add_argument("--kills", type=int, default=20, help="sessions killed with SIGKILL once, then resumed")
    parser.add_argument("--parallel", type=int, default=3, help="session processes at once")
    parser.add_argument("--max-resumes", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--open-sessions", type=int, default=4, help="EMAGE_MCP_OPEN_SESSIONS of the MCP server")
    parser.add_argument("--root", default=None, help="session root (default: a new temporary folder)")
    parser.add_argument("--json", default="soak.json", help="where to write the figures")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--gemini", help=argparse.SUPPRESS)
    parser.add_argument("--prompt", help=argparse.SUPPRESS)
    parser.add_argument("--resume", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.exit(worker(args))
    figures = drive(args)
    for key, value in figures.items():
        print(f"{key:>20}: {value}")
    Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
