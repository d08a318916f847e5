"""The memory planner: bytes per model from the published configs, and the residency that fits.

The ``configs/`` folder ships the published ``config.json`` of every model EMage runs (no
weights). Each is instantiated on PyTorch's meta device, which allocates nothing, so the
parameter counts are exact and cost no memory. Bytes then follow the dtype and quantization:
quantization (see ``quantize``) touches only the linear layers' weights of the transformers,
T5 and the local VLM (not its output head, which transformers' quantizers leave alone); the
helper models run in float32, as the executor loads them.

The local VLM (``EMAGE_VLM=local`` or ``EMAGE_PLANNER_VLM=local``) shares the device: the default
model's published config is shipped too, and any other is counted from its own ``config.json``
(a local folder or the Hugging Face cache). Once loaded it stays on the device beside FLUX
under every residency, so its bytes are added to every peak.

Residency, fastest first: ``resident`` (every transformer on the device), ``swap`` (one at a
time, the others in host memory), ``offload`` (diffusers' CPU offload: per model when the
largest one fits, else ``sequential``, per layer, which moves a transformer over the bus on
every step).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from emage_agent.executor.activations import activation_bytes
from emage_agent.executor.devices import GiB, Policy
from emage_agent.executor.quantize import NF4_BLOCK, NF4_DOUBLE_QUANT

CONFIGS = Path(__file__).with_name("configs")
GB = 10**9
# Host-to-device bandwidth a pinned PCIe 4.0 x16 link sustains in practice: the plan's figure where no
# link was measured (``swapping.bandwidth_class`` names the measured one).
BUS_BYTES_PER_S = 25 * GB
# Published FLUX.1-dev 1024x1024, 28 steps, bf16 eager on one H100; the yardstick for "slower".
REFERENCE_IMAGE_S = 6.6
STEPS = 28
# Per-row quantization data budgeted for int8/fp8 weights: a scale and a zero point, float32 at most.
ROW_BYTES = 8

# name -> (config file, library, class, role). Roles: transformer, shared (every pipeline), helper.
COMPONENTS: dict[str, tuple[str, str, str, str]] = {
    "transformer:base": ("flux1-dev-transformer.json", "diffusers", "FluxTransformer2DModel", "transformer"),
    "transformer:canny": ("flux1-canny-dev-transformer.json", "diffusers", "FluxTransformer2DModel", "transformer"),
    "transformer:depth": ("flux1-depth-dev-transformer.json", "diffusers", "FluxTransformer2DModel", "transformer"),
    "transformer:fill": ("flux1-fill-dev-transformer.json", "diffusers", "FluxTransformer2DModel", "transformer"),
    # FLUX.1-Kontext-dev's transformer has FLUX.1-dev's architecture (the reference image joins the sequence).
    "transformer:kontext": ("flux1-dev-transformer.json", "diffusers", "FluxTransformer2DModel", "transformer"),
    "text_encoder_2": ("t5-xxl-encoder.json", "transformers", "T5EncoderModel", "shared"),
    "text_encoder": ("clip-l-text.json", "transformers", "CLIPTextModel", "shared"),
    "vae": ("flux1-vae.json", "diffusers", "AutoencoderKL", "shared"),
    "depth_estimator": ("depth-anything-v2-small.json", "transformers", "DepthAnythingForDepthEstimation", "helper"),
    "segmenter": ("clipseg-rd64-refined.json", "transformers", "CLIPSegForImageSegmentation", "helper"),
}
OffloadMode = Literal["none", "model", "sequential"]
TRANSFORMER_ORDER = [
    "transformer:base",
    "transformer:canny",
    "transformer:depth",
    "transformer:fill",
    "transformer:kontext",
]
MAX_SIDE = 2048  # the tools' largest width and height
LOCAL_VLM = "local_vlm"  # its key in ``MemoryPlan.components``
# Local VLMs whose published config ships with EMage: model id -> config file.
SHIPPED_VLMS = {"Qwen/Qwen2.5-VL-7B-Instruct": "qwen2.5-vl-7b-instruct.json"}


class ParameterCount(BaseModel):
    """``linear`` weights are what quantization shrinks; ``rows`` their output features (one scale each).

    ``kept``: the part of ``other`` in the modules transformers' quantizers leave alone because the
    model names them in ``_keep_in_fp32_modules`` (T5's feed-forward ``wo``, 1 B parameters)."""

    linear: int
    rows: int
    other: int
    kept: int = 0

    @property
    def total(self) -> int:
        return self.linear + self.other


def count_parameters(name: str) -> ParameterCount:
    """Exact parameter counts of a shipped config, built on the meta device (no memory used)."""
    filename, library, class_name, _role = COMPONENTS[name]
    return _count(filename, library, class_name)


def _count(filename: str, library: str, class_name: str) -> ParameterCount:
    return count_config(str(CONFIGS / filename), library, class_name)


@cache
def count_config(path: str, library: str = "transformers", class_name: str | None = None) -> ParameterCount:
    """Parameter counts of the model a ``config.json`` describes (class: its ``architectures``)."""
    import torch

    config = json.loads(Path(path).read_text(encoding="utf-8"))
    class_name = class_name or config["architectures"][0]
    with torch.device("meta"):
        if library == "diffusers":
            import diffusers

            model = getattr(diffusers, class_name).from_config(config)
        else:
            import transformers

            cls = getattr(transformers, class_name)
            model = cls(cls.config_class.from_dict(config))
    # transformers' quantizers keep the output head (often tied to the embeddings) unquantized,
    # and every module the model keeps in float32 (they join ``modules_to_not_convert``)
    head = model.get_output_embeddings() if library == "transformers" else None
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ()) if library == "transformers" else set()
    linear = rows = kept = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is head:
            continue
        if keep & set(name.split(".")):
            kept += module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)
            continue
        linear += module.weight.numel()
        rows += module.out_features
    total = sum(p.numel() for p in model.parameters())
    return ParameterCount(linear=linear, rows=rows, other=total - linear, kept=kept)


