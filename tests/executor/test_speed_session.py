"""A session records the speed settings it ran with: in its options, summary.json and --json."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from tests.adapters.test_cli import SMALL, cli_env, cli_settings, emage
from tests.loop.test_session_loop import CANNY, STYLE, Script
from tests.support.fake_gemini import function_call_reply

__all__ = ["cli_settings"]  # the fixture, re-used from the CLI tests


def test_cli_session_records_its_speed_settings(cli_settings: Any, fake_gemini: Any, tmp_path: Path) -> None:
    Script(fake_gemini, evals=[(0.5, [STYLE]), (0.9, [])], plans=[function_call_reply(CANNY)])
    env = cli_env(cli_settings, EMAGE_STEP_CACHE="first_block", EMAGE_STEP_CACHE_THRESHOLD="0.2")
    result = emage(
        "a red fox", *SMALL, "--quantize", "int8", "--out", str(tmp_path / "s"), "--json", env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    speed = summary["speed"]
    assert speed["quantize"] == "int8" and speed["step_cache"] == "first_block"
    assert speed["step_cache_threshold"] == 0.2 and speed["compile"] == "off"
    assert speed["residency"] == "resident" and speed["attention"] == "native"  # as resolved on the CPU
    # and why: the explicit setting as set, ``auto`` as resolved on the CPU
    assert speed["why"]["quantize"] == "EMAGE_QUANTIZE=int8 as set"
    assert "CPU" in speed["why"]["compile"] and "CPU" in speed["why"]["attention"]
    session_dir = Path(summary["session_dir"])
    assert json.loads((session_dir / "summary.json").read_text())["speed"] == speed
    with sqlite3.connect(session_dir / "session.db") as db:
        options = json.loads(db.execute("SELECT options FROM session").fetchone()[0])
    assert options["speed"] == speed


def test_bad_quantize_is_one_line(cli_settings: Any, tmp_path: Path) -> None:
    result = emage("a red fox", *SMALL, "--quantize", "fp4", env=cli_env(cli_settings), cwd=tmp_path)
    assert result.returncode == 2 and "EMAGE_QUANTIZE" in result.stderr and "Traceback" not in result.stderr


def test_bad_compile_mode_is_one_line(cli_settings: Any, tmp_path: Path) -> None:
    result = emage("a red fox", *SMALL, "--compile", "fast", env=cli_env(cli_settings), cwd=tmp_path)
    assert result.returncode == 2 and "EMAGE_COMPILE" in result.stderr and "max-autotune" in result.stderr
    assert "Traceback" not in result.stderr
