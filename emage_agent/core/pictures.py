"""Starting from the user's own picture: read it, check it and bring it to a size the FLUX models accept.

FLUX edits keep the input's size, and every side must be a multiple of 16 in [64, 2048]. A picture that is
not is resized (never cropped) to the nearest size that is, keeping its aspect ratio, and the note says
so. The optional region mask is read as white = may change, brought to the picture's size.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from emage_agent.core.errors import UserError
from emage_agent.core.tools import get_contract

_SIZE = get_contract("generate").parameters["properties"]["width"]
MIN_SIDE, MAX_SIDE, MULTIPLE = int(_SIZE["minimum"]), int(_SIZE["maximum"]), int(_SIZE["multipleOf"])
MAX_PIXELS = 8192 * 8192  # refuse decompression bombs before decoding


def _open(source: str | Path | Image.Image, field: str) -> Image.Image:
    if isinstance(source, Image.Image):
        source.load()
        return source
    path = Path(source).expanduser()
    if not path.is_file():
        raise UserError(f"{path} is not a file; give the path of a PNG, JPEG or WebP picture", field=field)
    try:
        with Image.open(path) as opened:
            if opened.width * opened.height > MAX_PIXELS:
                raise UserError(f"{path} is {opened.width}x{opened.height}; at most {MAX_PIXELS} pixels", field=field)
            opened.load()
            return opened.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path} cannot be read as a picture ({type(exc).__name__}: {exc})", field=field) from None


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
    if image.mode not in {"RGB", "RGBA", "RGBX", "LA", "L", "P", "PA", "1", "CMYK", "YCbCr", "I;16", "I"}:
        raise UserError(f"picture mode {image.mode!r} is not supported; give an 8-bit RGB picture", field=field)
    if image.width < 1 or image.height < 1:
        raise UserError("the picture has no pixels", field=field)
    image = image.convert("RGB")
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
    mask = _open(source, field)
    if mask.mode in ("RGBA", "LA", "PA"):
        mask = mask.getchannel("A") if mask.convert("L").getextrema() == (0, 0) else mask.convert("L")
    mask = mask.convert("L")
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    mask = mask.point(lambda v: 255 if v >= 128 else 0)
    if mask.getbbox() is None:
        raise UserError("the mask is all black: no region may change; paint the region to repair white", field=field)
    return mask
