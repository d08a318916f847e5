"""Safe resolution of image, mask and session arguments that come from outside EMage.

Why this module exists: the MCP server (and the chat) accept names from clients that EMage
does not trust. A name must be either an artifact id of a session (``"s3-image"``,
``"current"``) or a file or directory *inside* the configured session root. Everything else
(``..`` components, absolute paths elsewhere, symlinks that lead out of the root, devices,
folders where a file is needed) is refused with a ``UserError`` naming the field, before any
file is opened. The checks are pure path logic plus ``stat``; nothing is read or written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Literal

from emage_agent.core.errors import UserError

# An artifact id is one short token without dots or separators, so it can never be a path.
_ARTIFACT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
# A session id is one path component (dots allowed, but it cannot start with one).
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})


@dataclass(frozen=True)
class ImageRef:
    """What an image argument named: an artifact id of a session, or a checked file path."""

    artifact_id: str | None = None
    path: Path | None = None


def is_artifact_id(value: str) -> bool:
    """Whether ``value`` has the shape of an artifact id (it may still not exist)."""
    return bool(_ARTIFACT_ID.fullmatch(value))


def _text(value: object, field: str) -> str:
    if isinstance(value, PurePath):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise UserError("must be a non-empty string", field=field)
    if "\x00" in value:
        raise UserError("must not contain NUL characters", field=field)
    return value


def inside_root(value: str | Path, root: str | Path, *, field: str, kind: Literal["file", "dir"] = "file") -> Path:
    """``value`` resolved (symlinks followed) and proven to lie inside ``root``.

    A relative ``value`` is taken relative to ``root``, never to the working directory, so the
    same name means the same file wherever the server was started. Any ``..`` component is
    refused outright, even one that would land back inside the root: a client has no reason
    to send one. The result is the resolved path of an existing regular file (``kind="file"``)
    or directory (``kind="dir"``).
    """
    text = _text(value, field)
    if ".." in PurePath(text).parts or ".." in re.split(r"[\\/]", text):
        raise UserError(f"{text!r} contains '..'; give a path inside the session root", field=field)
    base = Path(root).resolve()
    # One answer for "outside" and "missing", so a client cannot probe which host files exist.
    refused = UserError(f"{text!r} is outside the session root {str(base)!r} or does not exist", field=field)
    candidate = Path(text)
    if not candidate.is_absolute():
        candidate = base / candidate
    lexical = Path(os.path.normpath(candidate))
    if not (lexical.is_relative_to(base) or lexical.is_relative_to(Path(os.path.abspath(root)))):
        raise refused  # outside before anything is looked up on disk
    try:
        resolved = candidate.resolve(strict=True)
    except FileNotFoundError:
        raise refused from None
    except (OSError, RuntimeError) as exc:  # symlink loops, permission errors
        raise UserError(f"{text!r} cannot be resolved ({exc.__class__.__name__})", field=field) from None
    if not resolved.is_relative_to(base):
        raise refused
    if kind == "file" and not resolved.is_file():
        raise UserError(f"{text!r} is not a regular file", field=field)
    if kind == "dir" and not resolved.is_dir():
        raise UserError(f"{text!r} is not a directory", field=field)
    return resolved


def resolve_image_arg(
    value: str,
    root: str | Path,
    *,
    field: str,
    has_artifact: Callable[[str], bool] | None = None,
) -> ImageRef:
    """An image or mask argument as an artifact id or a safe image file inside ``root``.

    A value shaped like an artifact id is one (``has_artifact``, when given, must confirm that
    it exists); anything else is a path and must be an image file inside the session root.
    """
    text = _text(value, field)
    if is_artifact_id(text):
        if has_artifact is not None and not has_artifact(text):
            raise UserError(f"no artifact {text!r} in this session", field=field)
        return ImageRef(artifact_id=text)
    path = inside_root(text, root, field=field, kind="file")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"{text!r} is not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})", field=field)
    return ImageRef(path=path)


def resolve_session_dir(value: str | Path, root: str | Path, *, field: str = "session_id") -> Path:
    """A session id or session directory, as an existing directory strictly inside ``root``."""
    text = _text(value, field)
    base = Path(root).resolve()
    target = inside_root(text, base, field=field, kind="dir")
    if target == base:
        raise UserError("names the session root itself, not a session inside it", field=field)
    if not Path(text).is_absolute() and "/" not in text and "\\" not in text and not _SESSION_ID.fullmatch(text):
        raise UserError(f"{text!r} is not a session id", field=field)
    return target
