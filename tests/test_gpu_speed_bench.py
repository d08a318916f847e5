"""``benchmarks/gpu_speed.py --tiny``: the full-size benchmark's code path on the tiny CPU models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_tiny_benchmark_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAGE_")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    configs = "bf16 eager,int8,fp8"
    cmd = [sys.executable, "benchmarks/gpu_speed.py", "--tiny", "--configs", configs, "--steps", "2", "--repeats", "1"]
    result = subprocess.run(
        [*cmd, "--out", str(out)], cwd=REPO, env=env, text=True, capture_output=True, timeout=400
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "config | dtype | residency | generate_s" in result.stdout
    report = json.loads(out.read_text())
    rows = {row["config"]: row for row in report["rows"]}
    assert report["device"] == "cpu" and report["steps"] == 2
    assert rows["bf16 eager"]["generate_s"] > 0 and rows["bf16 eager"]["inpaint_s"] > 0
    assert rows["int8"]["quantize"] == "int8"
    assert rows["int8"]["transformer_mb"] < 0.5 * rows["bf16 eager"]["transformer_mb"]
    assert rows["fp8"] == {"config": "fp8", "skipped": "needs CUDA"}
    assert report["switch"] == [
        {"residency": "resident", "switch_s": report["switch"][0]["switch_s"], "bytes_to_device": 0}
    ]
