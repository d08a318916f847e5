"""The model manager: every weight loaded once, shared where FLUX.1 variants agree, placed by policy.

The FLUX.1 variants differ only in their 12B transformer; the CLIP and T5 encoders, their
tokenizers and the VAE are the same, so they are loaded once (from the base model) and the
very same objects go into every pipeline. Transformers are keyed by source, so two settings
naming one repository share one load. Where they live follows the residency policy:

- ``resident``: everything on the device (no traffic after the first move);
- ``swap``: encoders and VAE on the device, transformers wait in host memory and only the
  active one sits on the device;
- ``offload``: diffusers' CPU offload, for devices too small for one transformer: per model
  when the largest model fits, else per layer (``sequential``).

With ``EMAGE_RESIDENCY=auto`` on a GPU the memory planner (``planner``) chooses the policy at
start-up from the card's free memory and the quantization, before anything loads, counting
the local VLM when it shares the device. The
transformers and T5 are quantized while they load (``quantize``), and each transformer gets
its attention backend and compilation once (``acceleration``).
"""

from __future__ import annotations

import gc
import logging
from collections import OrderedDict
from typing import Any

from emage_agent.core.settings import Settings
from emage_agent.core.tools import get_tool
from emage_agent.executor.devices import (
    Policy,
    free_device_bytes,
    module_bytes,
    module_device,
    move,
    resolve_device,
    resolve_dtype,
)
from emage_agent.executor.loading import Loader
from emage_agent.executor.quantize import (
    T5_KEPT,
    check_supported,
    fuse_qkv,
    quantization_config,
    quantize_on_device,
)
from emage_agent.executor.speed_choice import choose_speed, describe_gpu, installed_attention
from emage_agent.executor.swapping import HostCopies
from emage_agent.executor.types import ExecutorCounters

log = logging.getLogger(__name__)

# FLUX.1 family (the registry's ``Tool.family``) -> (diffusers pipeline class, Settings field naming its transformer)
FAMILY_PIPELINES = {
    "dev": ("FluxPipeline", "base_model"),
    "canny": ("FluxControlImg2ImgPipeline", "canny_model"),
    "depth": ("FluxControlImg2ImgPipeline", "depth_model"),
    "fill": ("FluxFillPipeline", "fill_model"),
    "kontext": ("FluxKontextPipeline", "kontext_model"),
}
MAX_SEQUENCE_LENGTH = 512  # FLUX.1-dev's T5 context
EMBEDDING_CACHE_SIZE = 32  # T5 embeddings are 4 MiB each in bfloat16


def env_name(field: str) -> str:
    return f"EMAGE_{field.upper()}"


