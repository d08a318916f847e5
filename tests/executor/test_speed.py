"""Speed settings on the tiny family (CPU): int8 quantization, regional compilation, step cache.

CUDA-only paths (fp8, nf4, flash attention, inductor on the GPU) are ``gpu``-marked at the end.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from emage_agent.core.errors import UserError
from emage_agent.executor import Executor

PROMPT = "a red fox on a blue car"
ARGS = {"prompt": PROMPT, "seed": 3, "width": 64, "height": 64, "steps": 10}


def pixels(image: Any) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255.0


@pytest.fixture(scope="module")
def plain(tiny_settings: Any) -> tuple[np.ndarray, Any]:
    """The unquantized, uncompiled, uncached image and counters every test compares against."""
    with Executor(tiny_settings) as ex:
        image = pixels(ex.run("generate", ARGS).image)
        return image, ex.counters


def test_int8_shrinks_the_counted_weights_and_keeps_the_image(tiny_settings: Any, plain: Any) -> None:
    reference, counters = plain
    with Executor(tiny_settings.model_copy(update={"quantize": "int8"})) as ex:
        image = pixels(ex.run("generate", ARGS).image)
        quantized = ex.counters
        transformer = next(iter(ex.models()._transformers.values()))
        attn = transformer.transformer_blocks[0].attn
        weight = attn.to_qkv.weight
        t5_wo = ex.models().shared()["text_encoder_2"].encoder.block[0].layer[1].DenseReluDense.wo.weight
        t5_wi = ex.models().shared()["text_encoder_2"].encoder.block[0].layer[1].DenseReluDense.wi.weight
    # q, k and v fused before quantizing (the unfused copies dropped), each fused row with its own scale
    assert type(weight).__name__ == "Int8Tensor" and not hasattr(attn, "to_q") and attn.fused_projections
    assert weight.scale.numel() == weight.shape[0]
    # transformers keeps T5's wo out of quantization (``_keep_in_fp32_modules``), as the planner counts it
    assert type(t5_wi).__name__ == "Int8Tensor" and type(t5_wo).__name__ != "Int8Tensor"
    assert quantized.quantize == "int8" and counters.quantize == "none"
    before, after = counters.weight_bytes, quantized.weight_bytes
    # float32 linear weights become int8 (plus one scale per row): well under half the bytes
    assert after["transformer:base"] < 0.5 * before["transformer:base"]
    assert after["text_encoder_2"] < 0.75 * before["text_encoder_2"]
    assert after["vae"] == before["vae"] and after["text_encoder"] == before["text_encoder"]
    assert np.abs(image - reference).mean() < 0.02


def test_regional_compile_does_not_recompile_at_the_same_size(tiny_settings: Any, plain: Any) -> None:
    # aot_eager traces and guards exactly as inductor does, without minutes of C++ builds on 2 cores
    settings = tiny_settings.model_copy(update={"compile": "regional", "compile_backend": "aot_eager"})
    short = {**ARGS, "steps": 2}
    with Executor(settings) as ex:
        first = ex.run("generate", short)
        compiled = ex.counters.graphs_compiled
        assert compiled >= 2  # one graph per repeated block class (double and single stream)
        ex.run("generate", {**short, "seed": 4})
        ex.run("canny_edit", {"prompt": PROMPT, "seed": 3, "steps": 2}, {"image": first.image})
        after = ex.counters
        assert after.graphs_compiled == compiled and after.recompiles == 0  # tool switch included
        ex.run("generate", {**short, "width": 80})
        assert ex.counters.graphs_compiled > compiled  # a new size does compile again, and it is counted
    with Executor(tiny_settings) as eager:
        reference = pixels(eager.run("generate", short).image)
    assert np.abs(pixels(first.image) - reference).max() <= 1 / 255 + 1e-6


def test_step_cache_with_regional_compile_does_not_recompile(tiny_settings: Any) -> None:
    update = {"compile": "regional", "compile_backend": "eager", "step_cache": "first_block"}
    with Executor(tiny_settings.model_copy(update=update)) as ex:
        ex.run("generate", ARGS)
        compiled = ex.counters.graphs_compiled
        ex.run("generate", {**ARGS, "steps": 2})  # short, yet cached: no hook changes
        ex.run("generate", {**ARGS, "seed": 9})
        assert ex.counters.graphs_compiled == compiled and ex.counters.recompiles == 0
        assert ex.counters.cached_runs == 3


def test_first_block_cache_skips_steps_within_a_bound(tiny_settings: Any, plain: Any) -> None:
    reference, _counters = plain
    settings = tiny_settings.model_copy(update={"step_cache": "first_block", "step_cache_threshold": 0.5})
    with Executor(settings) as ex:
        ex.run("generate", ARGS)  # loads the transformer
        transformer = next(iter(ex.models()._transformers.values()))
        calls: list[int] = []
        last = transformer.single_transformer_blocks[-1].proj_out
        hook = last.register_forward_hook(lambda *_: calls.append(1))
        image = pixels(ex.run("generate", ARGS).image)
        assert 0 < len(calls) < ARGS["steps"]  # the last block ran on some steps only
        calls.clear()
        ex.run("generate", {**ARGS, "steps": 4})  # a short run goes uncached
        hook.remove()
        assert len(calls) == 4
        # the edit pipelines name no cache context of their own: the executor names one
        image_in = ex.run("generate", {**ARGS, "steps": 2}).image
        mask = np.zeros((64, 64), dtype=np.uint8)
        mask[16:48, 16:48] = 255
        ex.run(
            "inpaint", {"prompt": PROMPT, "seed": 1, "steps": 10}, {"image": image_in, "mask": Image.fromarray(mask)}
        )
        ex.run("depth_edit", {"prompt": PROMPT, "seed": 1, "steps": 12, "strength": 0.9}, {"image": image_in})
        assert ex.counters.cached_runs == 4 and ex.counters.step_cache == "first_block"
    assert np.abs(image - reference).mean() < 0.05


def test_taylorseer_runs_on_generate_and_edits_within_a_bound(tiny_settings: Any, plain: Any) -> None:
    reference, _counters = plain
    with Executor(tiny_settings.model_copy(update={"step_cache": "taylorseer"})) as ex:
        image = pixels(ex.run("generate", ARGS).image)
        edit = {"prompt": PROMPT, "seed": 1, "steps": 12, "strength": 0.9}
        ex.run("depth_edit", edit, {"image": Image.fromarray((image * 255).astype(np.uint8))})
        assert ex.counters.cached_runs == 2 and ex.counters.step_cache == "taylorseer"
    assert np.abs(image - reference).mean() < 0.05


def test_cuda_only_quantizations_say_so_on_the_cpu(tiny_settings: Any) -> None:
    for quantize in ("fp8", "nf4"):
        with pytest.raises(UserError, match="needs a CUDA GPU"):
            Executor(tiny_settings.model_copy(update={"quantize": quantize})).models()
    auto = Executor(tiny_settings.model_copy(update={"quantize": "auto"}))
    assert auto.models().quantize == "none"


def test_attention_auto_is_native_on_the_cpu(tiny_settings: Any) -> None:
    from emage_agent.executor.acceleration import check_attention

    assert Executor(tiny_settings).models().speed.attention == "native"
    check_attention("flex")
    import importlib.util

    if importlib.util.find_spec("sageattention") is None:
        with pytest.raises(UserError, match="EMAGE_ATTENTION: sage attention needs the sageattention package"):
            check_attention("sage")
        with pytest.raises(UserError, match="sageattention"):
            Executor(tiny_settings.model_copy(update={"attention": "sage"})).models()


def test_compiled_runs_put_the_vae_in_channels_last_and_tile_large_decodes(tiny_settings: Any) -> None:
    import torch

    from emage_agent.executor.acceleration import set_vae_tiling

    settings = tiny_settings.model_copy(update={"compile": "regional", "compile_backend": "eager"})
    with Executor(settings) as ex:
        vae = ex.models().shared()["vae"]
        assert vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        assert hasattr(vae.decode, "_torchdynamo_orig_callable")  # the decode is compiled
        assert ex.counters.compile == "regional" and ex.counters.speed_why["compile"] == "EMAGE_COMPILE=regional as set"
    set_vae_tiling(vae, 2048, 2048)
    assert vae.use_tiling
    set_vae_tiling(vae, 1024, 1024)
    assert not vae.use_tiling
    with Executor(tiny_settings) as exact:  # auto on the CPU: nothing compiled, the VAE as loaded
        plain_vae = exact.models().shared()["vae"]
        assert not hasattr(plain_vae.decode, "_torchdynamo_orig_callable")


# ---- CUDA only: run on a GPU machine with `pytest -m gpu tests/test_speed.py` ---------------------------

cuda = pytest.mark.gpu


def _cuda_settings(tiny_settings: Any, **update: Any) -> Any:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return tiny_settings.model_copy(update={"device": "cuda", "dtype": "bfloat16", **update})


@cuda
@pytest.mark.parametrize("quantize", ["fp8", "nf4", "int8"])
def test_gpu_quantization_counts_fewer_bytes(tiny_settings: Any, quantize: str) -> None:
    import torch

    _cuda_settings(tiny_settings)  # skips without a GPU
    if quantize == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9")
    sizes = {}
    for q in ("none", quantize):
        with Executor(_cuda_settings(tiny_settings, quantize=q)) as ex:
            ex.run("generate", ARGS)
            sizes[q] = ex.counters.weight_bytes["transformer:base"]
    assert sizes[quantize] < sizes["none"]


@cuda
def test_gpu_auto_is_fp8_per_row_fused_and_quantized_on_the_device(tiny_settings: Any) -> None:
    import torch

    settings = _cuda_settings(tiny_settings, quantize="auto", compile="off")
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9")
    with Executor(settings) as ex:
        ex.run("generate", ARGS)
        transformer = next(iter(ex.models()._transformers.values()))
        weight = transformer.transformer_blocks[0].attn.to_qkv.weight
        assert ex.counters.quantize == "fp8" and "fp8" in ex.counters.speed_why["quantize"]
    assert type(weight).__name__ == "Float8Tensor" and weight.device.type == "cuda"
    assert weight.scale.numel() == weight.shape[0]  # one scale per row


@cuda
def test_gpu_flash_attention_runs(tiny_settings: Any) -> None:
    pytest.importorskip("flash_attn")
    with Executor(_cuda_settings(tiny_settings, attention="flash")) as ex:
        assert ex.run("generate", ARGS).image is not None
        assert ex.counters.attention == "flash"


@cuda
def test_gpu_regional_inductor_compile_is_reused(tiny_settings: Any) -> None:
    with Executor(_cuda_settings(tiny_settings, compile="regional")) as ex:
        first = ex.run("generate", ARGS)
        compiled = ex.counters.graphs_compiled
        ex.run("depth_edit", {"prompt": PROMPT, "seed": 1, "steps": 10}, {"image": first.image})
        assert ex.counters.graphs_compiled == compiled and ex.counters.recompiles == 0