@cache
def kept_upcast(quantize: str) -> bool:
    """Whether the installed transformers loads the kept modules in float32 under ``quantize``.

    transformers 4.x did so for bitsandbytes (``use_keep_in_fp32_modules`` on its quantizer: T5's
    ``wo`` in float32, 4 GB); 5.x keeps them in the load dtype unless that is float16."""
    if quantize == "none":
        return False
    try:
        from transformers.quantizers import quantizer_bnb_4bit, quantizer_torchao
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    quantizer = quantizer_bnb_4bit.Bnb4BitHfQuantizer if quantize == "nf4" else quantizer_torchao.TorchAoHfQuantizer
    return bool(getattr(quantizer, "use_keep_in_fp32_modules", False))


def component_bytes(name: str, quantize: str = "none", dtype_bytes: int = 2, kept_fp32: bool | None = None) -> int:
    """Bytes of ``name`` on the device at ``dtype_bytes`` per unquantized parameter.

    ``kept_fp32``: whether the kept modules (T5's ``wo``) load in float32; None: as the installed
    transformers does."""
    counts = count_parameters(name)
    role = COMPONENTS[name][3]
    if role == "helper":
        return counts.total * 4  # float32, as the executor loads the helpers
    if quantize == "none" or not (role == "transformer" or name == "text_encoder_2"):
        return counts.total * dtype_bytes
    return quantized_bytes(counts, quantize, dtype_bytes, kept_fp32)


def quantized_bytes(counts: ParameterCount, quantize: str, dtype_bytes: int = 2, kept_fp32: bool | None = None) -> int:
    """Bytes after ``quantize`` shrinks the linear weights; the rest stays at ``dtype_bytes``, the kept
    modules at ``dtype_bytes`` or float32 (see ``kept_upcast``)."""
    if quantize == "none":
        return counts.total * dtype_bytes
    upcast = kept_upcast(quantize) if kept_fp32 is None else kept_fp32
    rest = (counts.other - counts.kept) * dtype_bytes + counts.kept * (4 if upcast else dtype_bytes)
    if quantize in ("fp8", "int8"):
        return counts.linear + counts.rows * ROW_BYTES + rest  # one byte a weight, scale data per row
    if quantize == "nf4":
        # half a byte a weight and one absmax per block: float32, or (double quantization, only when
        # quantize.py switches it on) 8-bit with a float32 per 256 blocks
        blocks = counts.linear // NF4_BLOCK
        absmax = blocks + blocks // 256 * 4 if NF4_DOUBLE_QUANT else blocks * 4
        return counts.linear // 2 + absmax + rest
    raise ValueError(f"unknown quantization {quantize!r}")


def vlm_config(model: str) -> Path | None:
    """The ``config.json`` of local VLM ``model``: shipped, in a local folder, or in the HF cache."""
    if model in SHIPPED_VLMS:
        return CONFIGS / SHIPPED_VLMS[model]
    folder = Path(model).expanduser()
    if (folder / "config.json").is_file():
        return folder / "config.json"
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
    except Exception:  # noqa: BLE001 - an odd id or a broken cache is just "not known"
        return None
    return Path(cached) if isinstance(cached, str) else None