class PromptCache:
    """A bounded LRU of prompt embeddings: an agent re-uses its prompt across many edits."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any | None:
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: Any, value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


class ModelManager:
    """Loads on first use, keeps what it loaded, and counts every byte read or moved."""

    def __init__(
        self, settings: Settings, counters: ExecutorCounters, local_vlm: str | None = None, long_lived: bool = False
    ) -> None:
        """``long_lived``: a process that serves many sessions (ui, mcp, batch, serve), where ``auto``
        compiles knowing the cost is shared."""
        self.settings = settings
        self.counters = counters
        self.device = resolve_device(settings)
        self.dtype = resolve_dtype(settings, self.device)
        counters.device = self.device
        self._loader = Loader(settings, counters)
        self._shared: dict[str, Any] | None = None
        self._transformers: dict[str, Any] = {}
        self._pipelines: dict[str, Any] = {}
        self._aux: dict[str, tuple[Any, Any]] = {}
        self._embeddings = PromptCache(EMBEDDING_CACHE_SIZE)
        self.policy: Policy | None = None
        self.offload_mode = "model"
        self.plan: Any = None
        free = free_device_bytes(self.device)
        n = len(self._sources())
        choice = choose_speed(
            settings.quantize,
            settings.compile,
            settings.attention,
            describe_gpu(self.device),
            long_lived=long_lived,
            installed=installed_attention(),
            n_transformers=n,
            vlm=local_vlm,
        )
        self.quantize = choice.quantize
        check_supported(self.quantize, self.device)
        if self.device == "cpu":
            self.policy = "resident"  # host memory is the device: nothing to move
        elif settings.residency != "auto":
            self.policy = settings.residency
        else:
            from emage_agent.executor.planner import plan_memory
            from emage_agent.executor.swapping import bandwidth_class, measure_pinned_bandwidth

            link, bus = bandwidth_class(measure_pinned_bandwidth(self.device))
            # FLUX loads before the first judgement, so the local VLM's bytes are still free here
            self.plan = plan_memory(
                free, self.quantize, n_transformers=n, vlm=local_vlm, bus_bytes_per_s=bus, link=f"{link} (measured)"
            )
            self.policy, self.offload_mode = self.plan.residency, self.plan.offload_mode
            log.info("memory plan: %s (%s)", self.policy, self.plan.advice)
        counters.residency = self.policy
        self._host = HostCopies(pin=self.device == "cuda")
        from emage_agent.executor.acceleration import Speed

        self.speed = Speed(settings, self.device, choice, counters)
        if self.plan is not None:
            counters.speed_why["residency"] = f"auto: {self.plan.advice}"

    def use_loader(self, loader: Any) -> None:
        """Replace where weights come from (the speed benchmark builds random full-size models)."""
        self._loader = loader

    def _sources(self) -> set[str]:
        """The distinct transformers the tools may load (a tool switched off, ``none``, loads nothing)."""
        sources = {getattr(self.settings, f) for _cls, f in FAMILY_PIPELINES.values()}
        return {s for s in sources if s and str(s).lower() not in ("none", "off")}

    def _placement(self) -> str | None:
        """Where bitsandbytes/transformers-quantized weights load: straight onto the GPU (``device_map``),
        never quantized on the host first (torchao's go through ``quantize_on_device`` instead)."""
        if self.device == "cuda" and self.quantize != "none" and self.policy != "offload":
            return self.device
        return None

    def _count_weights(self, component: str, module: Any) -> Any:
        self.counters.weight_bytes[component] = module_bytes(module)
        return module

    # -- loading -----------------------------------------------------------------------------

    def shared(self) -> dict[str, Any]:
        """Encoders, tokenizers and VAE of the base model: one copy for every pipeline."""
        if self._shared is None:
            from diffusers import AutoencoderKL
            from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

            parts = [
                ("vae", AutoencoderKL, "diffusers", True),
                ("text_encoder", CLIPTextModel, "transformers", True),
                ("text_encoder_2", T5EncoderModel, "transformers", True),
                ("tokenizer", AutoTokenizer, "transformers", False),
                ("tokenizer_2", AutoTokenizer, "transformers", False),
            ]
            # In the hub's layout each component's subfolder bears its name.
            self._shared = {
                name: self._loader.load(
                    name,
                    cls,
                    self.settings.base_model,
                    field=env_name("base_model"),
                    subfolder=name,
                    dtype=self.dtype if weights else None,
                    library=library,
                    weights=weights,
                    quantization=quantization_config(self.quantize, library, T5_KEPT)
                    if name == "text_encoder_2"
                    else None,
                    device_map=self._placement() if name == "text_encoder_2" else None,
                )
                for name, cls, library, weights in parts
            }
            for name, _cls, _library, weights in parts:
                if weights:
                    self._count_weights(name, self._shared[name])
            self.speed.prepare_vae(self._shared["vae"])
        return self._shared

    def _shared_modules(self) -> list[Any]:
        shared = self.shared()
        return [shared["vae"], shared["text_encoder"], shared["text_encoder_2"]]

    def _transformer(self, field: str) -> Any:
        source = getattr(self.settings, field)
        if source not in self._transformers:
            from diffusers import FluxTransformer2DModel

            component = f"transformer:{field.removesuffix('_model')}"
            torchao = self.quantize in ("fp8", "int8")
            transformer = self._loader.load(
                component,
                FluxTransformer2DModel,
                source,
                field=env_name(field),
                subfolder="transformer",
                dtype=self.dtype,
                # nf4: bitsandbytes quantizes as the weights land on the GPU
                quantization=quantization_config(self.quantize, "diffusers") if self.quantize == "nf4" else None,
                device_map=self._placement() if self.quantize == "nf4" else None,
            )
            if torchao or self.speed.compile != "off":  # bf16 eager stays exactly as published
                fuse_qkv(transformer)
            if torchao:  # fused first, then each layer quantized where it will run (offload: the host)
                quantize_on_device(transformer, self.quantize, "cpu" if self.policy == "offload" else self.device)
            self.speed.prepare(transformer)
            self._transformers[source] = self._count_weights(component, transformer)
        return self._transformers[source]

    def pipeline(self, tool: str) -> Any:
        """The tool's pipeline, built once from the shared components and its transformer."""
        if tool not in self._pipelines:
            import diffusers

            class_name, field = FAMILY_PIPELINES[get_tool(tool).family]
            transformer = self._transformer(field)
            scheduler = self._loader.load(
                "scheduler",
                diffusers.FlowMatchEulerDiscreteScheduler,
                getattr(self.settings, field),
                field=env_name(field),
                subfolder="scheduler",
                weights=False,
            )
            pipe = getattr(diffusers, class_name)(scheduler=scheduler, transformer=transformer, **self.shared())
            pipe.set_progress_bar_config(disable=True)
            self._place()
            self._pipelines[tool] = pipe
        return self._pipelines[tool]

    # -- residency -----------------------------------------------------------------------------

    def _place(self) -> None:
        """Put every loaded module where the policy wants it while idle."""
        if self.policy == "offload":
            return
        for module in self._shared_modules():
            move(module, self.device, self.counters)
        if self.policy == "resident":
            for transformer in self._transformers.values():
                move(transformer, self.device, self.counters)

    def activate(self, tool: str) -> Any:
        """The tool's pipeline, ready to run: its transformer on the device, by the policy's means."""
        pipe = self.pipeline(tool)
        if self.policy == "swap":
            self.swap_to(pipe.transformer)
        elif self.policy == "offload":
            # Hooks are re-installed per run: the shared modules carry the last pipeline's hooks.
            if self.offload_mode == "sequential":
                pipe.enable_sequential_cpu_offload(device=self.device)
            else:
                pipe.enable_model_cpu_offload(device=self.device)
                self._count_offload_moves(pipe)
        return pipe

    def swap_to(self, active: Any) -> None:
        """Only ``active`` on the device: the others drop their device copy (their pinned host copies,
        made once, stay), then ``active`` comes in from its pinned copy. bitsandbytes' 4-bit parameters
        carry their quantization state in their own class: they move by ``Module.to``, as before."""
        if self.quantize == "nf4":
            for transformer in self._transformers.values():
                if transformer is not active:
                    move(transformer, "cpu", self.counters)
            move(active, self.device, self.counters)
            return
        for transformer in self._transformers.values():
            if transformer is not active and module_device(transformer) != "cpu":
                self.counters.bytes_to_host += self._host.swap_out(transformer)
        if module_device(active) != self.device:
            self.counters.bytes_to_device += self._host.swap_in(active, self.device)

    def _count_offload_moves(self, pipe: Any) -> None:
        """Count what accelerate's hooks move; each model goes back to the host before the run ends."""
        counters = self.counters
        for module in pipe.components.values():
            hook = getattr(module, "_hf_hook", None)
            if hook is None or not hasattr(hook, "pre_forward"):
                continue

            def counted(mod: Any, *args: Any, _original: Any = hook.pre_forward, **kwargs: Any) -> Any:
                if module_device(mod) == "cpu":
                    nbytes = module_bytes(mod)
                    counters.bytes_to_device += nbytes
                    counters.bytes_to_host += nbytes
                return _original(mod, *args, **kwargs)

            hook.pre_forward = counted

    # -- prompt embeddings ---------------------------------------------------------------------

    def embed(self, pipe: Any, prompt: str) -> tuple[Any, Any]:
        """T5 and pooled CLIP embeddings of ``prompt``, encoded once while they stay in the cache."""
        key = (prompt, MAX_SEQUENCE_LENGTH)
        cached = self._embeddings.get(key)
        if cached is not None:
            self.counters.embedding_hits += 1
            return cached
        self.counters.embedding_misses += 1
        import torch

        with torch.inference_mode():
            prompt_embeds, pooled, _text_ids = pipe.encode_prompt(
                prompt=prompt, prompt_2=None, device=self.device, max_sequence_length=MAX_SEQUENCE_LENGTH
            )
        self._embeddings.put(key, (prompt_embeds, pooled))
        return prompt_embeds, pooled

    # -- auxiliary models ----------------------------------------------------------------------

    def _auxiliary(self, name: str, model_cls: Any, processor_cls: Any) -> tuple[Any, Any]:
        """A small helper model and its processor, in float32 on the device, kept for good."""
        if name not in self._aux:
            import torch

            source, field = getattr(self.settings, name), env_name(name)
            model = self._loader.load(name, model_cls, source, field=field, dtype=torch.float32, library="transformers")
            processor = self._loader.load(f"{name}_processor", processor_cls, source, field=field, weights=False)
            model.eval()
            self._count_weights(name, model)
            move(model, self.device, self.counters)
            self._aux[name] = (model, processor)
        return self._aux[name]

    def depth_estimator(self) -> tuple[Any, Any]:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        return self._auxiliary("depth_estimator", AutoModelForDepthEstimation, AutoImageProcessor)

    def segmenter(self) -> tuple[Any, Any]:
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        return self._auxiliary("segmenter", CLIPSegForImageSegmentation, CLIPSegProcessor)

    def detector(self) -> tuple[Any, Any]:
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        return self._auxiliary("detector", AutoModelForZeroShotObjectDetection, AutoProcessor)

    # -- introspection and teardown ------------------------------------------------------------

    def loaded_pipelines(self) -> dict[str, Any]:
        return dict(self._pipelines)

    def close(self) -> None:
        self._pipelines.clear()
        self._transformers.clear()
        self._aux.clear()
        self._embeddings.clear()
        self._shared = None
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()
