"""``emage-agent serve`` itself, as a process: the real CLI path (keys checked, the local engine started, uvicorn)
on the tiny FLUX family and the stand-in Gemini endpoint, reached with a token off the default port."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI
from PIL import Image

from tests.adapters.test_mcp_flux import settings_env
from tests.support.fake_gemini import evaluation_reply
from tests.support.serving import TOKEN, free_port

REPO = Path(__file__).resolve().parents[3]


def test_the_cli_serves_tiny_flux(tiny_settings: Any, gemini_settings: Any, fake_gemini: Any, tmp_path: Path) -> None:
    fake_gemini.handler = lambda request: evaluation_reply(0.9)
    gemini = {k: v for k, v in gemini_settings if k.startswith("gemini_")}
    settings = tiny_settings.model_copy(update=gemini)
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(REPO), "EMAGE_DEVICE": "cpu"}
    env["EMAGE_SERVE_TOKEN"] = TOKEN
    port = free_port()
    out = tmp_path / "sessions"
    proc = subprocess.Popen(
        [sys.executable, "-m", "emage_agent.adapters.cli", "serve", "--out", str(out), "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.2)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=TOKEN, max_retries=0, timeout=300)
        result = client.images.generate(prompt="a red fox", size="64x64", extra_body={"steps": 2, "iterations": 1})
        with Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or ""))) as image:
            assert image.size == (64, 64)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).status_code == 401  # the token holds
    finally:
        proc.send_signal(signal.SIGTERM)
        log = proc.communicate(timeout=60)[0]
    assert proc.returncode in (0, -signal.SIGTERM), log
    assert TOKEN not in log and "Traceback" not in log
    sessions = [p for p in out.iterdir() if (p / "session.db").is_file()]
    assert len(sessions) == 1 and (sessions[0] / "report.html").is_file()
