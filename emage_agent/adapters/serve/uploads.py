"""Pictures sent to ``/v1/images/edits``: read from bytes with a pixel bound, and the mask's two conventions.

The size checks and the resize to a size the models take are ``core.pictures``' (the same as the CLI's
``--image``). A mask may follow OpenAI's convention (transparent pixels mark the area to change) or
EMage's (white on black marks it); a mask with any transparency is read the OpenAI way.
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from emage_agent.core.errors import UserError
from emage_agent.core.pictures import MAX_PIXELS, load_start_image


def read_picture(data: bytes, field: str) -> Image.Image:
    """The uploaded bytes as a loaded picture; a ``UserError`` naming ``field`` when they are not one."""
    if not data:
        raise UserError("the file is empty; send a PNG, JPEG or WebP picture", field=field)
    try:
        with Image.open(io.BytesIO(data)) as opened:
            if opened.width * opened.height > MAX_PIXELS:
                raise UserError(
                    f"the picture is {opened.width}x{opened.height}; at most {MAX_PIXELS} pixels", field=field
                )
            opened.load()
            return opened.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"cannot be read as a picture ({type(exc).__name__})", field=field) from None


def start_picture(data: bytes) -> tuple[Image.Image, str]:
    """The picture to start from, at an accepted size, and the note on what was changed."""
    return load_start_image(read_picture(data, "image"), field="image")


def region_mask(data: bytes) -> Image.Image:
    """The mask as EMage reads regions (white = may change), from either convention."""
    mask = read_picture(data, "mask")
    if mask.mode in ("RGBA", "LA", "PA") or (mask.mode == "P" and "transparency" in mask.info):
        alpha = mask.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] < 255:  # OpenAI: transparent = change
            return alpha.point(lambda v: 255 if v < 128 else 0)
    return mask.convert("L")
