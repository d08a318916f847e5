"""Instruction edits with FLUX.1-Kontext-dev: "make the car blue", keeping the rest of the picture.

Kontext reads the current image as extra tokens beside the noise, so it needs neither a mask nor a
strength: the instruction says what changes. The output keeps the input's size (diffusers would
otherwise snap it to a preferred Kontext resolution), and an optional box limits the change: the
result is pasted back through the box, so pixels outside it stay exactly as they were.
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageDraw

from emage_agent.executor.generation import StepCallback, denoise
from emage_agent.executor.inpainting import paste_back
from emage_agent.executor.models import ModelManager
from emage_agent.executor.types import ToolOutput


def box_mask(size: tuple[int, int], box: list[int]) -> Image.Image:
    """A white rectangle for ``[ymin, xmin, ymax, xmax]`` in 0..1000 on a black ``L`` image of ``size``."""
    width, height = size
    ymin, xmin, ymax, xmax = box
    mask = Image.new("L", size, 0)
    left, top = round(xmin * width / 1000), round(ymin * height / 1000)
    right, bottom = max(round(xmax * width / 1000), left + 1), max(round(ymax * height / 1000), top + 1)
    ImageDraw.Draw(mask).rectangle([left, top, right - 1, bottom - 1], fill=255)
    return mask


def edit(manager: ModelManager, args: dict[str, Any], image: Image.Image, on_step: StepCallback | None) -> ToolOutput:
    result = denoise(
        manager,
        "edit",
        args["instruction"],
        args["seed"],
        on_step,
        image=image,
        width=image.width,
        height=image.height,
        num_inference_steps=args["steps"],
        guidance_scale=args["guidance"],
        max_area=image.width * image.height,  # diffusers scales to this area at the image's aspect ratio
        _auto_resize=False,
    )
    if result.size != image.size:
        result = result.resize(image.size, Image.Resampling.LANCZOS)
    note = ""
    if args.get("box"):
        mask = box_mask(image.size, args["box"])
        result = paste_back(image, result, mask)
        note = f"edit limited to the box {args['box']}"
    return ToolOutput(tool="edit", image=result, mask=None, seed=args["seed"], seconds=0.0, note=note)