def vlm_bytes(model: str, quantize: str = "none", dtype_bytes: int = 2) -> int:
    """Bytes of local VLM ``model`` on the device; 0 when its config cannot be found offline or built."""
    config = vlm_config(model)
    if config is None:
        return 0
    try:
        counts = count_config(str(config))
    except (KeyError, AttributeError, TypeError, ValueError):  # a config this transformers cannot build
        return 0
    return quantized_bytes(counts, quantize, dtype_bytes)


def pipeline_peak(
    quantize: str = "none", width: int = 1024, height: int = 1024, kontext: bool = False, kept_fp32: bool | None = None
) -> int:
    """Peak bytes of one FLUX.1 pipeline alone (transformer, encoders, VAE, activations): what the
    published measurements report, and the figure a benchmark's inference-only peak compares with."""
    weights = component_bytes("transformer:kontext" if kontext else "transformer:base", quantize, kept_fp32=kept_fp32)
    weights += sum(
        component_bytes(n, quantize, kept_fp32=kept_fp32) for n in COMPONENTS if COMPONENTS[n][3] == "shared"
    )
    return weights + activation_bytes(width, height, kontext=kontext)


class MemoryPlan(BaseModel):
    """What fits in ``vram_gb`` GiB, and what it will cost; ``doctor --json`` prints it."""

    vram_gb: float
    quantize: str
    residency: Policy
    offload_mode: OffloadMode
    peak_bytes: int
    fits: bool
    components: dict[str, int]
    headroom_bytes: int
    width: int
    height: int
    peak_at_max_bytes: int  # the same residency at 2048x2048, the largest size the tools allow (VAE tiled)
    bus_bytes_per_image: int
    tool_switch_bytes: int
    tool_switch_seconds: float
    link: str
    extra_seconds_per_image: float
    slowdown_vs_resident: float
    advice: str


def plan_memory(
    vram_bytes: int,
    quantize: str = "none",
    *,
    n_transformers: int = 4,
    residency: str = "auto",
    headroom: int | None = None,
    vlm: str | None = None,
    width: int = 1024,
    height: int = 1024,
    kept_fp32: bool | None = None,
    bus_bytes_per_s: int = BUS_BYTES_PER_S,
    link: str = "PCIe 4.0 x16 (assumed)",
) -> MemoryPlan:
    """The fastest residency whose peak fits ``vram_bytes`` (or the one asked for), with its costs.

    ``vlm``: the local VLM that judges or plans in this process (None: a remote one); it stays on
    the device, so it joins the helpers in every peak. ``headroom``: the activations' bytes; None:
    ``activation_bytes`` at ``width`` x ``height`` (Kontext's doubled tokens when it is among the
    transformers). ``kept_fp32``: see ``component_bytes``. ``bus_bytes_per_s``/``link``: the pinned
    host-to-device rate of the card's link, measured where there is a card."""
    kontext = n_transformers >= len(TRANSFORMER_ORDER)
    if headroom is None:
        headroom = activation_bytes(width, height, kontext=kontext)
    at_max = activation_bytes(MAX_SIDE, MAX_SIDE, kontext=kontext)
    names = [n for n in COMPONENTS if COMPONENTS[n][3] != "transformer" or _wanted(n, n_transformers)]
    sizes = {n: component_bytes(n, quantize, kept_fp32=kept_fp32) for n in names}
    if vlm:
        sizes[LOCAL_VLM] = vlm_bytes(vlm, quantize)
    transformers = [sizes[n] for n in names if n.startswith("transformer:")]
    shared = sum(sizes[n] for n in names if COMPONENTS[n][3] == "shared")
    helpers = sum(sizes[n] for n in names if COMPONENTS[n][3] == "helper") + sizes.get(LOCAL_VLM, 0)
    largest = max(transformers)
    peaks = {
        "resident": shared + helpers + sum(transformers) + headroom,
        "swap": shared + helpers + largest + headroom,
        "offload": helpers + max(largest, sizes["text_encoder_2"]) + headroom,
    }
    if residency == "auto":
        residency = next((p for p in ("resident", "swap") if peaks[p] <= vram_bytes), "offload")
    policy: Policy = residency  # type: ignore[assignment]
    mode: OffloadMode = "none"
    peak = peaks[policy]
    encoders = sizes["text_encoder_2"] + sizes["text_encoder"] + sizes["vae"]
    bus = 0
    if policy == "offload":
        mode = "model" if peak <= vram_bytes else "sequential"
        if mode == "sequential":
            # one transformer block at a time: the peak is the activations, the cost is the bus
            peak = helpers + headroom
            bus = encoders + largest * STEPS
        else:
            bus = encoders + largest
    switch = 0 if policy == "resident" else largest
    extra = bus / bus_bytes_per_s
    slowdown = (REFERENCE_IMAGE_S + extra) / REFERENCE_IMAGE_S
    advice = _advice(policy, mode, quantize, extra, slowdown, switch, bus_bytes_per_s, link)
    advice += _vlm_note(vlm, sizes.get(LOCAL_VLM))
    peak_at_max = peak - headroom + at_max
    if peak <= vram_bytes < peak_at_max:
        advice += f"; 2048x2048 would need {peak_at_max / GiB:.1f} GiB: keep images near 1024x1024"
    return MemoryPlan(
        vram_gb=round(vram_bytes / GiB, 2),
        quantize=quantize,
        residency=policy,
        offload_mode=mode,
        peak_bytes=peak,
        fits=peak <= vram_bytes,
        components=sizes,
        headroom_bytes=headroom,
        width=width,
        height=height,
        peak_at_max_bytes=peak_at_max,
        bus_bytes_per_image=bus,
        tool_switch_bytes=switch,
        tool_switch_seconds=round(switch / bus_bytes_per_s, 2),
        link=link,
        extra_seconds_per_image=round(extra, 2),
        slowdown_vs_resident=round(slowdown, 2),
        advice=advice,
    )


