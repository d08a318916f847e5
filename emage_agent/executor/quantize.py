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
FIELD = "EMAGE_QUANTIZE"


def quantization_config(quantize: str, library: str) -> Any | None:
    """The ``quantization_config`` for ``from_pretrained`` (``library``: diffusers or transformers)."""
    if quantize == "none":
        return None
    if quantize in ("fp8", "int8"):
        try:
            from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Int8WeightOnlyConfig
        except ImportError:
            raise UserError(
                f"EMAGE_QUANTIZE={quantize} needs torchao: pip install 'emage-agent[quant]'", field=FIELD
            ) from None
        if library == "diffusers":
            from diffusers import TorchAoConfig
        else:
            from transformers import TorchAoConfig
        # fp8: dynamic fp8 activations with fp8 weights, so the matmuls themselves run in fp8.
        quant_type = Float8DynamicActivationFloat8WeightConfig() if quantize == "fp8" else Int8WeightOnlyConfig()
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
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    raise UserError(f"unknown quantization {quantize!r}; use none, fp8, int8, nf4 or auto", field=FIELD)


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


def resolve_quantize(
    setting: str, device: str, free_bytes: int, n_transformers: int = 4, vlm: str | None = None
) -> str:
    """The concrete quantization for ``setting``; ``auto`` asks the card and the memory planner
    (``vlm``: the local VLM sharing the device, if any)."""
    if setting != "auto":
        return setting
    if device != "cuda":
        return "none"
    import torch

    from emage_agent.executor.planner import plan_memory

    choice = "fp8" if torch.cuda.get_device_capability() >= FP8_MIN_CAPABILITY else "int8"
    if plan_memory(free_bytes, choice, n_transformers=n_transformers, vlm=vlm).residency == "offload":
        return "nf4"
    return choice
