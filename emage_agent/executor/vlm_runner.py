"""An in-process vision-language model for the local judge: transformers, with JSON-schema-constrained decoding.

Why constrained decoding: a local model is small and often not tuned for tool use; left free it wraps
JSON in prose, invents fields or never closes a brace. A grammar compiled from the answer's JSON schema
masks every token that would break the schema, so each answer parses and validates by construction.

Why xgrammar (over lm-format-enforcer and outlines): it is the structured-output engine vLLM, SGLang and
TensorRT-LLM ship by default, actively maintained; it compiles a JSON schema once into a token-mask
automaton (cached per schema) so the per-token cost is a bitmask, not a regex walk over the vocabulary;
it supports the schema features our answers need (enums, integer ranges, ``maxLength``, ``maxItems``,
``anyOf``); and it brings a transformers ``LogitsProcessor``, so generation stays plain ``generate``.

The model shares the device with FLUX: ``EMAGE_QUANTIZE`` quantizes it with the same helpers as the
FLUX transformers and T5 (``quantize``), and the memory planner counts its bytes (``planner``). Once
loaded it stays on the device; ``auto`` resolves as FLUX's start-up plan did, from the memory that was
free before this process placed anything.

The prompt follows the Qwen2-VL / Qwen2.5-VL chat format (the tokenizer's chat template when it has one);
each image placeholder is expanded to the number of vision tokens the image processor reports.
"""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from emage_agent.core.errors import ExecutionFailure, UserError
from emage_agent.core.settings import Settings
from emage_agent.executor.devices import free_device_bytes, module_bytes, resolve_device, resolve_dtype
from emage_agent.executor.quantize import check_supported, quantization_config
from emage_agent.executor.speed_choice import resolve_quantize

IMAGE_TOKEN = "<|image_pad|>"
VISION = "<|vision_start|>" + IMAGE_TOKEN + "<|vision_end|>"


@dataclass
class Generation:
    """One constrained answer: its text, token counts, and whether the grammar reached its end."""

    text: str
    input_tokens: int
    output_tokens: int
    finished: bool
    seconds: float


