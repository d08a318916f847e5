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


class StepWatcher:
    """An ``on_step`` callback that also takes a cheap preview of the image forming (PNG bytes).

    The executor hands previews only to a ``StepWatcher`` (checked with ``isinstance``), every
    ``every`` denoising steps and at the last; a plain ``(step, total)`` callable gets progress alone.
    """

    every = 2

    def __init__(self, on_step: Callable[[int, int], None], on_preview: Callable[[bytes], None]) -> None:
        self.on_step = on_step
        self.on_preview = on_preview

    def __call__(self, step: int, total: int) -> None:
        self.on_step(step, total)

    def preview(self, png: bytes) -> None:
        self.on_preview(png)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
