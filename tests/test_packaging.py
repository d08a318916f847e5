"""The wheel carries the tool contracts and prompts, so ``pip install .`` works, not only editable installs."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("hatchling", reason="the dev extra installs hatchling to build the wheel offline")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("emage_agent-*.whl"))


def test_wheel_ships_contracts_and_prompts_inside_the_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for tool in ("generate", "canny_edit", "depth_edit", "inpaint", "make_mask", "rewrite_prompt"):
        assert f"emage_agent/_data/tools/{tool}.json" in names
    assert {"evaluator.md", "planner.md", "rewrite.md"} <= {
        n.rsplit("/", 1)[-1] for n in names if "/_data/prompts/" in n
    }
    assert not any(n.startswith(("tools/", "prompts/")) for n in names), "tools must not become a top-level package"


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed once into a folder of its own, away from the checkout."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    return target


def test_installed_wheel_loads_its_data_away_from_the_checkout(installed: Path, tmp_path: Path) -> None:
    code = (
        "import emage_agent.core.tools as c, emage_agent.core.resources as r; "
        "assert '_data' in str(r.data_dir('tools')), r.data_dir('tools'); "
        "print(len(c.load_contracts()), len(r.load_prompt('planner', tools='x', max_calls=1)) > 0)"
    )
    env = {**os.environ, "PYTHONPATH": str(installed)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, text=True, capture_output=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["7", "True"]


def test_installed_wheel_keeps_the_seed_import_path(wheel: Path, installed: Path, tmp_path: Path) -> None:
    assert "flux_vlm_pipeline/pipeline.py" in zipfile.ZipFile(wheel).namelist()
    code = (
        "from flux_vlm_pipeline.pipeline import FluxVLMPipeline; import emage_agent; "
        "assert FluxVLMPipeline is emage_agent.FluxVLMPipeline; print(FluxVLMPipeline.__name__)"
    )
    env = {**os.environ, "PYTHONPATH": str(installed)}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, text=True, capture_output=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "FluxVLMPipeline"
