"""``index.html``: the batch at a glance, readable offline with nothing else than the file.

Each item shows its best image as an embedded thumbnail (a small JPEG in a data URI, so the page
stays small for thousands of items), its score and status, and links, relative to the batch
folder, to the full image and the session's report.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

from PIL import Image

from emage_agent.adapters.batch.results import ResultRow
from emage_agent.session import atomic_write_bytes

THUMB_PX = 256
INDEX_NAME = "index.html"
_thumbs: dict[tuple[str, float], str] = {}

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}
h1{font-size:1.3rem}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:1rem}
.item{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6rem}
.item img{width:100%;height:auto;border-radius:4px;background:#eee}
.failed{border-color:#d33}.meta{font-size:.85rem;color:#555}.err{color:#b00;font-size:.85rem}
.prompt{font-size:.9rem;margin:.3rem 0}
"""


def thumbnail(path: Path) -> str | None:
    """A data URI of a small JPEG of ``path`` (cached by file and modification time)."""
    try:
        key = (str(path), path.stat().st_mtime)
    except OSError:
        return None
    if key not in _thumbs:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((THUMB_PX, THUMB_PX))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=80)
        _thumbs[key] = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    return _thumbs[key]


def _rel(path: str, out: Path) -> str:
    return Path(os.path.relpath(path, out)).as_posix()


def _card(row: ResultRow, out: Path) -> str:
    e = html.escape
    parts = [f'<div class="item {e(row.status)}" id="{e(row.id)}">']
    thumb = thumbnail(Path(row.best_image)) if row.best_image else None
    if thumb and row.best_image:
        parts.append(f'<a href="{e(_rel(row.best_image, out))}"><img src="{thumb}" alt="{e(row.prompt)}"></a>')
    score = "–" if row.score is None else f"{row.score:.2f}"
    parts.append(f'<div class="prompt"><b>{e(row.id)}</b> {e(row.prompt)}</div>')
    why = "" if row.error else f" · {e(row.stopped_because or '')}"  # a failure's reason is shown below
    parts.append(f'<div class="meta">{e(row.status)} · score {score} · {row.steps} step(s){why}</div>')
    if row.session_dir:
        parts.append(f'<div class="meta"><a href="{e(_rel(row.session_dir, out))}/report.html">report</a></div>')
    if row.error:
        parts.append(f'<div class="err">{e(row.error)}</div>')
    parts.append("</div>")
    return "".join(parts)


def write_gallery(out: Path, rows: list[ResultRow], title: str = "EMage batch") -> Path:
    done = sum(r.status == "done" for r in rows)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>{done} done, {len(rows) - done} failed, of {len(rows)}.</p><div class='grid'>"
        + "".join(_card(r, out) for r in rows)
        + "</div></body></html>\n"
    )
    path = out / INDEX_NAME
    atomic_write_bytes(path, page.encode())
    return path
