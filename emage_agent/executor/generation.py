"""The denoising call every FLUX tool shares, and ``generate`` itself.

Prompts go in as cached embeddings, never as text, so a prompt the agent re-uses across edits
is encoded by T5 once. Noise comes from a CPU generator: the same seed gives the same image on
any device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image

from emage_agent.core.ports import StepWatcher
from emage_agent.executor.models import MAX_SEQUENCE_LENGTH, ModelManager
from emage_agent.executor.preview import preview_png
from emage_agent.executor.types import ToolOutput

StepCallback = Callable[[int, int], None]


class CallbackRaised(Exception):
    """Carries an exception out of ``on_step`` (a cancellation, say) past failure wrapping.

    ``Executor.run`` re-raises ``original`` as it was, so the caller's own exception reaches it.
    """

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def _step_callback(
    on_step: StepCallback | None, height: int | None = None, width: int | None = None
) -> Callable[..., dict[str, Any]] | None:
    if on_step is None:
        return None

    def callback(pipe: Any, step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        try:
            total = pipe.num_timesteps
            on_step(step + 1, total)
            if isinstance(on_step, StepWatcher) and ((step + 1) % on_step.every == 0 or step + 1 == total):
                png = preview_png(pipe, tensors["latents"], height, width)
                if png is not None:
                    on_step.preview(png)
        except Exception as exc:
            raise CallbackRaised(exc) from exc
        return tensors

    return callback


def denoise(
    manager: ModelManager, tool: str, prompt: str, seed: int, on_step: StepCallback | None, **call: Any
) -> Image.Image:
    """Run ``tool``'s pipeline once and return its image; ``call`` holds the tool's own arguments."""
    import torch

    pipe = manager.activate(tool)
    prompt_embeds, pooled = manager.embed(pipe, prompt)
    with manager.speed.run(pipe.transformer, call, vae=pipe.vae):
        result = pipe(
            prompt_embeds=prompt_embeds,
            pooled_prompt_embeds=pooled,
            generator=torch.Generator(device="cpu").manual_seed(seed),
            callback_on_step_end=_step_callback(on_step, call.get("height"), call.get("width")),
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            # FluxPipeline turns None into {}, the edit pipelines do not: one type for every tool keeps
            # compiled blocks valid across a tool switch.
            joint_attention_kwargs={},
            **call,
        )
    return result.images[0]


def generate(manager: ModelManager, args: dict[str, Any], on_step: StepCallback | None) -> ToolOutput:
    image = denoise(
        manager,
        "generate",
        args["prompt"],
        args["seed"],
        on_step,
        width=args["width"],
        height=args["height"],
        num_inference_steps=args["steps"],
        guidance_scale=args["guidance"],
    )
    return ToolOutput(tool="generate", image=image, seed=args["seed"], seconds=0.0)