class VLMRunner:
    """Loads the model on first use and answers ``generate(system, text, images, schema)``."""

    def __init__(self, settings: Settings, model: str | None = None) -> None:
        self.settings = settings
        self.model_ref = model or settings.local_vlm_model
        self._token = settings.hf_token.get_secret_value() if settings.hf_token else None
        self._lock = threading.Lock()  # one generation at a time: the model is one device's worth
        self._model: Any = None
        self._tokenizer: Any = None
        self._images: Any = None
        self._compiler: Any = None
        self.device = "cpu"
        self.quantize = "none"  # as resolved at load

    # ---- what the memory plan needs ---------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._model is not None

    def parameter_count(self) -> int:
        """Parameters of the loaded model (0 before the first call)."""
        return sum(p.numel() for p in self._model.parameters()) if self._model is not None else 0

    def planned_bytes(self) -> int:
        """Bytes of the weight files on disk, known before loading (0 when not downloaded yet)."""
        from emage_agent.executor.loading import weight_bytes

        return weight_bytes(self.model_ref)

    def nbytes(self) -> int:
        """Bytes of the loaded model's parameters and buffers, as placed (0 before the first call)."""
        return module_bytes(self._model) if self._model is not None else 0

    def close(self) -> None:
        """Drop the model (its memory goes back to the allocator)."""
        with self._lock:
            self._model = self._tokenizer = self._images = self._compiler = None

    # ---- loading ----------------------------------------------------------------------------
    def load(self) -> None:
        if self._model is not None:
            return
        try:
            import xgrammar as xgr
        except ImportError:
            raise UserError(
                "the local VLM needs xgrammar: pip install 'emage-agent[local]'", field="EMAGE_VLM"
            ) from None
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        self.device = resolve_device(self.settings)
        dtype = resolve_dtype(self.settings, self.device)
        quantize = resolve_quantize(
            self.settings.quantize, self.device, _free_before_loading(self.device), vlm=self.model_ref
        )
        check_supported(quantize, self.device)
        kw: dict[str, Any] = {"token": self._token} if self._token else {}
        config = quantization_config(quantize, "transformers")
        # quantized weights are made where they will live, so load them straight onto the device
        placed = {"quantization_config": config, "device_map": self.device} if config is not None else {}
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_ref, **kw)
            images = AutoImageProcessor.from_pretrained(self.model_ref, **kw)
            model = AutoModelForImageTextToText.from_pretrained(self.model_ref, dtype=dtype, **kw, **placed)
        except OSError as exc:
            raise UserError(f"cannot load {self.model_ref!r}: {exc}", field="EMAGE_LOCAL_VLM_MODEL") from None
        if config is None:
            model.to(self.device)
        model.eval()
        self.quantize = quantize
        vocab = model.config.get_text_config().vocab_size
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab, stop_token_ids=[tokenizer.eos_token_id])
        self._tokenizer, self._images, self._model = tokenizer, images, model
        self._compiler = xgr.GrammarCompiler(info)

    # ---- answering --------------------------------------------------------------------------
    def _prompt(self, system: str | None, text: str, n_images: int) -> str:
        content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": text}]
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
        if getattr(self._tokenizer, "chat_template", None):
            return self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
        return f"{head}<|im_start|>user\n{VISION * n_images}{text}<|im_end|>\n<|im_start|>assistant\n"

    def generate(
        self, system: str | None, text: str, images: list[bytes], schema: dict[str, Any], max_new_tokens: int
    ) -> Generation:
        """An answer that follows ``schema`` (greedy decoding: a judge should not be a dice roll)."""
        import torch
        import xgrammar as xgr
        from PIL import Image

        with self._lock:
            self.load()
            started = time.monotonic()
            prompt = self._prompt(system, text, len(images))
            extra: dict[str, Any] = {}
            if images:
                pictures = [Image.open(io.BytesIO(png)).convert("RGB") for png in images]
                vision = self._images(images=pictures, return_tensors="pt")
                merge = getattr(self._images, "merge_size", 2) ** 2
                for grid in vision["image_grid_thw"]:  # one placeholder per image, expanded in order
                    prompt = prompt.replace(IMAGE_TOKEN, "\0" * (int(grid.prod()) // merge), 1)
                prompt = prompt.replace("\0", IMAGE_TOKEN)
                extra = {k: v.to(self.device) for k, v in vision.items()}
                extra["pixel_values"] = extra["pixel_values"].to(self._model.dtype)
            encoded = self._tokenizer(prompt, return_tensors="pt").to(self.device)
            grammar = self._compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)
            try:
                with torch.inference_mode():
                    out = self._model.generate(
                        **encoded,
                        **extra,
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        logits_processor=[xgr.contrib.hf.LogitsProcessor(grammar)],
                        eos_token_id=self._tokenizer.eos_token_id,
                        pad_token_id=self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
                    )
            except RuntimeError as exc:
                raise ExecutionFailure(f"the local VLM failed while generating: {str(exc)[:300]}") from None
            new = out[0, encoded["input_ids"].shape[1] :]
            answer = self._tokenizer.decode(new, skip_special_tokens=True)
            finished = bool(len(new) < max_new_tokens or (len(new) and int(new[-1]) == self._tokenizer.eos_token_id))
            return Generation(
                text=answer,
                input_tokens=int(encoded["input_ids"].shape[1]),
                output_tokens=int(len(new)),
                finished=finished,
                seconds=round(time.monotonic() - started, 4),
            )


def _free_before_loading(device: str) -> int:
    """Device memory free before this process placed anything (FLUX included), as FLUX's plan saw it."""
    free = free_device_bytes(device)
    if device == "cuda":
        import torch

        free += torch.cuda.memory_reserved()
    return free
