"""The service as its own process: ``kill -9`` and a restart leave sessions resumable; SIGTERM drains; the CLI.

The server process runs the real ``serve`` (uvicorn, signal handling) on scripted models
(``python -m tests.support.serving``), so these tests take seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.serving import free_port

REPO = Path(__file__).resolve().parents[3]
FAST = {"size": "64x64", "planner": "selector"}


def start_server(root: Path, port: int, delay: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.serving", str(root), str(port), str(delay)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.1)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def wait_status(http: httpx.Client, sid: str, wanted: set[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = http.get(f"/v1/sessions/{sid}").json()
        if body["status"] in wanted:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def test_kill_9_then_restart_leaves_the_session_resumable(tmp_path: Path, processes: list[Any]) -> None:
    port = free_port()
    processes.append(start_server(tmp_path, port, delay=0.2))
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
        sid = http.post("/v1/sessions", json={"prompt": "a heron", "iterations": 6, **FAST}).json()["id"]
        deadline = time.monotonic() + 30
        while len(http.get(f"/v1/sessions/{sid}").json()["steps"]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    processes[0].send_signal(signal.SIGKILL)
    processes[0].wait(10)
    processes.append(start_server(tmp_path, port, delay=0.0))
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
        cut = http.get(f"/v1/sessions/{sid}").json()
        assert cut["status"] == "interrupted" and 2 <= len(cut["steps"]) < 7
        assert sid in [row["id"] for row in http.get("/v1/sessions").json()["data"]]
        assert http.post(f"/v1/sessions/{sid}/resume").status_code == 202
        done = wait_status(http, sid, {"done"})
    assert done["stopped_because"] in ("iteration_limit", "plateau") and len(done["steps"]) > len(cut["steps"])
    assert [s["step"] for s in done["steps"]][: len(cut["steps"])] == [s["step"] for s in cut["steps"]]


def test_sigterm_drains_answers_and_exits(tmp_path: Path, processes: list[Any]) -> None:
    port = free_port()
    proc = start_server(tmp_path, port, delay=0.2)
    processes.append(proc)
    url = f"http://127.0.0.1:{port}"
    answer: dict[str, Any] = {}

    def request() -> None:
        body = {"prompt": "a long walk", "iterations": 20, **FAST}
        answer["r"] = httpx.post(url + "/v1/images/generations", json=body, timeout=60)

    waiting = threading.Thread(target=request)
    waiting.start()
    with httpx.Client(base_url=url, timeout=20) as http:
        deadline = time.monotonic() + 30
        while not (rows := http.get("/v1/sessions").json()["data"]) or rows[0]["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        sid = rows[0]["id"]
    proc.send_signal(signal.SIGTERM)
    waiting.join(60)
    assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    response = answer["r"]
    assert response.status_code == 503 and response.headers["retry-after"]  # told to come back; nothing lost
    assert sid in response.json()["error"]["message"]
    from emage_agent.session import SessionStore

    with SessionStore.open(tmp_path / sid) as store:
        assert store.info.status == "interrupted" and store.info.stopped_because == "stopped"
        assert len(store.steps()) < 21


def test_cli_refuses_an_open_bind_without_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EMAGE_SERVE_TOKEN"} | {"PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-m", "emage_agent.adapters.cli", "serve", "--host", "0.0.0.0", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "--auth" in out.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "emage_agent.adapters.cli", "serve", "--concurrency", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--concurrency" in bad.stderr and "Traceback" not in bad.stderr


def test_help_lists_serve_without_loading_the_web_stack() -> None:
    code = (
        "import sys; from emage_agent.adapters import cli; "
        "assert not {'fastapi', 'uvicorn', 'starlette'} & set(sys.modules), sorted(sys.modules); "
        "cli.main(['--help'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "serve" in out.stdout and "OpenAI-compatible" in out.stdout
