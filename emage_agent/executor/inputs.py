"""Input checks that run before any model work, each naming the field to fix.

The executor takes PIL images, never paths: the agent resolves session artifacts. Every check
here is cheap, so a bad call fails in milliseconds instead of after loading 30 GB of weights.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from emage_agent.core.errors import InvalidArgument
from emage_agent.core.tools import get_contract

# Modes that convert to RGB without losing meaning (alpha is dropped, palettes expanded).
_RGB_CONVERTIBLE = {"RGB", "RGBA", "RGBX", "LA", "L", "P", "PA", "1", "CMYK", "YCbCr"}
_MASK_MODES = {"L", "1"}
# An edit's output has the input's size, so the input obeys the bounds a generated image does.
_SIZE = get_contract("generate").parameters["properties"]["width"]
MIN_SIDE, MAX_SIDE, MULTIPLE = int(_SIZE["minimum"]), int(_SIZE["maximum"]), int(_SIZE["multipleOf"])


def _readable(value: Any, field: str) -> Image.Image:
    if value is None:
        raise InvalidArgument("no image was given; pass a PIL image under this key", field=field)
    if not isinstance(value, Image.Image):
        raise InvalidArgument(
            f"expected a PIL image, got {type(value).__name__}; the executor takes images, not paths", field=field
        )
    try:
        value.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidArgument(
            f"the image cannot be read, the file may be corrupt or truncated: {exc}", field=field
        ) from None
    return value


def rgb_image(images: dict[str, Any], *, field: str = "image", edit: bool = True) -> Image.Image:
    """The input image as RGB; an edit's image must also have a size FLUX can keep exactly."""
    image = _readable(images.get(field), field)
    if image.mode not in _RGB_CONVERTIBLE:
        raise InvalidArgument(f"image mode {image.mode!r} is not supported; give an 8-bit RGB image", field=field)
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    if edit:
        if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
            raise InvalidArgument(
                f"image is {width}x{height}; each side must be in [{MIN_SIDE}, {MAX_SIDE}] pixels", field=field
            )
        if width % MULTIPLE or height % MULTIPLE:
            raise InvalidArgument(
                f"image is {width}x{height}; both sides must be multiples of {MULTIPLE} "
                f"(for example {width - width % MULTIPLE}x{height - height % MULTIPLE})",
                field=field,
            )
    elif width < 1 or height < 1:
        raise InvalidArgument(f"image is {width}x{height}; it has no pixels", field=field)
    return image


def mask_image(images: dict[str, Any], size: tuple[int, int], *, field: str = "mask") -> Image.Image:
    """The inpainting mask as mode ``L`` (white repaints), the image's size and not empty."""
    mask = _readable(images.get(field), field)
    if mask.mode not in _MASK_MODES:
        raise InvalidArgument(
            f"mask mode {mask.mode!r} is not supported; give a single-channel 'L' mask (white = repaint)", field=field
        )
    if mask.size != size:
        raise InvalidArgument(
            f"mask is {mask.size[0]}x{mask.size[1]} but the image is {size[0]}x{size[1]}; they must match",
            field=field,
        )
    mask = mask.convert("L")
    if mask.getbbox() is None:
        raise InvalidArgument("mask is empty (all black): nothing to repaint; make one with make_mask", field=field)
    return mask


def canny_thresholds(args: dict[str, Any]) -> tuple[int, int]:
    low, high = int(args["low_threshold"]), int(args["high_threshold"])
    if high <= low:
        raise InvalidArgument(
            f"high_threshold ({high}) must exceed low_threshold ({low}); Canny's hysteresis needs low < high",
            field="high_threshold",
        )
    return low, high


def mask_region(args: dict[str, Any]) -> tuple[str | None, list[int] | None]:
    """make_mask's target and box: at least one, and a box with positive area."""
    target, box = args.get("target"), args.get("box")
    if target is None and box is None:
        raise InvalidArgument("make_mask needs a target, a box, or both", field="target")
    if box is not None:
        ymin, xmin, ymax, xmax = box
        if ymax <= ymin or xmax <= xmin:
            raise InvalidArgument(
                f"box {box} is empty; it is [ymin, xmin, ymax, xmax] with ymin < ymax and xmin < xmax", field="box"
            )
    return target, box
