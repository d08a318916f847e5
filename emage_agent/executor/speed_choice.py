"""What ``auto`` means for speed on a given card: quantization, compilation and attention, with reasons.

Pure logic over a described GPU (``GPU``), so the choice is tested without CUDA and ``doctor``
can show it for a card this machine does not have. The rules:

- quantization: fp8 with per-row scales where the tensor cores have fp8 (compute capability
  8.9 and up: Ada, Hopper, Blackwell): about 1.7x faster than bf16 at near-identical quality;
  int8 per channel below that when bf16 would not stay on the card, else bf16; nf4 when the
  8-bit choice would need CPU offload. On the CPU, bf16 (nothing to gain).
- compilation: regional (the repeated blocks, shared by every FLUX variant and re-used across
  tool switches) on a CUDA GPU. Long-lived processes (ui, mcp, batch, serve) amortize it over
  every session; the one-shot CLI keeps inductor's caches in the user's cache folder, so only
  its first run on a machine pays the full compile. On the CPU, off.
- attention: FlashAttention-3 (``_flash_3``) where installed on Hopper, then flash-attn 2, then
  PyTorch's SDPA. Lossy backends (SageAttention, fp8 attention) only when named.

``--quantize none --compile off`` (and ``EMAGE_ATTENTION=native``) keep exact bf16 eager.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field

from emage_agent.executor.planner import plan_memory
from emage_agent.executor.quantize import FP8_MIN_CAPABILITY

FA3_CAPABILITY = (9, 0)  # FlashAttention-3 is written for Hopper (sm90) only
# EMAGE_ATTENTION name -> (diffusers' dispatcher backend, the module it needs, lossy)
ATTENTION_BACKENDS: dict[str, tuple[str, str | None, bool]] = {
    "native": ("native", None, False),
    "flex": ("flex", None, False),
    "flash": ("flash", "flash_attn", False),
    "fa3": ("_flash_3", "flash_attn_interface", False),
    "sage": ("sage", "sageattention", True),
    "sage_fp8": ("_sage_qk_int8_pv_fp8_cuda_sm90", "sageattention", True),  # fp8 P*V: the fp8 attention
}


class GPU(BaseModel):
    """The card as the choice sees it: ``free_bytes`` is what FLUX may use."""

    name: str = "GPU"
    capability: tuple[int, int]
    free_bytes: int


class SpeedChoice(BaseModel):
    """The resolved speed settings and, for each, why (sessions and ``doctor`` show both)."""

    quantize: str
    compile: str
    attention: str
    compile_cache: str | None = None
    why: dict[str, str] = Field(default_factory=dict)


def compile_cache_dir() -> Path:
    """Where inductor keeps compiled kernels across processes: the user's cache folder."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "emage" / "torch-compile"


def choose_quantize(setting: str, gpu: GPU | None, n_transformers: int = 4, vlm: str | None = None) -> tuple[str, str]:
    """The quantization for ``setting`` on ``gpu`` (None: the CPU), and why."""
    if setting != "auto":
        return setting, f"EMAGE_QUANTIZE={setting} as set"
    if gpu is None:
        return "none", "auto on the CPU: bf16/fp32, quantization buys nothing there"

    def residency(quantize: str) -> str:
        return plan_memory(gpu.free_bytes, quantize, n_transformers=n_transformers, vlm=vlm).residency

    if gpu.capability >= FP8_MIN_CAPABILITY:
        if residency("fp8") == "offload":
            return "nf4", "auto: even fp8 would need CPU offload on this card; nf4 keeps a transformer on it"
        return "fp8", f"auto: compute capability {gpu.capability[0]}.{gpu.capability[1]} has fp8 tensor cores"
    if residency("none") == "resident":
        return "none", "auto: no fp8 on this card and bf16 stays resident: no loss needed"
    if residency("int8") != "offload":
        return "int8", "auto: no fp8 on this card (compute capability below 8.9); int8 per channel fits"
    return "nf4", "auto: even int8 would need CPU offload on this card; nf4 keeps a transformer on it"


def choose_compile(setting: str, gpu: GPU | None, long_lived: bool) -> tuple[str, str]:
    if setting != "auto":
        return setting, f"EMAGE_COMPILE={setting} as set"
    if gpu is None:
        return "off", "auto on the CPU: compilation would cost more than it saves"
    if long_lived:
        return "regional", "auto in a long-lived process: the compile is paid once for every session"
    return "regional", "auto in the CLI: compiled kernels are cached in the user's cache folder for the next run"


def choose_attention(setting: str, gpu: GPU | None, installed: set[str]) -> tuple[str, str]:
    """``installed``: the importable modules among the backends' (see ``installed_attention``)."""
    if setting != "auto":
        return setting, f"EMAGE_ATTENTION={setting} as set"
    if gpu is None:
        return "native", "auto on the CPU: PyTorch's SDPA"
    if "flash_attn_interface" in installed and gpu.capability == FA3_CAPABILITY:
        return "fa3", "auto on Hopper with FlashAttention-3 installed"
    if "flash_attn" in installed and gpu.capability >= (8, 0):
        return "flash", "auto: flash-attn installed (FlashAttention-3 needs Hopper and its own build)"
    return "native", "auto: PyTorch's SDPA (no flash-attn installed); lossy backends only when named"


def installed_attention() -> set[str]:
    import importlib.util

    names = {module for _b, module, _l in ATTENTION_BACKENDS.values() if module}
    return {name for name in names if importlib.util.find_spec(name) is not None}


def choose_speed(
    quantize: str,
    compile: str,
    attention: str,
    gpu: GPU | None,
    *,
    long_lived: bool = False,
    installed: set[str] | None = None,
    n_transformers: int = 4,
    vlm: str | None = None,
) -> SpeedChoice:
    """Every speed setting resolved for ``gpu`` (None: the CPU), with the reasons."""
    q, q_why = choose_quantize(quantize, gpu, n_transformers, vlm)
    c, c_why = choose_compile(compile, gpu, long_lived)
    a, a_why = choose_attention(attention, gpu, installed if installed is not None else set())
    cache = str(compile_cache_dir()) if c != "off" else None
    return SpeedChoice(
        quantize=q,
        compile=c,
        attention=a,
        compile_cache=cache,
        why={"quantize": q_why, "compile": c_why, "attention": a_why},
    )


def describe_gpu(device: str) -> GPU | None:
    """The current CUDA card (None on the CPU); free bytes as the memory planner counts them."""
    if device != "cuda":
        return None
    import torch

    from emage_agent.executor.devices import free_device_bytes

    return GPU(
        name=torch.cuda.get_device_name(),
        capability=tuple(torch.cuda.get_device_capability()),
        free_bytes=free_device_bytes(device),
    )


def resolve_quantize(
    setting: str, device: str, free_bytes: int, n_transformers: int = 4, vlm: str | None = None
) -> str:
    """The concrete quantization for ``setting`` on this process's device (the local VLM uses it too)."""
    gpu = describe_gpu(device)
    if gpu is not None:
        gpu = gpu.model_copy(update={"free_bytes": free_bytes})
    return choose_quantize(setting, gpu, n_transformers, vlm)[0]
