"""The memory planner on the shipped published configs, and ``emage-agent doctor --vram``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from emage_agent.executor.planner import (
    COMPONENTS,
    GB,
    LOCAL_VLM,
    ROW_BYTES,
    SHIPPED_VLMS,
    GiB,
    component_bytes,
    count_config,
    count_parameters,
    plan_memory,
    recommend,
    vlm_bytes,
    vlm_config,
)
from tests.adapters.test_cli import emage

TRANSFORMERS = ["transformer:base", "transformer:canny", "transformer:depth", "transformer:fill"]
QWEN = "Qwen/Qwen2.5-VL-7B-Instruct"


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
    assert set(plan80.components) == set(COMPONENTS) - {"transformer:kontext"}
    with_edit = plan_memory(80 * GiB, "fp8", n_transformers=5)  # Kontext for the edit tool as well
    assert with_edit.residency == "resident" and "transformer:kontext" in with_edit.components
    assert with_edit.components["transformer:kontext"] == with_edit.components["transformer:base"]


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
    from tests.adapters.test_cli import cli_env

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

    from emage_agent.adapters.doctor import run_doctor

    for vram, quantize, check in (
        (80, "fp8", lambda p: p["residency"] == "resident"),
        (24, "none", lambda p: p["residency"] == "offload" and "slower" in p["advice"]),
    ):
        run_doctor(tiny_settings, Console(), vram_gb=vram, quantize=quantize, as_json=True)
        assert check(json.loads(capsys.readouterr().out)["memory_plan"])


def test_random_full_size_model_has_the_planned_bytes() -> None:
    """The benchmark's random CLIP-L: as many bytes as planned, before and after int8 in memory."""
    import torch

    from emage_agent.executor.devices import tensor_bytes
    from emage_agent.executor.synthetic import build_random, quantize_in_memory

    model = build_random("text_encoder", torch.bfloat16, "cpu")
    measured = sum(tensor_bytes(p) for p in model.parameters())
    assert measured == component_bytes("text_encoder", "none")
    counts = count_parameters("text_encoder")
    quantize_in_memory(model, "int8", torch.bfloat16)
    quantized = sum(tensor_bytes(p) for p in model.parameters())
    # one byte a linear weight plus a few bytes of scale data a row (the plan budgets 8: an upper bound)
    assert counts.linear + counts.other * 2 < quantized <= counts.linear + counts.rows * ROW_BYTES + counts.other * 2


def test_published_size_of_the_default_local_vlm(tmp_path: Path) -> None:
    assert QWEN in SHIPPED_VLMS and vlm_config(QWEN) is not None
    counts = count_config(str(vlm_config(QWEN)))
    assert counts.total == pytest.approx(8.29e9, rel=0.03)  # published: 8.29 B parameters
    assert vlm_bytes(QWEN, "none") == pytest.approx(16.6 * GB, rel=0.03)  # ~16.6 GB of bf16 safetensors
    # quantized: the 7.2 B linear weights shrink; the embeddings and the output head (1.1 B) stay bf16
    assert counts.linear == pytest.approx(7.2e9, rel=0.02)
    assert (
        vlm_bytes(QWEN, "int8") == vlm_bytes(QWEN, "fp8") == counts.linear + counts.rows * ROW_BYTES + counts.other * 2
    )
    assert 5 * GB < vlm_bytes(QWEN, "nf4") < 7 * GB < vlm_bytes(QWEN, "int8") < 10 * GB
    assert vlm_bytes("no-such/model-anywhere") == 0  # unknown offline: the plan says it is not counted
    (tmp_path / "config.json").write_text('{"architectures": ["NoSuchModelForVision"]}')
    assert vlm_config(str(tmp_path)) == tmp_path / "config.json" and vlm_bytes(str(tmp_path)) == 0


