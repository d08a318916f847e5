"""Speed settings applied to a loaded transformer and the shared VAE: attention, compilation, step cache.

Each is applied once per module, right after it loads, so every pipeline built on it runs the
same way. What ``auto`` resolves to, and why, is ``speed_choice``'s business.

- Attention goes through diffusers' attention dispatcher (``speed_choice.ATTENTION_BACKENDS``).
- ``regional`` compiles the repeated transformer blocks (diffusers' ``compile_repeated_blocks``):
  all FLUX.1 variants share the block classes and shapes, so a tool switch at the same image
  size re-uses the compiled code. ``full`` compiles the whole transformer; ``max-autotune``
  does so with inductor's autotuning and CUDA graphs (shapes are static per image size: every
  compile is ``dynamic=False``), the flux-fast recipe. Any mode sets the inductor flags the
  diffusers-torchao recipe sets, caps recompiles, keeps inductor's caches in the user's cache
  folder, and puts the VAE in channels_last with a compiled decode.
- The step cache (First Block Cache or TaylorSeer) skips transformer work on steps whose
  output it can predict. Short runs (few effective steps, e.g. a light polish edit) run
  uncached: each skipped step there is a large share of the image; except with compilation
  on, where removing and re-adding the cache's hooks would recompile the blocks.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from emage_agent.core.errors import UserError
from emage_agent.executor.speed_choice import ATTENTION_BACKENDS, SpeedChoice

log = logging.getLogger(__name__)

# A run with fewer effective denoising steps than this runs without the step cache.
MIN_CACHED_STEPS = 8
# Compiles per compiled function before dynamo falls back to eager: a few image sizes, not a storm.
RECOMPILE_LIMIT = 8
# What the diffusers-torchao and flux-fast recipes set for FLUX on inductor.
INDUCTOR_FLAGS = {
    "conv_1x1_as_mm": True,
    "coordinate_descent_tuning": True,
    "coordinate_descent_check_all_directions": True,
    "epilogue_fusion": False,
}


def check_attention(backend: str) -> None:
    """A backend named by the user must be installed; say which package it needs."""
    package = ATTENTION_BACKENDS[backend][1]
    if package and importlib.util.find_spec(package) is None:
        raise UserError(f"{backend} attention needs the {package} package; use auto or native", field="EMAGE_ATTENTION")


def apply_attention(transformer: Any, backend: str) -> None:
    if backend == "native":
        return  # diffusers' default already is PyTorch's scaled_dot_product_attention
    transformer.set_attention_backend(ATTENTION_BACKENDS[backend][0])


def configure_compiler(cache_dir: str | None, backend: str) -> None:
    """Process-wide compiler settings, set before the first compile: recompile limit, the recipes'
    inductor flags, and the persistent caches (unless the user already points them elsewhere)."""
    import torch._dynamo

    torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
    if backend != "inductor":
        return
    if cache_dir and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    import torch._inductor.config as inductor

    inductor.fx_graph_cache = True
    for name, value in INDUCTOR_FLAGS.items():
        setattr(inductor, name, value)


def compile_kwargs(mode: str, backend: str, cuda_graphs: bool) -> dict[str, Any]:
    """``torch.compile`` arguments for ``mode``; inductor's mode only where inductor compiles."""
    kwargs: dict[str, Any] = {"backend": backend, "dynamic": False}
    if mode == "max-autotune" and backend == "inductor":
        kwargs["mode"] = "max-autotune" if cuda_graphs else "max-autotune-no-cudagraphs"
    return kwargs


def apply_compile(transformer: Any, mode: str, backend: str, fullgraph: bool = True, cuda_graphs: bool = False) -> None:
    """``fullgraph=False`` where a step cache is on: its decision to skip is a deliberate graph break."""
    kwargs = compile_kwargs(mode, backend, cuda_graphs)
    if mode == "regional":
        transformer.compile_repeated_blocks(fullgraph=fullgraph, **kwargs)
    elif mode in ("full", "max-autotune"):
        transformer.compile(fullgraph=fullgraph, **kwargs)


def prepare_vae(vae: Any, mode: str, backend: str) -> None:
    """With compilation on: the VAE in channels_last and its decode compiled (diffusers-torchao)."""
    if mode == "off":
        return
    import torch

    vae.to(memory_format=torch.channels_last)
    vae.decode = torch.compile(vae.decode, **compile_kwargs(mode, backend, cuda_graphs=False))


def set_vae_tiling(vae: Any, width: int, height: int) -> None:
    """Tiled decode above one megapixel (``activations.vae_tiled``): the planner counts on it."""
    from emage_agent.executor.activations import vae_tiled

    tiled = vae_tiled(width, height)
    if tiled != bool(getattr(vae, "use_tiling", False)):
        vae.enable_tiling() if tiled else vae.disable_tiling()


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

    def __init__(self, settings: Any, device: str, choice: SpeedChoice, counters: Any) -> None:
        self.device = device
        self.choice = choice
        self.quantize = choice.quantize
        self.compile = choice.compile
        self.compile_backend = settings.compile_backend
        self.attention = choice.attention
        if settings.attention != "auto":
            check_attention(self.attention)
        self.step_cache = settings.step_cache
        self.cache = cache_config(settings.step_cache, settings.step_cache_threshold)
        self.counters = counters
        self._sizes: set[tuple[int, int]] = set()
        self._vaes: set[int] = set()
        counters.quantize, counters.compile = choice.quantize, choice.compile
        counters.step_cache, counters.attention = settings.step_cache, self.attention
        counters.speed_why = dict(choice.why)
        if self.compile != "off":
            configure_compiler(choice.compile_cache, self.compile_backend)

    def prepare(self, transformer: Any) -> None:
        """Attention backend and compilation for a freshly loaded transformer."""
        apply_attention(transformer, self.attention)
        # CUDA graphs need static shapes and no Python-side state between steps: no step cache
        graphs = self.device == "cuda" and self.cache is None
        apply_compile(transformer, self.compile, self.compile_backend, fullgraph=self.cache is None, cuda_graphs=graphs)

    def prepare_vae(self, vae: Any) -> None:
        """channels_last and a compiled decode for the shared VAE, once."""
        if id(vae) not in self._vaes:
            self._vaes.add(id(vae))
            prepare_vae(vae, self.compile, self.compile_backend)

    @contextmanager
    def run(self, transformer: Any, call: dict[str, Any], vae: Any = None) -> Iterator[None]:
        """Around one pipeline call: VAE tiling for the size, the step cache on or off, and the
        graphs it compiled counted."""
        effective = call.get("num_inference_steps", 28) * call.get("strength", 1.0)
        # With compilation on, switching the cache's hooks off and on would recompile the blocks.
        cached = self.cache is not None and (effective >= MIN_CACHED_STEPS or self.compile != "off")
        set_step_cache(transformer, self.cache, cached)
        self.counters.cached_runs += int(cached)
        size = (int(call.get("height") or 0), int(call.get("width") or 0))
        if vae is not None and all(size):
            set_vae_tiling(vae, size[1], size[0])
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
