"""Masks for inpainting from a text target (CLIPSeg), a box, or both, cleaned with OpenCV.

Raw segmentations are speckled and holed; a repair needs one solid region a little larger
than the object, with a soft edge so the new pixels blend in. An empty result is the
planner's mistake to fix (another wording, a lower threshold, a box), so it goes back to it
as ``ModelMistake`` instead of yielding a mask that would repaint nothing.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

from emage_agent.core.errors import ModelMistake
from emage_agent.executor.models import ModelManager
from emage_agent.executor.types import ToolOutput

NEAR_FULL = 0.98
BOX_SCALE = 1000  # boxes are [ymin, xmin, ymax, xmax] normalised to 0..1000


def box_pixels(box: list[int], width: int, height: int) -> tuple[int, int, int, int]:
    """The box in pixels (top, left, bottom, right; exclusive ends), never less than one pixel."""
    ymin, xmin, ymax, xmax = box
    top, left = math.floor(ymin * height / BOX_SCALE), math.floor(xmin * width / BOX_SCALE)
    bottom, right = math.ceil(ymax * height / BOX_SCALE), math.ceil(xmax * width / BOX_SCALE)
    top, left = min(top, height - 1), min(left, width - 1)
    return top, left, max(bottom, top + 1), max(right, left + 1)


def segment(manager: ModelManager, image: Image.Image, target: str) -> np.ndarray:
    """CLIPSeg's probability that each pixel shows ``target``, at the image's size."""
    import cv2
    import torch

    model, processor = manager.segmenter()
    # CLIP's text encoder holds 77 positions; a longer target (58 Japanese characters suffice) is cut to them
    # rather than failing the step, and every later resume with it.
    limit = int(model.config.text_config.max_position_embeddings)
    inputs = processor(
        text=[target], images=[image], padding="max_length", truncation=True, max_length=limit, return_tensors="pt"
    ).to(manager.device)
    with torch.inference_mode():
        logits = model(**inputs).logits
    probability = torch.sigmoid(logits.float()).reshape(logits.shape[-2:]).cpu().numpy()
    return cv2.resize(probability, image.size, interpolation=cv2.INTER_LINEAR)


def _kernel(size: int) -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def clean(binary: np.ndarray) -> np.ndarray:
    """Remove specks, close gaps and fill holes: one solid region per object."""
    import cv2

    height, width = binary.shape
    size = max(3, (min(height, width) // 100) | 1)
    mask = cv2.morphologyEx(binary, cv2.MORPH_OPEN, _kernel(size))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _kernel(size))
    contours, _hierarchy = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    min_area = 0.0005 * height * width
    filled = np.zeros_like(mask)
    kept = [c for c in contours if cv2.contourArea(c) >= min_area]
    cv2.drawContours(filled, kept, -1, 255, thickness=cv2.FILLED)
    return filled


def grow_and_feather(hard: np.ndarray, dilate: int, feather: int) -> np.ndarray:
    """Grow by ``dilate`` pixels, then add a soft edge about ``feather`` pixels wide outside it."""
    import cv2

    if dilate > 0:
        hard = cv2.dilate(hard, _kernel(2 * dilate + 1))
    if feather <= 0:
        return hard
    soft = cv2.GaussianBlur(hard, (2 * feather + 1, 2 * feather + 1), sigmaX=feather / 2.0)
    return np.maximum(hard, soft)


def make_mask(manager: ModelManager, args: dict[str, Any], image: Image.Image) -> ToolOutput:
    target, box, threshold = args.get("target"), args.get("box"), float(args["threshold"])
    width, height = image.size
    region = np.zeros((height, width), dtype=bool)
    if box is not None:
        top, left, bottom, right = box_pixels(box, width, height)
        region[top:bottom, left:right] = True
    else:
        region[:] = True

    if target is None:
        hard = region.astype(np.uint8) * 255
    else:
        probability = np.where(region, segment(manager, image, target), 0.0)
        above = probability > threshold
        hard = clean(above.astype(np.uint8) * 255)
        if not hard.any():
            where = " inside the box" if box is not None else ""
            peak = float(probability.max())
            found = (
                f"only {int(above.sum())} scattered pixels exceed the threshold {threshold:.2f}, too few for a region"
                if above.any()
                else f"no pixel's probability exceeds the threshold {threshold:.2f} (the highest is {peak:.2f})"
            )
            raise ModelMistake(
                f"make_mask found no region of {target!r}{where}: {found}. Try a lower threshold"
                f"{f' (below {peak:.2f})' if not above.any() else ''}, other words for the target, "
                "or a box around the region."
            )

    mask = grow_and_feather(hard, int(args["dilate"]), int(args["feather"]))
    coverage = float(mask.mean() / 255.0)
    note = ""
    if coverage > NEAR_FULL:
        note = (
            f"warning: the mask covers {coverage:.1%} of the image, nearly all of it; inpainting will repaint "
            "the whole picture. Use a box, a higher threshold or a narrower target to fix only one region."
        )
    return ToolOutput(tool="make_mask", mask=Image.fromarray(mask), coverage=coverage, note=note, seconds=0.0)
