"""Read-only views of stored sessions for the API: status, steps, scores, image URLs, the n best images.

Everything here only reads the store. A session the store calls "running" that no run of this
process is running was cut off (a ``kill -9``, a crash): it is shown as "interrupted", which is what
it is, and ``POST /v1/sessions/{id}/resume`` continues it from its last committed step.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emage_agent.adapters.serve.errors import NotFound
from emage_agent.adapters.serve.runs import Run
from emage_agent.session import SessionStore

SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
DB_NAME = "session.db"
UrlFor = Callable[[str, int], str]  # (session id, step) -> the image's URL


def session_dir(root: Path, session_id: str) -> Path:
    """The folder of session ``session_id`` directly inside ``root``; 404 for anything else."""
    if not SESSION_ID.fullmatch(session_id) or ".." in session_id:
        raise NotFound("not a session id", param="session_id")
    folder = root / session_id
    if folder.parent != root or not (folder / DB_NAME).is_file():
        raise NotFound(f"no session {session_id!r} on this server", param="session_id")
    return folder


def status_of(store: SessionStore, run: Run | None) -> str:
    status = store.info.status
    if run is not None:
        return "running" if run.started.is_set() else "queued"
    return "interrupted" if status == "running" else status


def describe(store: SessionStore, run: Run | None, url_for: UrlFor) -> dict[str, Any]:
    """What ``GET /v1/sessions/{id}`` returns: status, prompts, options, every step, the best image."""
    info, steps = store.info, store.steps()
    best = store.best()
    best_art = store.current_image(best.step) if best and best.step else None
    return {
        "id": info.id,
        "object": "session",
        "status": status_of(store, run),
        "stopped_because": info.stopped_because,
        "prompt": info.original_prompt,
        "current_prompt": info.current_prompt,
        "options": {k: v for k, v in info.options.items() if k != "speed"},
        "best_step": info.best_step,
        "score": best.score if best else None,
        "best_image_url": url_for(info.id, best.step) if best_art and best and best.step else None,
        "queue_position": run.position if run is not None else None,
        "diffusion": list(run.diffusion) if run is not None and run.diffusion else None,
        "vlm_calls": info.vlm_calls,
        "gpu_seconds": round(info.gpu_seconds, 3),
        "steps": [
            {
                "step": s.step,
                "tool": s.tool,
                "score": s.score,
                "rolled_back": s.rolled_back,
                "vetoes": len(s.vetoes),
                "error": s.error,
                "image_url": url_for(info.id, s.step)
                if s.step and any(a.role == "image" for a in s.artifacts)
                else None,
            }
            for s in steps
        ],
        "created_at": info.created_at,
        "updated_at": info.updated_at,
    }


def best_images(store: SessionStore, n: int) -> list[tuple[int, Path, str | None]]:
    """Up to ``n`` images of the session, best first: the session's best, then the other scored ones by score
    (an unjudged session: its current image).

    Each is (step, PNG path, the prompt it was made with when EMage rewrote the original, else None).
    """
    info = store.info
    chosen: list[tuple[int, Path, str | None]] = []
    best = store.best()
    scored = sorted(
        (s for s in store.steps() if s.score is not None and s.step), key=lambda s: (-(s.score or 0), s.step)
    )
    order = ([best] if best is not None else []) + [s for s in scored if best is None or s.step != best.step]
    head = store.head()
    if not order and head is not None:  # a plain generate: no judge, no score
        order = [head]
    seen: set[str] = set()
    for rec in order:
        art = store.current_image(rec.step or 0)
        if art is None or art.id in seen:
            continue
        seen.add(art.id)
        prompt = rec.prompt if rec.prompt and rec.prompt != info.original_prompt else None
        chosen.append((rec.step or 0, store.artifact_path(art.id), prompt))
        if len(chosen) == n:
            break
    return chosen


def image_path(store: SessionStore, step: int) -> Path:
    """The PNG in force at ``step`` (the store refuses a path outside the session folder)."""
    steps = {s.step for s in store.steps()}
    if step not in steps:
        raise NotFound(f"session {store.id} has no step {step}", param="step")
    art = store.current_image(step)
    if art is None:
        raise NotFound(f"step {step} of session {store.id} has no image yet", param="step")
    return store.artifact_path(art.id)
