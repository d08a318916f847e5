"""Starting from the user's own picture: read it, check it and bring it to a size the FLUX models accept.

FLUX edits keep the input's size, and every side must be a multiple of 16 in [64, 2048]. A picture that is
not is resized (never cropped) to the nearest size that is, keeping its aspect ratio, and the note says
so. The optional region mask is read as white = may change, brought to the picture's size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from emage_agent.core.errors import UserError
from emage_agent.core.tools import get_contract

_SIZE = get_contract("generate").parameters["properties"]["width"]
MIN_SIDE, MAX_SIDE, MULTIPLE = int(_SIZE["minimum"]), int(_SIZE["maximum"]), int(_SIZE["multipleOf"])
MAX_PIXELS = 8192 * 8192  # refuse decompression bombs before decoding
MODES = {"RGB", "RGBA", "RGBX", "LA", "L", "P", "PA", "1", "CMYK", "YCbCr", "I;16", "I;16B", "I;16L", "I", "F"}


def _open(source: str | Path | Image.Image, field: str) -> Image.Image:
    if isinstance(source, Image.Image):
        source.load()
        return source
    path = Path(source).expanduser()
    if not path.is_file():
        raise UserError(f"{path} is not a file; give the path of a PNG, JPEG or WebP picture", field=field)
    try:
        with Image.open(path) as opened:  # reads the header only: the size is checked before any decoding
            if opened.width * opened.height > MAX_PIXELS:
                raise _too_big(path, opened.width, opened.height, field)
            opened.load()
            upright = ImageOps.exif_transpose(opened)  # as the person sees it (phones store photos sideways)
            return upright if upright is not opened else opened.copy()
    except Image.DecompressionBombError:  # Pillow's own check fired first (its limit is above ours)
        width, height = _header_size(path)
        raise _too_big(path, width, height, field) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path} cannot be read as a picture ({type(exc).__name__}: {exc})", field=field) from None


def _too_big(path: Path, width: int, height: int, field: str) -> UserError:
    return UserError(f"{path} is {width}x{height} pixels; at most {MAX_PIXELS} pixels are accepted", field=field)


def _header_size(path: Path) -> tuple[int, int]:
    """The size a picture's header claims, read with Pillow's bomb check off (nothing is decoded)."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as opened:
            return opened.size
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _eight_bit(image: Image.Image) -> Image.Image:
    """16- and 32-bit grey (``I;16``, ``I``) and float (``F``) pictures scaled to 8 bits, not clipped.

    ``convert("L")`` clips every value above 255, which turns a 16-bit picture nearly all white.
    """
    if image.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return image
    values = np.asarray(image, dtype=np.float64)
    top = (
        1.0
        if image.mode == "F" and values.max(initial=0) <= 1.0
        else 255.0
        if values.max(initial=0) <= 255
        else 65535.0
    )
    return Image.fromarray(np.clip(np.rint(values * 255.0 / top), 0, 255).astype(np.uint8), mode="L")


def _side(value: float) -> int:
    return int(min(max(round(value / MULTIPLE) * MULTIPLE, MIN_SIDE), MAX_SIDE))


def accepted_size(width: int, height: int) -> tuple[int, int]:
    """The nearest size with sides multiples of 16 in [64, 2048], keeping the aspect ratio where it can."""
    scale = min(1.0, MAX_SIDE / max(width, height))
    scale = max(scale, MIN_SIDE / min(width, height))
    return _side(width * scale), _side(height * scale)


def load_start_image(source: str | Path | Image.Image, *, field: str = "image") -> tuple[Image.Image, str]:
    """The picture as RGB at an accepted size, and a note saying what was changed (empty when nothing)."""
    image = _open(source, field)
    if image.mode not in {
        "RGB",
        "RGBA",
        "RGBX",
        "LA",
        "L",
        "P",
        "PA",
        "1",
        "CMYK",
        "YCbCr",
        "I;16",
        "I;16B",
        "I;16L",
        "I",
        "F",
    }:
        raise UserError(f"picture mode {image.mode!r} is not supported; give an 8-bit RGB picture", field=field)
    if image.width < 1 or image.height < 1:
        raise UserError("the picture has no pixels", field=field)
    image = _eight_bit(image).convert("RGB")
    size = accepted_size(*image.size)
    if size == image.size:
        return image, ""
    note = (
        f"the picture was {image.width}x{image.height}; resized to {size[0]}x{size[1]} "
        f"(the models take sides that are multiples of {MULTIPLE} in [{MIN_SIDE}, {MAX_SIDE}])"
    )
    return image.resize(size, Image.Resampling.LANCZOS), note


def load_region_mask(source: str | Path | Image.Image, size: tuple[int, int], *, field: str = "mask") -> Image.Image:
    """The region repairs may change, as a binary ``L`` mask of ``size`` (white = may change)."""
    mask = _eight_bit(_open(source, field))
    if mask.mode in ("RGBA", "LA", "PA"):
        mask = mask.getchannel("A") if mask.convert("L").getextrema() == (0, 0) else mask.convert("L")
    mask = mask.convert("L")
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    mask = mask.point(lambda v: 255 if v >= 128 else 0)
    if mask.getbbox() is None:
        raise UserError("the mask is all black: no region may change; paint the region to repair white", field=field)
    return mask
