"""Speed settings applied to a loaded transformer: attention backend, compilation, step cache.

Each is opt-in through settings and applied once per transformer, right after it loads, so every
pipeline built on that transformer runs the same way.

- Attention goes through diffusers' attention dispatcher; ``auto`` takes the fastest backend
  installed (flash-attn, then SageAttention, then PyTorch's own SDPA).
- ``regional`` compilation compiles the repeated transformer blocks (diffusers'
  ``compile_repeated_blocks``): all four FLUX.1 variants share the block classes and shapes,
  so a tool switch at the same image size re-uses the compiled code. ``full`` compiles the
  whole transformer (faster steady state, one compile per variant and input width).
- The step cache (First Block Cache or TaylorSeer) skips transformer work on steps whose
  output it can predict. Short runs (few effective steps, e.g. a light polish edit) run
  uncached: each skipped step there is a large share of the image; except with compilation
  on, where removing and re-adding the cache's hooks would recompile the blocks.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from emage_agent.core.errors import UserError

log = logging.getLogger(__name__)

# A run with fewer effective denoising steps than this runs without the step cache.
MIN_CACHED_STEPS = 8
# What each EMAGE_ATTENTION name means in diffusers' dispatcher, and the package it needs.
ATTENTION_BACKENDS = {"native": ("native", None), "flash": ("flash", "flash_attn"), "sage": ("sage", "sageattention")}
ATTENTION_BACKENDS["flex"] = ("flex", None)


def choose_attention(setting: str, device: str) -> str:
    """The backend for ``setting``; ``auto`` prefers flash, then sage, on CUDA, else native."""
    if setting != "auto":
        package = ATTENTION_BACKENDS[setting][1]
        if package and importlib.util.find_spec(package) is None:
            raise UserError(
                f"{setting} attention needs the {package} package; use auto or native", field="EMAGE_ATTENTION"
            )
        return setting
    if device == "cuda":
        for name in ("flash", "sage"):
            if importlib.util.find_spec(ATTENTION_BACKENDS[name][1] or "") is not None:
                return name
    return "native"


def apply_attention(transformer: Any, backend: str) -> None:
    if backend == "native":
        return  # diffusers' default already is PyTorch's scaled_dot_product_attention
    transformer.set_attention_backend(ATTENTION_BACKENDS[backend][0])


def apply_compile(transformer: Any, mode: str, backend: str, fullgraph: bool = True) -> None:
    """``fullgraph=False`` where a step cache is on: its decision to skip is a deliberate graph break."""
    if mode == "regional":
        transformer.compile_repeated_blocks(fullgraph=fullgraph, backend=backend)
    elif mode == "full":
        transformer.compile(fullgraph=fullgraph, backend=backend)


def cache_config(mode: str, threshold: float) -> Any | None:
    if mode == "first_block":
        from diffusers import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=threshold)
    if mode == "taylorseer":
        from diffusers import TaylorSeerCacheConfig

        return TaylorSeerCacheConfig(cache_interval=5, disable_cache_before_step=3, max_order=1)
    return None


def set_step_cache(transformer: Any, config: Any | None, on: bool) -> None:
    """Switch ``transformer``'s step cache on or off for the next run, with a fresh state.

    Hooks change only when the switch does: re-installing them would make compiled blocks
    recompile. The pipelines reset the hooks' state after each call; this resets it before too.
    """
    if config is None:
        return
    enabled = transformer.is_cache_enabled
    if enabled and not on:
        transformer.disable_cache()
    elif on and not enabled:
        transformer.enable_cache(config)
    elif on:
        transformer._reset_stateful_cache()


def graphs_compiled() -> int:
    """How many graphs torch.compile has compiled in this process (0 before it is imported)."""
    import sys

    if "torch._dynamo" not in sys.modules:
        return 0
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class Speed:
    """The resolved speed settings of one model manager, applied to each transformer it loads."""

    def __init__(self, settings: Any, device: str, quantize: str, counters: Any) -> None:
        self.device = device
        self.quantize = quantize
        self.compile = settings.compile
        self.compile_backend = settings.compile_backend
        self.attention = choose_attention(settings.attention, device)
        self.step_cache = settings.step_cache
        self.cache = cache_config(settings.step_cache, settings.step_cache_threshold)
        self.counters = counters
        self._sizes: set[tuple[int, int]] = set()
        counters.quantize, counters.compile = quantize, settings.compile
        counters.step_cache, counters.attention = settings.step_cache, self.attention

    def prepare(self, transformer: Any) -> None:
        """Attention backend and compilation for a freshly loaded transformer."""
        apply_attention(transformer, self.attention)
        apply_compile(transformer, self.compile, self.compile_backend, fullgraph=self.cache is None)

    @contextmanager
    def run(self, transformer: Any, call: dict[str, Any]) -> Iterator[None]:
        """Around one pipeline call: the step cache on or off, and the graphs it compiled counted."""
        effective = call.get("num_inference_steps", 28) * call.get("strength", 1.0)
        # With compilation on, switching the cache's hooks off and on would recompile the blocks.
        cached = self.cache is not None and (effective >= MIN_CACHED_STEPS or self.compile != "off")
        set_step_cache(transformer, self.cache, cached)
        self.counters.cached_runs += int(cached)
        size = (int(call.get("height") or 0), int(call.get("width") or 0))
        before = graphs_compiled()
        try:
            # FluxPipeline names its cache context per step; the edit pipelines name none, so name
            # one for the whole call (an inner context replaces it, and clears it, step by step).
            with transformer.cache_context("cond") if cached else nullcontext():
                yield
        finally:
            new = graphs_compiled() - before
            self.counters.graphs_compiled += new
            if size in self._sizes:
                self.counters.recompiles += new
            self._sizes.add(size)
