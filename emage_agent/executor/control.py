"""Structure-preserving edits: FLUX.1-Canny-dev and FLUX.1-Depth-dev through img2img.

The control img2img pipeline starts from the current image, so ``strength`` bounds how far
the result may move from it, while the edge or depth map holds the composition in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from emage_agent.core.tools import family_tool
from emage_agent.executor.generation import StepCallback, denoise
from emage_agent.executor.models import ModelManager
from emage_agent.executor.types import ToolOutput


def canny_map(image: Image.Image, low: int, high: int) -> Image.Image:
    """OpenCV Canny edges as a white-on-black RGB image, the form FLUX.1-Canny-dev was trained on."""
    import cv2

    edges = cv2.Canny(np.asarray(image.convert("RGB")), low, high)
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


def depth_map(manager: ModelManager, image: Image.Image) -> Image.Image:
    """Relative depth from the monocular estimator, min-max scaled to 0..255, at the image's size."""
    import torch

    model, processor = manager.depth_estimator()
    inputs = processor(images=image, return_tensors="pt").to(manager.device)
    with torch.inference_mode():
        predicted = model(**inputs).predicted_depth
    depth = torch.nn.functional.interpolate(
        predicted[:, None].float(), size=(image.height, image.width), mode="bicubic", align_corners=False
    )[0, 0]
    values = depth.cpu().numpy()
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high - low > 1e-6 else np.zeros_like(values)
    pixels = np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([pixels] * 3, axis=-1))


def _controlled(
    manager: ModelManager,
    tool: str,
    args: dict[str, Any],
    image: Image.Image,
    control: Image.Image,
    on_step: StepCallback | None,
) -> ToolOutput:
    result = denoise(
        manager,
        tool,
        args["prompt"],
        args["seed"],
        on_step,
        image=image,
        control_image=control,
        width=image.width,
        height=image.height,
        strength=args["strength"],
        num_inference_steps=args["steps"],
        guidance_scale=args["guidance"],
    )
    return ToolOutput(tool=tool, image=result, control=control, seed=args["seed"], seconds=0.0)


def canny(manager: ModelManager, args: dict[str, Any], image: Image.Image, on_step: StepCallback | None) -> ToolOutput:
    control = canny_map(image, args["low_threshold"], args["high_threshold"])
    return _controlled(manager, family_tool("canny"), args, image, control, on_step)


def depth(manager: ModelManager, args: dict[str, Any], image: Image.Image, on_step: StepCallback | None) -> ToolOutput:
    control = depth_map(manager, image)
    return _controlled(manager, family_tool("depth"), args, image, control, on_step)
