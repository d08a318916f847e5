"""``benchmarks/gpu_speed.py --tiny``: the full-size benchmark's code path on the tiny CPU models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_tiny_benchmark_prints_the_table_the_ratio_and_a_verdict(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAGE_")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    configs = "int8,fp8,bf16 eager,auto"
    cmd = [sys.executable, "benchmarks/gpu_speed.py", "--tiny", "--configs", configs, "--steps", "2", "--repeats", "1"]
    result = subprocess.run(
        [*cmd, "--budget-s", "0", "--out", str(out)], cwd=REPO, env=env, text=True, capture_output=True, timeout=400
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "config | quantize | compile | attention | residency | generate_s | ratio_to_bf16" in result.stdout
    report = json.loads(out.read_text())
    rows = {row["config"]: row for row in report["rows"]}
    assert [row["config"] for row in report["rows"]] == ["bf16 eager", "auto", "int8", "fp8"]  # the goal's first
    assert report["device"] == "cpu" and report["steps"] == 2 and report["guidance"] == 3.5
    eager, auto = rows["bf16 eager"], rows["auto"]
    assert eager["generate_s"] > 0 and eager["edit_s"] > 0 and eager["ratio_to_bf16"] == 1.0
    assert auto["ratio_to_bf16"] == pytest.approx(auto["generate_s"] / eager["generate_s"], abs=0.001)
    # auto on the CPU is exact: no quantization, no compilation, and the reasons are recorded
    assert (auto["quantize"], auto["compile"], auto["attention"]) == ("none", "off", "native")
    assert "CPU" in auto["why"]["quantize"]
    # the planner's peaks for the full-size models (built on the meta device): the published 36.2 GiB
    assert eager["planned_peak_gib"] == pytest.approx(36.2, rel=0.05)
    assert eager["planned_edit_peak_gib"] >= eager["planned_peak_gib"]
    assert rows["int8"]["skipped"].startswith("budget") and rows["fp8"] == {"config": "fp8", "skipped": "needs CUDA"}
    # the goal scales with this machine's bf16 eager; the verdict follows from the figures
    assert report["goal_s"] == pytest.approx(eager["generate_s"] * 2.6 / 6.6, abs=0.001)
    verdict = "PASS" if auto["generate_s"] <= report["goal_s"] else "FAIL"
    assert report["verdict"] == verdict
    assert result.stdout.strip().splitlines()[-1].startswith(f"{verdict}: auto ")
