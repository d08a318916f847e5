"""The memory planner on the shipped published configs, and ``emage-agent doctor --vram``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from emage_agent.executor.planner import (
    COMPONENTS,
    GB,
    ROW_BYTES,
    GiB,
    component_bytes,
    count_parameters,
    plan_memory,
    recommend,
)
from tests.test_cli import emage

TRANSFORMERS = ["transformer:base", "transformer:canny", "transformer:depth", "transformer:fill"]


def test_published_sizes_of_the_big_models() -> None:
    for name in TRANSFORMERS:
        assert component_bytes(name, "none") == pytest.approx(23.8 * GB, rel=0.02)
        assert component_bytes(name, "fp8") == pytest.approx(11.9 * GB, rel=0.03)  # ~12 GB published
        assert 5.5 * GB < component_bytes(name, "nf4") < 6.8 * GB  # ~6.7 GB published (with bf16 rest)
    assert component_bytes("text_encoder_2", "none") == pytest.approx(9.5 * GB, rel=0.02)
    # CLIP-L text: 123M parameters; the VAE 84M; the helpers run in float32
    assert count_parameters("text_encoder").total == pytest.approx(123e6, rel=0.01)
    assert count_parameters("vae").total == pytest.approx(83.8e6, rel=0.01)
    assert component_bytes("segmenter", "fp8") == count_parameters("segmenter").total * 4
    # the control variants differ from the base only in their input projection
    assert count_parameters("transformer:canny").total - count_parameters("transformer:base").total == 64 * 3072


def test_plans_for_common_cards() -> None:
    plan24 = plan_memory(24 * GiB, "fp8")
    assert plan24.residency == "swap" and plan24.fits and plan24.offload_mode == "none"
    assert plan24.peak_bytes <= 24 * GiB
    plan80 = plan_memory(80 * GiB, "fp8")
    assert plan80.residency == "resident" and set(TRANSFORMERS) <= set(plan80.components)
    assert plan80.tool_switch_bytes == 0 and plan80.bus_bytes_per_image == 0
    bf16 = plan_memory(24 * GiB, "none")
    assert bf16.residency == "offload" and bf16.offload_mode == "sequential"
    assert bf16.slowdown_vs_resident > 3 and "slower" in bf16.advice
    assert plan_memory(80 * GiB, "none").residency == "swap"  # 95 GB of bf16 transformers do not fit
    assert plan_memory(80 * GiB, "none", n_transformers=1).residency == "resident"
    assert set(plan80.components) == set(COMPONENTS)


def test_recommendations_follow_the_card() -> None:
    assert recommend(80 * GiB, (9, 0))["quantize"] == "fp8"
    assert recommend(140 * GiB, (8, 0))["quantize"] == "none"  # bf16 fits resident: no loss needed
    assert recommend(24 * GiB, (8, 6))["quantize"] == "int8"
    assert recommend(16 * GiB, (8, 9)) | {"env": ""} == {
        "quantize": "nf4",
        "compile": "regional",
        "step_cache": "off",
        "attention": "auto",
        "residency": "swap",
        "env": "",
    }
    assert recommend(8 * GiB, (8, 9))["quantize"] == "nf4"  # offload either way: nf4 moves the fewest bytes


def test_doctor_prints_the_plan_as_json(tiny_settings: Any, tmp_path: Path) -> None:
    from tests.test_cli import cli_env

    result = emage("doctor", "--vram", "24", "--quantize", "fp8", "--json", env=cli_env(tiny_settings), cwd=tmp_path)
    report = json.loads(result.stdout)
    plan = report["memory_plan"]
    assert {"vram_gb", "quantize", "residency", "peak_bytes", "fits", "components"} <= set(plan)
    assert plan["vram_gb"] == 24 and plan["quantize"] == "fp8"
    assert plan["residency"] != "offload" and plan["fits"]
    assert plan["recommended"]["quantize"] == "fp8"
    bad = emage("doctor", "--vram", "0", env=cli_env(tiny_settings), cwd=tmp_path)
    assert bad.returncode == 2 and "--vram" in bad.stderr and "Traceback" not in bad.stderr


def test_doctor_plans_without_a_gpu_in_process(capsys: Any, tiny_settings: Any) -> None:
    from rich.console import Console

    from emage_agent.doctor import run_doctor

    for vram, quantize, check in (
        (80, "fp8", lambda p: p["residency"] == "resident"),
        (24, "none", lambda p: p["residency"] == "offload" and "slower" in p["advice"]),
    ):
        run_doctor(tiny_settings, Console(), vram_gb=vram, quantize=quantize, as_json=True)
        assert check(json.loads(capsys.readouterr().out)["memory_plan"])


def test_random_full_size_model_has_the_planned_bytes() -> None:
    """The benchmark's random CLIP-L: as many bytes as planned, before and after int8 in memory."""
    import torch

    from emage_agent.executor.quantize import tensor_bytes
    from emage_agent.executor.synthetic import build_random, quantize_in_memory

    model = build_random("text_encoder", torch.bfloat16, "cpu")
    measured = sum(tensor_bytes(p) for p in model.parameters())
    assert measured == component_bytes("text_encoder", "none")
    counts = count_parameters("text_encoder")
    quantize_in_memory(model, "int8", torch.bfloat16)
    quantized = sum(tensor_bytes(p) for p in model.parameters())
    # one byte a linear weight plus a few bytes of scale data a row (the plan budgets 8: an upper bound)
    assert counts.linear + counts.other * 2 < quantized <= counts.linear + counts.rows * ROW_BYTES + counts.other * 2