def _vlm_note(vlm: str | None, nbytes: int | None) -> str:
    if not vlm:
        return ""
    if not nbytes:
        return f"; the local VLM {vlm} is not counted (no config.json it could build was found offline)"
    return f"; the local VLM ({nbytes / GB:.1f} GB) stays on the device beside FLUX"


def _wanted(name: str, n_transformers: int) -> bool:
    return TRANSFORMER_ORDER.index(name) < max(1, n_transformers)


def _advice(
    policy: str, mode: str, quantize: str, extra: float, slowdown: float, switch: int, bus: int, link: str
) -> str:
    if policy == "resident":
        return "every model stays on the device: tool switches move nothing"
    if policy == "swap":
        return (
            f"one transformer at a time: each tool switch moves {switch / GB:.1f} GB "
            f"(about {switch / bus:.1f} s at {bus // GB} GB/s over {link}, from pinned host copies)"
        )
    lighter = {"none": "fp8 (or int8 below compute capability 8.9)", "int8": "nf4", "fp8": "nf4"}.get(quantize)
    hint = f"; try --quantize {lighter}" if lighter else ""
    return (
        f"{mode} CPU offload: about {extra:.0f} s of bus transfers per 1024x1024 {STEPS}-step image, "
        f"roughly {slowdown:.1f}x slower than resident (against {REFERENCE_IMAGE_S} s of H100 compute){hint}"
    )


def plan_as_dict(plan: MemoryPlan) -> dict[str, Any]:
    return plan.model_dump(mode="json")


def recommend(
    vram_bytes: int, capability: tuple[int, int] | None = None, n_transformers: int = 4, vlm: str | None = None
) -> dict[str, Any]:
    """The settings to use on a card: the least lossy quantization with the best residency.

    fp8 first where the card has fp8 tensor cores (or when the card is unknown): it is also
    the fastest; otherwise bf16, then int8, then nf4. Regional compilation is always worth it
    for more than one image (it compiles in about a minute and is re-used by every tool).
    """
    fp8 = capability is None or capability >= (8, 9)
    order = ["fp8", "nf4"] if fp8 else ["none", "int8", "nf4"]
    plans = {q: plan_memory(vram_bytes, q, n_transformers=n_transformers, vlm=vlm) for q in order}
    rank = {"resident": 0, "swap": 1, "offload": 2}
    best = min(order, key=lambda q: (rank[plans[q].residency], plans[q].bus_bytes_per_image, order.index(q)))
    return {
        "quantize": best,
        "compile": "regional",
        "step_cache": "off",
        "attention": "auto",
        "residency": plans[best].residency,
        "env": f"EMAGE_QUANTIZE={best} EMAGE_COMPILE=regional EMAGE_ATTENTION=auto",
    }