def test_the_local_vlm_joins_every_plan() -> None:
    for vram, quantize in ((80, "fp8"), (80, "none"), (24, "nf4"), (48, "none")):
        alone, shared = plan_memory(vram * GiB, quantize), plan_memory(vram * GiB, quantize, vlm=QWEN)
        assert LOCAL_VLM not in alone.components and shared.components[LOCAL_VLM] == vlm_bytes(QWEN, quantize)
        if alone.residency == shared.residency and shared.offload_mode == "none":
            assert shared.peak_bytes == alone.peak_bytes + vlm_bytes(QWEN, quantize)
        assert "local VLM" in shared.advice and "local VLM" not in alone.advice
    # 80 GB in fp8 still holds all four transformers and the judge
    assert plan_memory(80 * GiB, "fp8", vlm=QWEN).residency == "resident"
    # 24 GB: fp8 FLUX swaps alone, but not with a 9.4 GB judge beside it; nf4 brings swap back
    assert plan_memory(24 * GiB, "fp8").residency == "swap"
    assert plan_memory(24 * GiB, "fp8", vlm=QWEN).residency == "offload"
    assert plan_memory(24 * GiB, "nf4", vlm=QWEN).residency == "swap"
    # 48 GB in bf16: one transformer swaps alone; with the 16.6 GB judge it is offloaded per model
    assert plan_memory(48 * GiB, "none").residency == "swap"
    assert plan_memory(48 * GiB, "none", vlm=QWEN).offload_mode == "model"
    assert (
        recommend(24 * GiB, (8, 9))["quantize"] == "fp8" and recommend(24 * GiB, (8, 9), vlm=QWEN)["quantize"] == "nf4"
    )
    assert "not counted" in plan_memory(24 * GiB, "fp8", vlm="no-such/model-anywhere").advice


def test_doctor_counts_the_local_vlm_when_it_judges_or_plans(tiny_settings: Any, tmp_path: Path) -> None:
    from tests.adapters.test_cli import cli_env

    args = ("doctor", "--vram", "24", "--quantize", "fp8", "--json")
    plans = {}
    for name, extra in (
        ("gemini", {}),
        ("judge", {"EMAGE_VLM": "local", "EMAGE_LOCAL_VLM_MODEL": QWEN}),
        ("planner", {"EMAGE_PLANNER_VLM": "local", "EMAGE_LOCAL_VLM_MODEL": QWEN}),
    ):
        result = emage(*args, env=cli_env(tiny_settings, **extra), cwd=tmp_path)
        plans[name] = json.loads(result.stdout)["memory_plan"]
    assert LOCAL_VLM not in plans["gemini"]["components"] and plans["gemini"]["residency"] == "swap"
    for name in ("judge", "planner"):
        assert plans[name]["components"][LOCAL_VLM] == vlm_bytes(QWEN, "fp8")
        assert plans[name]["residency"] == "offload" and plans[name]["recommended"]["quantize"] == "nf4"


# Published single-pipeline peaks of FLUX.1-dev at 1024x1024, 28 steps, on an H100 (GiB), with the
# transformer and T5 quantized: diffusers' quantization-backends measurements. They were taken with
# transformers 4.x, whose bitsandbytes path loads T5's kept ``wo`` in float32 (its nf4 load memory,
# 12.58 GiB, has it so); the planner asks the installed transformers (``kept_upcast``).
PUBLISHED_PEAKS_GIB = {"none": 36.2, "fp8": 21.5, "int8": 21.5, "nf4": 17.3}


@pytest.mark.parametrize("quantize", sorted(PUBLISHED_PEAKS_GIB))
def test_single_pipeline_peaks_match_the_published_ones(quantize: str) -> None:
    from emage_agent.executor.planner import pipeline_peak

    planned = pipeline_peak(quantize, 1024, 1024, kept_fp32=quantize == "nf4") / GiB
    assert planned == pytest.approx(PUBLISHED_PEAKS_GIB[quantize], rel=0.05)


