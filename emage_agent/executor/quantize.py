"""Weight quantization of the big models (FLUX transformers, T5, the local VLM) through their libraries.

``fp8`` and ``int8`` go through torchao (``TorchAoConfig``), ``nf4`` through bitsandbytes
(``BitsAndBytesConfig``). The config is handed to ``from_pretrained``, so each model is quantized
once while it loads and the quantized module is the one every pipeline shares. The local VLM
(``vlm_runner``) takes the same config from transformers. CLIP-L, the VAE and the helper models
are small and stay unquantized: their bytes would buy nothing.

``auto`` picks from the card: fp8 where the tensor cores have fp8 (compute capability 8.9 and
up), int8 below, and nf4 when even int8 would not let one transformer stay on the device.
"""

from __future__ import annotations

from typing import Any, Literal

from emage_agent.core.errors import UserError

Quantize = Literal["none", "fp8", "int8", "nf4"]
# Components that are quantized when EMAGE_QUANTIZE asks for it.
QUANTIZED_COMPONENTS = ("transformer", "text_encoder_2")
FP8_MIN_CAPABILITY = (8, 9)
T5_KEPT = ("wo",)  # T5's ``_keep_in_fp32_modules``: its feed-forward output overflows when narrowed
FIELD = "EMAGE_QUANTIZE"


# nf4 as bitsandbytes runs it here: one float32 absmax per 64 weights, no double quantization (the
# planner reads these two, so the plan and the load agree).
NF4_BLOCK = 64
NF4_DOUBLE_QUANT = False


def torchao_config(quantize: str) -> Any:
    """The torchao recipe: fp8 weights and dynamic fp8 activations with per-row scales (the
    diffusers-torchao and flux-fast recipe: faster on Hopper and more accurate than per-tensor),
    or int8 weights with one scale per output channel."""
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Int8WeightOnlyConfig, PerRow
    except ImportError:
        raise UserError(
            f"EMAGE_QUANTIZE={quantize} needs torchao: pip install 'emage-agent[quant]'", field=FIELD
        ) from None
    if quantize == "fp8":
        return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    return Int8WeightOnlyConfig(granularity=PerRow())  # per channel: one scale per output row


def quantization_config(quantize: str, library: str, keep: tuple[str, ...] = ()) -> Any | None:
    """The ``quantization_config`` for ``from_pretrained`` (``library``: diffusers or transformers).

    ``keep``: module names left unquantized, e.g. T5's ``wo`` (``T5_KEPT``). transformers means to
    skip a model's ``_keep_in_fp32_modules`` itself, but its torchao path (5.x) matches the names
    against parameter names ("...wo.weight") and so quantizes them; the regex form fixes that, the
    plain name serves older releases, and bitsandbytes skips them either way."""
    if quantize == "none":
        return None
    if quantize in ("fp8", "int8"):
        quant_type = torchao_config(quantize)
        if library == "diffusers":
            from diffusers import TorchAoConfig
        else:
            from transformers import TorchAoConfig
        if keep:
            return TorchAoConfig(quant_type, modules_to_not_convert=[*keep, *(rf".*\.{name}" for name in keep)])
        return TorchAoConfig(quant_type)
    if quantize == "nf4":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise UserError(
                "EMAGE_QUANTIZE=nf4 needs bitsandbytes: pip install 'emage-agent[quant]'", field=FIELD
            ) from None
        import torch

        if library == "diffusers":
            from diffusers import BitsAndBytesConfig
        else:
            from transformers import BitsAndBytesConfig
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=NF4_DOUBLE_QUANT,
        )
    raise UserError(f"unknown quantization {quantize!r}; use none, fp8, int8, nf4 or auto", field=FIELD)


def fuse_qkv(transformer: Any) -> None:
    """Fuse each attention's q, k and v projections into one matmul (before quantizing, so the fused
    weight gets its own per-row scales), and drop the unfused copies diffusers keeps beside them."""
    transformer.fuse_qkv_projections()
    for module in transformer.modules():
        if not getattr(module, "fused_projections", False):
            continue
        for fused, parts in (
            ("to_qkv", ("to_q", "to_k", "to_v")),
            ("to_added_qkv", ("add_q_proj", "add_k_proj", "add_v_proj")),
        ):
            if hasattr(module, fused):
                for name in parts:
                    if hasattr(module, name):
                        delattr(module, name)


def quantize_on_device(model: Any, quantize: str, device: str) -> None:
    """torchao quantization in place, one linear layer at a time moved to ``device`` first: the
    quantizing runs on the GPU and the bf16 copy of the whole model never sits there."""
    from torchao.quantization import quantize_

    quantize_(model, torchao_config(quantize), device=device)
    model.to(device)  # the norms, embeddings and biases outside the linear layers


def check_supported(quantize: str, device: str) -> None:
    """fp8 and nf4 need a CUDA GPU (fp8 one with compute capability 8.9+); say so before loading."""
    if quantize in ("fp8", "nf4") and device != "cuda":
        raise UserError(f"EMAGE_QUANTIZE={quantize} needs a CUDA GPU; use int8 or none on the CPU", field=FIELD)
    if quantize == "fp8":
        import torch

        if torch.cuda.get_device_capability() < FP8_MIN_CAPABILITY:
            raise UserError(
                "fp8 needs compute capability 8.9 or newer (Ada, Hopper, Blackwell); use int8",
                field=FIELD,
            )
