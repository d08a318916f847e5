"""The loop's port to the GPU side, and the one conversion images make on their way to a VLM.

The VLM ports (evaluate, plan, rewrite) live in ``emage_agent.vlm``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, Protocol

from PIL import Image


class RunsTools(Protocol):
    def run(
        self,
        tool: str,
        args: dict[str, Any],
        images: dict[str, Image.Image] | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> Any: ...


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
