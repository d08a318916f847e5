"""The CLI as a person runs it: real processes, tiny local models, the fake Gemini endpoint."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.loop.test_session_loop import CANNY, STYLE, Script
from tests.session.test_store import SUMMARY_KEYS
from tests.support.fake_gemini import Reply, evaluation_reply, function_call_reply, unavailable

KEY = "AIzaFAKE-cli-test-key-0123456789abcdef"


def cli_env(settings: Any, **extra: str) -> dict[str, str]:
    """The environment a user would set: every model and the endpoint, as EMAGE_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAGE_")}
    for name in (
        "base_model",
        "canny_model",
        "depth_model",
        "fill_model",
        "depth_estimator",
        "segmenter",
        "kontext_model",
        "detector",
        "gemini_base_url",
        "gemini_api_version",
        "gemini_max_attempts",
        "gemini_max_retry_s",
    ):
        value = getattr(settings, name)
        if value is not None:
            env[f"EMAGE_{name.upper()}"] = str(value)
    env.update(EMAGE_DEVICE="cpu", EMAGE_DTYPE="float32", GEMINI_API_KEY=KEY, OMP_NUM_THREADS="1", **extra)
    return env


def emage(*args: str, env: dict[str, str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emage_agent.adapters.cli", *args],
        env=env,
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


@pytest.fixture
def cli_settings(tiny_settings: Any, gemini_settings: Any) -> Any:
    gemini = {k: v for k, v in gemini_settings.model_dump().items() if k.startswith("gemini_")}
    return tiny_settings.model_copy(update=gemini)


SMALL = ["--width", "64", "--height", "64", "--steps", "2", "--seed", "5"]


def test_json_summary_matches_the_files(cli_settings: Any, fake_gemini: Any, tmp_path: Path) -> None:
    Script(fake_gemini, evals=[(0.5, [STYLE]), (0.9, [])], plans=[function_call_reply(CANNY)])
    result = emage(
        "a red fox on a blue car",
        *SMALL,
        "--out",
        str(tmp_path / "s"),
        "--json",
        env=cli_env(cli_settings),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary) == SUMMARY_KEYS
    assert json.loads((Path(summary["session_dir"]) / "summary.json").read_text()) == summary
    assert summary["stopped_because"] == "threshold"
    assert [h["tool"] for h in summary["history"]] == ["generate", "canny_edit"]
    assert Path(summary["final_image"]).is_file()
    for path in Path(summary["session_dir"]).rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), f"the API key leaked into {path}"
    assert KEY not in result.stdout + result.stderr


def test_human_output_shows_decisions_and_where_the_image_is(
    cli_settings: Any, fake_gemini: Any, tmp_path: Path
) -> None:
    Script(fake_gemini, evals=[(0.5, [STYLE]), (0.9, [])], plans=[function_call_reply(CANNY)])
    result = emage(
        "a red fox on a blue car", *SMALL, "--out", str(tmp_path / "s"), env=cli_env(cli_settings), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "canny_edit" in result.stderr and "score 0.90" in result.stderr  # progress goes to stderr
    best = next(line for line in result.stdout.splitlines() if line.startswith("Best image:"))
    assert Path(best.split(":", 1)[1].strip()).is_file()


def test_judge_retries_show_as_one_line_with_their_count(cli_settings: Any, fake_gemini: Any, tmp_path: Path) -> None:
    """Gemini answers 503 twice; the screen says so with the attempt and the maximum (EMAGE_GEMINI_MAX_ATTEMPTS)."""
    fake_gemini.queue(unavailable(), unavailable())
    Script(fake_gemini, evals=[(0.9, [])])
    env = cli_env(cli_settings, EMAGE_GEMINI_RETRY_INITIAL_S="0.01", EMAGE_GEMINI_MAX_ATTEMPTS="5")
    result = emage("a red fox", *SMALL, "--out", str(tmp_path / "s"), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = re.findall(r"^\s*retry\s+(.*)$", result.stderr, re.M)
    assert [re.sub(r"in \d+\.\d s$", "in N s", line) for line in lines] == [
        "judge unreachable (503), retry 2/5 in N s",
        "judge unreachable (503), retry 3/5 in N s",
    ], result.stderr
    assert "score 0.90" in result.stderr and fake_gemini.pending == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["   "], "prompt"),
        (["a fox", "--width", "100"], "--width"),
        (["a fox", "--iterations", "-1"], "--iterations"),
        (["a fox", "--planner", "oracle"], "--planner"),
        (["a fox", "--no-such-flag"], "--no-such-flag"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], needle: str, tmp_path: Path) -> None:
    result = emage(*args, env={**os.environ, "GEMINI_API_KEY": KEY}, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert needle in lines[0] and "Traceback" not in result.stderr


def test_missing_key_names_the_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    result = emage("a fox", env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "GEMINI_API_KEY" in result.stderr


def test_help_is_fast_and_imports_nothing_heavy(tmp_path: Path) -> None:
    code = (
        "import sys, emage_agent.adapters.cli as c; "
        "print(','.join(m for m in ('torch', 'diffusers', 'transformers', 'google.genai') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], text=True, capture_output=True, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == ""


def test_killed_session_resumes_with_nothing_lost(cli_settings: Any, fake_gemini: Any, tmp_path: Path) -> None:
    """SIGKILL while the second image is being judged; resume re-judges it and finishes."""
    script = Script(fake_gemini, evals=[(0.5, [STYLE])], plans=[function_call_reply(CANNY)])
    slow = {"n": 0}

    def handler(request: Any) -> Any:
        if request.purpose == "evaluate" and script.seen["evaluate"] >= 1 and slow["n"] == 0:
            slow["n"] += 1
            script.seen["evaluate"] += 1
            return Reply(200, evaluation_reply(0.9).body, delay_s=60)  # never answered: the process dies first
        return script(request)

    fake_gemini.handler = handler
    out = tmp_path / "s"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emage_agent.adapters.cli",
            "a red fox on a blue car",
            *SMALL,
            "--out",
            str(out),
            "--json",
        ],
        env=cli_env(cli_settings, EMAGE_GEMINI_TIMEOUT_S="120"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    session_dir = None
    while time.monotonic() < deadline and slow["n"] == 0:
        time.sleep(0.2)
    assert slow["n"] == 1, "the session never reached the second evaluation"
    session_dir = next(out.iterdir())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    with sqlite3.connect(session_dir / "session.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    before = sorted(p.name for p in (session_dir / "images").iterdir())
    assert len(before) == 2  # the first image and the committed edit survived

    fake_gemini.handler = Script(fake_gemini, evals=[(0.9, [])])
    result = emage("resume", str(session_dir), "--json", env=cli_env(cli_settings), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["stopped_because"] == "threshold"
    assert [h["tool"] for h in summary["history"]] == ["generate", "canny_edit"]
    assert summary["satisfaction_score"] == 0.9
    assert sorted(p.name for p in (session_dir / "images").iterdir()) == before
