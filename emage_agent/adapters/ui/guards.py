"""What the web UI refuses: an open port without a password, names that are paths, uploads that are not images.

Pure checks with one-line ``UserError`` messages (no Gradio here), so the CLI refuses before anything
starts and every check is tested on its own.
"""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from emage_agent.adapters.netguard import is_loopback
from emage_agent.core.errors import UserError
from emage_agent.core.pictures import load_start_image

AUTH_ENV = "EMAGE_UI_AUTH"
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
UPLOAD_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MIN_SIDE, MAX_SIDE = 64, 2048


def parse_auth(value: str | None, *, field: str = "--auth") -> tuple[str, str] | None:
    """``USER:PASS`` as a pair; ``None`` for no value. The password is never echoed back in an error."""
    if value is None or not value.strip():
        return None
    user, sep, password = value.partition(":")
    if not sep or not user.strip() or not password:
        raise UserError("must be USER:PASS with a non-empty user and password", field=field)
    return user.strip(), password


def resolve_auth(host: str, auth: str | None, env_auth: str | None) -> tuple[str, str] | None:
    """The credentials to require, or a refusal: anything but loopback must have a password."""
    pair = parse_auth(auth) if auth else parse_auth(env_auth, field=AUTH_ENV)
    if pair is None and not is_loopback(host):
        raise UserError(
            f"refusing to serve the UI on {host} without a password; pass --auth USER:PASS "
            f"(or set {AUTH_ENV}) or bind 127.0.0.1",
            field="--host",
        )
    return pair


def check_text(value: object, field: str, *, max_len: int = 2000) -> str:
    """Free text from the browser (prompt, feedback): non-empty, bounded, and not a file path."""
    if not isinstance(value, str) or not value.strip():
        raise UserError("is empty; write what the image should show or what to change", field=field)
    text = value.strip()
    if len(text) > max_len or "\x00" in text:
        raise UserError(f"must be at most {max_len} characters of text", field=field)
    if looks_like_path(text):
        raise UserError("looks like a file path; the UI takes words, not paths", field=field)
    return text


def looks_like_path(text: str) -> bool:
    """A whole value that names a file: absolute, home- or dot-relative, or with a parent step."""
    t = text.strip()
    if re.match(r"^(~|\.{1,2})?[\\/]", t) or re.match(r"^[A-Za-z]:[\\/]", t) or t.startswith("file:"):
        return True
    return ".." in re.split(r"[\\/]", t) and ("/" in t or "\\" in t)


def check_session_id(value: object, root: Path) -> Path:
    """A session chosen in the browser: a bare id of a directory directly inside ``root``, nothing else."""
    if not isinstance(value, str) or not SESSION_ID.fullmatch(value.strip()) or ".." in value:
        raise UserError("must be the id of a session in the list, not a path", field="session")
    base = Path(root).resolve()
    target = (base / value.strip()).resolve()
    if target.parent != base or not (target / "session.db").is_file():
        raise UserError(f"no session {value.strip()!r} in this UI's folder", field="session")
    return target


def check_step(value: object) -> int:
    """A step number from the browser (a gallery position turned into a step, or typed)."""
    if isinstance(value, bool):
        raise UserError("must be a step number", field="step")
    if isinstance(value, int | float) and float(value).is_integer() and value >= 1:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit() and int(value) >= 1:
        return int(value)
    raise UserError("must be a step number such as 1 (pick a step in Steps)", field="step")


def check_upload(path: str | Path | None, field: str) -> Image.Image | None:
    """An uploaded picture: a PNG, JPEG or WebP file of at most 20 MB, 64..2048 px a side, multiples of 16."""
    if path is None or str(path) == "":
        return None
    file = Path(path)
    if not file.is_file():
        raise UserError("the upload did not arrive; choose the file again", field=field)
    if file.stat().st_size > MAX_UPLOAD_BYTES:
        raise UserError(f"is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB", field=field)
    try:
        with Image.open(file) as img:
            kind = img.format
            if kind not in UPLOAD_FORMATS:
                raise UserError(f"is a {kind} file; upload a PNG, JPEG or WebP image", field=field)
            width, height = img.size
            if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
                raise UserError(f"is {width}x{height}; each side must be {MIN_SIDE} to {MAX_SIDE} pixels", field=field)
            if width % 16 or height % 16:
                raise UserError(f"is {width}x{height}; both sides must be multiples of 16", field=field)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError):
        raise UserError("is not a readable image; upload a PNG, JPEG or WebP file", field=field) from None
    return load_start_image(file, field=field)[0]  # as the person sees it: EXIF orientation, 16-bit tones
