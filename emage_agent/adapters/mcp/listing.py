"""``resources/list``: recent sessions' best images and reports, so MCP clients' resource browsers show them.

Bounded (the newest ``MAX_SESSIONS`` sessions by last change, two resources each) and newest first;
each resource is named after its session and described with the prompt, score and status (the prompt
clipped: it is a person's text). Images are the ``emage://sessions/{id}/artifacts/{artifact}`` links the
tools already return; reports are ``emage://sessions/{id}/report``, read as HTML.
"""

from __future__ import annotations

import re
from pathlib import Path

from mcp import types

from emage_agent.core.errors import EmageError
from emage_agent.session import SessionStore

MAX_SESSIONS = 25
REPORT_URI = "emage://sessions/{session_id}/report"
REPORT_URI_RE = re.compile(r"^emage://sessions/(?P<session_id>[^/]+)/report$")


def _clip(text: str, limit: int = 80) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


def recent_resources(root: Path, limit: int | None = None) -> list[types.Resource]:
    """The best image and the report of each of the newest ``limit`` sessions under ``root``, newest first."""
    limit = MAX_SESSIONS if limit is None else limit
    if not root.is_dir():
        return []
    folders = [p for p in root.iterdir() if not p.name.startswith(".") and (p / "session.db").is_file()]
    folders.sort(key=lambda p: (p / "session.db").stat().st_mtime, reverse=True)
    out: list[types.Resource] = []
    for folder in folders[:limit]:
        try:
            with SessionStore.open(folder) as store:
                info, best = store.info, store.best()
                art = store.current_image(best.step) if best and best.step else None
                score = "unscored" if best is None or best.score is None else f"{best.score:.2f}"
                about = f"“{_clip(info.original_prompt)}” · best {score} · {info.status} · {info.updated_at[:16]}"
                if art is not None:
                    out.append(
                        types.Resource(
                            uri=f"emage://sessions/{info.id}/artifacts/{art.id}",
                            name=f"{info.id} best image",
                            title=f"Best image: {_clip(info.original_prompt, 48)}",
                            description=f"Step {art.step}, {art.width}×{art.height}. {about}",
                            mime_type="image/png",
                        )
                    )
                if (store.dir / "report.html").is_file():
                    out.append(
                        types.Resource(
                            uri=REPORT_URI.format(session_id=info.id),
                            name=f"{info.id} report",
                            title=f"Report: {_clip(info.original_prompt, 48)}",
                            description=f"The session's steps, scores and decisions (HTML). {about}",
                            mime_type="text/html",
                        )
                    )
        except (EmageError, OSError):
            continue  # a folder that is not a readable session is not listed
    return out
