"""What the reliability tests share: the CLI as a subprocess, a stored session made without models,
and an MCP client on a server whose agent is scripted (or talks to the fake Gemini endpoint).

No tests here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from mcp.types import TextContent

from emage_agent.api import Agent
from emage_agent.core.settings import Settings
from tests.support.scripted import ScriptedExecutor, ScriptedRewriter, scripted_agent

REPO = Path(__file__).resolve().parents[2]
SMALL = {"width": 64, "height": 64, "steps": 2}


def env(root: Path, **extra: str) -> dict[str, str]:
    """A user's environment: a (fake) key, the CPU, this checkout's package, nothing from EMAGE_* outside."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("EMAGE_")}
    base.update(
        PYTHONPATH=str(REPO),
        GEMINI_API_KEY="AIzaFAKE-reliability-key-0123456789",
        EMAGE_DEVICE="cpu",
        EMAGE_SESSION_ROOT=str(root),
        OMP_NUM_THREADS="1",
        NO_PROXY="127.0.0.1,localhost",
    )
    base.update(extra)
    return base


def emage(*args: str, root: Path, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``emage-agent ARGS`` in a fresh process, as a person runs it."""
    return subprocess.run(
        [sys.executable, "-m", "emage_agent.adapters.cli", *args],
        env=env(root),
        cwd=root.parent,
        text=True,
        capture_output=True,
        timeout=timeout,
        **kw,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The CLI's error: exactly one line on stderr (after any progress lines), no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("emage-agent: ")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip().endswith(errors[0]), result.stderr
    return errors[0]


def stored_session(root: Path, scores: list[float] | None = None, **options: Any) -> Path:
    """A real stored session (first image generated and scored) made with scripted collaborators."""
    agent = scripted_agent(root, scores or [0.5])
    session = agent.start("a red fox on a blue car", planner="selector", iterations=2, **{**SMALL, **options})
    session.store.close()
    return session.dir


def gemini_agent(root: Path, settings: Settings, executor: Any = None) -> Agent:
    """The real Agent with the real Gemini evaluator (against the fake endpoint); images are scripted."""
    settings = settings.model_copy(update={"session_root": root, "device": "cpu"})
    return Agent(
        settings,
        root=root,
        executor=executor or ScriptedExecutor(),
        rewriter=ScriptedRewriter(),
        planner_factory=lambda: None,
    )


def text_of(result: Any) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))
