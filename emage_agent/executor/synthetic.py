"""Full-size models with random weights, built from the shipped configs: for speed and memory figures.

Speed and memory do not depend on the weights' values, so the benchmark measures the real
FLUX.1 architectures without downloading 60 GB. ``SyntheticLoader`` stands in for the
executor's ``Loader``: weighted components are built from ``configs/`` directly on the device
(seconds, where a CPU would take minutes to initialise 12B parameters), quantized in memory
with the same torchao configs ``from_pretrained`` would apply (``quantize_``) or with
bitsandbytes' 4-bit layers, and moved to the host when the residency keeps them there.
Tokenizers and the scheduler come from a small model directory (``text_source``): token ids
from a smaller vocabulary cost the encoders exactly as much compute.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from emage_agent.executor.devices import tensor_bytes
from emage_agent.executor.planner import COMPONENTS, CONFIGS
from emage_agent.executor.types import ExecutorCounters

log = logging.getLogger(__name__)


def build_random(component: str, dtype: Any, device: str) -> Any:
    """``component`` (a planner name) with random weights, in ``dtype`` on ``device``."""
    import torch

    filename, library, class_name, _role = COMPONENTS[component]
    config = json.loads((CONFIGS / filename).read_text(encoding="utf-8"))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in the target dtype: a float32 FLUX would need 48 GB first
    try:
        with torch.device(device):
            if library == "diffusers":
                import diffusers

                model = getattr(diffusers, class_name).from_config(config)
            else:
                import transformers

                cls = getattr(transformers, class_name)
                model = cls(cls.config_class(**config))
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype).eval()


def quantize_in_memory(model: Any, quantize: str, compute_dtype: Any) -> Any:
    """What ``quantization_config`` does during ``from_pretrained``, applied to a built model: the
    same torchao recipe (``quantize.torchao_config``), the model's kept modules (T5's ``wo``) left alone."""
    import torch

    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())

    def wanted(module: Any, name: str) -> bool:
        return isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] not in keep

    if quantize in ("fp8", "int8"):
        from torchao.quantization import quantize_

        from emage_agent.executor.quantize import torchao_config

        quantize_(model, torchao_config(quantize), filter_fn=wanted)
    elif quantize == "nf4":
        _to_nf4(model, compute_dtype, keep)
    return model


def _to_nf4(model: Any, compute_dtype: Any, keep: set[str]) -> None:
    import bitsandbytes as bnb
    import torch

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear or name in keep:
                continue
            device = child.weight.device
            layer = bnb.nn.Linear4bit(
                child.in_features, child.out_features, bias=child.bias is not None,
                compute_dtype=compute_dtype, quant_type="nf4", device="meta",
            )  # fmt: skip
            layer.weight = bnb.nn.Params4bit(child.weight.data.cpu(), requires_grad=False, quant_type="nf4")
            if child.bias is not None:
                layer.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, name, layer.to(device))


class SyntheticLoader:
    """The ``Loader`` interface, building random full-size models instead of reading files."""

    def __init__(self, counters: ExecutorCounters, text_source: str, device: str, keep_on_host: bool) -> None:
        from emage_agent.core.settings import Settings
        from emage_agent.executor.loading import Loader

        self._files = Loader(Settings(_env_file=None), counters)  # tokenizers and the scheduler
        self._text_source = text_source
        self._device = device
        self._keep_on_host = keep_on_host
        self._counters = counters

    def load(self, component: str, cls: Any, source: str, *, quantization: Any = None, **kwargs: Any) -> Any:
        if component == "depth_estimator_processor":
            return depth_processor()
        if not kwargs.get("weights", True) or component not in COMPONENTS:
            kwargs.pop("dtype", None)
            return self._files.load(component, cls, self._text_source, **kwargs)
        import torch

        dtype = kwargs.get("dtype") or torch.float32
        model = build_random(component, dtype, self._device)
        if quantization is not None:
            quantize_in_memory(model, _kind(quantization), torch.bfloat16)
        if self._keep_on_host:
            model.to("cpu")
        self._counters.count_load(component, 0)
        size = sum(tensor_bytes(t) for t in model.parameters())
        log.info("built %s with random weights: %.2f GB", component, size / 1e9)
        return model


def depth_processor() -> Any:
    """Depth Anything V2's published preprocessing: 518 px, aspect kept, a multiple of 14."""
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    return DPTImageProcessorPil(
        size={"height": 518, "width": 518},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        do_pad=False,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )


def _kind(quantization: Any) -> str:
    if getattr(quantization, "load_in_4bit", False):
        return "nf4"
    name = type(getattr(quantization, "quant_type", None)).__name__
    return "fp8" if name.startswith("Float8") else "int8"
