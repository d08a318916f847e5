"""A Ray address nothing answers on is refused in one line, at once (not after minutes of Ray's warnings)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
from emage_agent.core.errors import UserError  # noqa: E402
from emage_agent.engine.cluster import probe  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends: nothing listens there


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_a_refused_address_is_one_line_naming_what_was_typed(scheme: str) -> None:
    address = f"{scheme}127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(UserError) as info:
        probe(address)
    assert time.monotonic() - started < 5
    assert info.value.field == "--ray" and repr(address) in str(info.value)
    assert "refused" in str(info.value) and "\n" not in str(info.value)


def test_bad_shapes_and_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="not a Ray address"):
        probe("nohost")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    probe("auto")  # nothing named: Ray looks for a local cluster itself
    probe("local")
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{closed_port()}")
    with pytest.raises(UserError, match="cannot reach"):
        probe("auto")


def test_the_cli_says_so_in_one_line(tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("a fox\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "EMAGE_DEVICE": "cpu", "GEMINI_API_KEY": "unused"}
    address = f"127.0.0.1:{closed_port()}"
    out = subprocess.run(
        [sys.executable, "-m", "emage_agent.adapters.cli", "batch", str(prompts), "--out", str(tmp_path / "b")]
        + ["--ray", address],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0, out.stderr
    assert f"cannot reach a Ray cluster at '{address}'" in out.stderr