def test_t5_and_nf4_are_counted_as_they_load() -> None:
    from emage_agent.executor.planner import kept_upcast

    counts = count_parameters("text_encoder_2")
    # T5-XXL's 24 feed-forward ``wo`` layers (4096x10240): 1.0 B parameters no quantizer touches
    assert counts.kept == 24 * 4096 * 10240
    assert component_bytes("text_encoder_2", "fp8") == pytest.approx(5.9 * GB, rel=0.02)  # measured ~5.9 GB
    assert component_bytes("text_encoder_2", "nf4", kept_fp32=False) == pytest.approx(4.3 * GB, rel=0.02)
    assert (
        component_bytes("text_encoder_2", "nf4", kept_fp32=True)
        - component_bytes("text_encoder_2", "nf4", kept_fp32=False)
        == counts.kept * 2
    )
    # nf4 as quantize.py sets it (no double quantization): a float32 absmax per 64 weights, 6.70 GB measured
    assert component_bytes("transformer:base", "nf4") == pytest.approx(6.70 * GB, rel=0.01)
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        assert not kept_upcast("nf4") and not kept_upcast("fp8")


def test_activations_grow_with_the_image_and_kontext_and_stop_at_the_vae_tiles() -> None:
    from emage_agent.executor.activations import activation_bytes, tokens, vae_tiled

    assert tokens(1024, 1024) == 4096 + 512 and tokens(1024, 1024, kontext=True) == 2 * 4096 + 512
    small, base = activation_bytes(512, 512), activation_bytes(1024, 1024)
    assert small < base < 5 * GiB
    assert not vae_tiled(1024, 1024) and vae_tiled(2048, 2048) and vae_tiled(1024, 1536)
    # tiled: the decode holds one 1024x1024 tile; the denoising's tokens still grow, Kontext's twice as fast
    assert activation_bytes(2048, 2048) == base
    assert activation_bytes(2048, 2048, kontext=True) > activation_bytes(1024, 1024, kontext=True) >= base
    plan = plan_memory(80 * GiB, "fp8", n_transformers=5)
    assert plan.headroom_bytes == activation_bytes(1024, 1024, kontext=True)
    assert plan.peak_at_max_bytes - plan.peak_bytes == activation_bytes(2048, 2048, True) - plan.headroom_bytes
    big = plan_memory(80 * GiB, "fp8", width=2048, height=2048)
    assert big.headroom_bytes == activation_bytes(2048, 2048) and big.width == 2048


def test_doctor_plans_come_from_the_corrected_arithmetic(tiny_settings: Any, tmp_path: Path) -> None:
    from emage_agent.executor.activations import activation_bytes
    from tests.adapters.test_cli import cli_env

    env = cli_env(tiny_settings, EMAGE_KONTEXT_MODEL="none")
    plans = {}
    for vram, quantize in (("24", "fp8"), ("80", "auto")):
        result = emage("doctor", "--vram", vram, "--quantize", quantize, "--json", env=env, cwd=tmp_path)
        plans[vram] = json.loads(result.stdout)["memory_plan"]
    p24, p80 = plans["24"], plans["80"]
    assert p24["residency"] == "swap" and p24["fits"]
    assert p24["components"]["text_encoder_2"] == component_bytes("text_encoder_2", "fp8")
    assert p24["headroom_bytes"] == activation_bytes(1024, 1024)
    swap_peak = sum(v for k, v in p24["components"].items() if not k.startswith("transformer:"))
    largest = max(v for k, v in p24["components"].items() if k.startswith("transformer:"))
    assert p24["peak_bytes"] == swap_peak + largest + p24["headroom_bytes"]
    assert p24["pipeline_peak_bytes"] / GiB == pytest.approx(PUBLISHED_PEAKS_GIB["fp8"], rel=0.05)
    # auto on an unknown 80 GiB card assumes fp8 and says why
    assert p80["quantize"] == "fp8" and p80["residency"] == "resident"
    assert p80["speed"]["quantize"] == "fp8" and "fp8" in p80["speed"]["why"]["quantize"]
    assert p80["speed"]["compile"] == "regional"
