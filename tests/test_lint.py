"""The code stays ruff-clean and the house boundaries hold (checked in CI with every test run)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "emage_agent"


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]])
def test_ruff_is_clean(args: list[str]) -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it comes with the dev extra)")
    result = subprocess.run(
        [ruff, *args, "emage_agent", "tests", "benchmarks"], cwd=ROOT, text=True, capture_output=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def importers(pattern: str) -> set[str]:
    regex = re.compile(pattern, re.MULTILINE)
    return {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if regex.search(p.read_text())}


def test_only_the_gemini_package_imports_google_genai() -> None:
    found = importers(r"^\s*(from google import genai|from google\.genai|import google\.genai)")
    assert found and all(name.startswith("vlm/gemini/") for name in found), found


def test_only_the_executor_imports_torch_diffusers_transformers() -> None:
    found = importers(r"^\s*(import|from) (torch|diffusers|transformers)\b")
    assert found and all(name.startswith("executor/") for name in found), found


def test_only_the_engine_imports_ray_and_the_cli_never_at_start() -> None:
    found = importers(r"^\s*(import|from) ray\b")
    assert found == {"engine/cluster.py", "engine/backend.py"}, found
    top_level = importers(r"^(import|from) ray\b")
    assert top_level == {"engine/cluster.py"}, top_level  # engine/__init__ does not import it
    assert "cluster" not in (PACKAGE / "engine" / "__init__.py").read_text().split('"""')[-1]
