"""What an MCP tool call returns: JSON text and structured content, a thumbnail, a link to the full image.

A model's context is precious, so an image comes back as a small thumbnail plus the full image's
path and an ``emage://sessions/{id}/artifacts/{artifact}`` resource link (read in full on demand).
EMage's errors become tool errors carrying their message, never a crashed server.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcp.types import CallToolResult, ImageContent, ResourceLink, TextContent
from PIL import Image

from emage_agent.core.errors import EmageError, ExecutionFailure, ModelMistake, UserError

if TYPE_CHECKING:
    from emage_agent.api import Session

THUMB_PX = 256
_LABELS = {UserError: "bad input", ModelMistake: "invalid request", ExecutionFailure: "failed"}


def thumbnail(path: Path, max_px: int = THUMB_PX) -> bytes:
    """A PNG at most ``max_px`` on a side (under 200 KiB): cheap for a model's context, enough to look at."""
    with Image.open(path) as img:
        img.load()
        small = img.convert("RGB") if img.mode not in ("RGB", "L") else img.copy()
    small.thumbnail((max_px, max_px))
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def artifact_link(session: Session | None, path: Path | None) -> str | None:
    """The artifact id a file is, if it is one of the session's."""
    target = Path(path).resolve() if path else None
    for step in session.store.steps() if session and target else []:
        for art in step.artifacts:
            if (session.dir / art.path).resolve() == target:
                return art.id
    return None


def tool_result(
    data: dict[str, Any], image: str | None, session: Session | None = None, is_error: bool = False
) -> CallToolResult:
    """JSON text + structured content; a thumbnail and a resource link when there is an image."""
    content: list[Any] = [TextContent(type="text", text=json.dumps(data, ensure_ascii=False, default=str))]
    path = Path(image) if image else None
    if path is not None and path.is_file():
        thumb = base64.b64encode(thumbnail(path)).decode()
        content.append(ImageContent(type="image", data=thumb, mime_type="image/png"))
        art = artifact_link(session, path)
        uri = f"emage://sessions/{session.id}/artifacts/{art}" if session and art else path.as_uri()
        content.append(
            ResourceLink(
                type="resource_link",
                uri=uri,
                name=path.name,
                mime_type="image/png",
                description=f"full-size image: {path}",
            )
        )
    return CallToolResult(content=content, structured_content=data, is_error=is_error)


def error_result(exc: EmageError) -> CallToolResult:
    """An EMage error as a tool error: ``<kind>: <message>``, with the error's class and field as structured content."""
    label = next((v for k, v in _LABELS.items() if isinstance(exc, k)), "error")
    data = {"error": type(exc).__name__, "field": getattr(exc, "field", None), "message": str(exc)}
    return CallToolResult(
        content=[TextContent(type="text", text=f"{label}: {exc}")], structured_content=data, is_error=True
    )
