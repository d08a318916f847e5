"""What ``auto`` picks for speed on a described card: pure logic, no CUDA needed."""

from __future__ import annotations

from emage_agent.executor.planner import GiB
from emage_agent.executor.speed_choice import GPU, choose_speed, compile_cache_dir

H100 = GPU(name="H100", capability=(9, 0), free_bytes=79 * GiB)
RTX4090 = GPU(name="RTX 4090", capability=(8, 9), free_bytes=int(23.5 * GiB))
A100 = GPU(name="A100", capability=(8, 0), free_bytes=79 * GiB)
RTX3090 = GPU(name="RTX 3090", capability=(8, 6), free_bytes=23 * GiB)
T4 = GPU(name="T4", capability=(7, 5), free_bytes=15 * GiB)


def auto(gpu: GPU | None, **kw: object) -> object:
    return choose_speed("auto", "auto", "auto", gpu, **kw)  # type: ignore[arg-type]


def test_auto_is_fp8_per_row_and_compiled_on_fp8_cards() -> None:
    for gpu in (H100, RTX4090):
        choice = auto(gpu)
        assert choice.quantize == "fp8" and choice.compile == "regional"  # type: ignore[attr-defined]
        assert "8.9" in choice.why["quantize"] or "9.0" in choice.why["quantize"]  # type: ignore[attr-defined]
    assert auto(H100, long_lived=True).why["compile"].startswith("auto in a long-lived")  # type: ignore[attr-defined]
    one_shot = auto(H100)
    assert "cache" in one_shot.why["compile"] and one_shot.compile_cache == str(compile_cache_dir())  # type: ignore[attr-defined]


def test_auto_without_fp8_keeps_bf16_when_it_fits_else_the_lightest_that_does() -> None:
    assert auto(A100, n_transformers=1).quantize == "none"  # type: ignore[attr-defined]
    assert auto(A100).quantize == "int8"  # all four variants resident beats bf16 swapping  # type: ignore[attr-defined]
    assert auto(RTX3090).quantize == "int8"  # type: ignore[attr-defined]
    assert auto(T4).quantize == "nf4"  # type: ignore[attr-defined]
    # fp8 cards too small even for fp8 with one transformer resident
    assert auto(GPU(capability=(8, 9), free_bytes=16 * GiB)).quantize == "nf4"  # type: ignore[attr-defined]


def test_auto_attention_prefers_fa3_on_hopper_and_never_a_lossy_backend() -> None:
    every = {"flash_attn_interface", "flash_attn", "sageattention"}
    assert auto(H100, installed=every).attention == "fa3"  # type: ignore[attr-defined]
    assert auto(RTX4090, installed=every).attention == "flash"  # FA3 is Hopper-only  # type: ignore[attr-defined]
    assert auto(H100, installed={"sageattention"}).attention == "native"  # type: ignore[attr-defined]
    named = choose_speed("auto", "auto", "sage_fp8", H100, installed=every)
    assert named.attention == "sage_fp8" and "as set" in named.why["attention"]


def test_the_cpu_and_explicit_settings_stay_exact() -> None:
    cpu = auto(None)
    assert (cpu.quantize, cpu.compile, cpu.attention, cpu.compile_cache) == ("none", "off", "native", None)  # type: ignore[attr-defined]
    exact = choose_speed("none", "off", "native", H100, installed={"flash_attn"})
    assert (exact.quantize, exact.compile, exact.attention) == ("none", "off", "native")
    assert all("as set" in why for why in exact.why.values())
    assert choose_speed("int8", "max-autotune", "auto", H100).compile == "max-autotune"
