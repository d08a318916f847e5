"""The session API, for clients that watch and steer: start, read, follow (SSE), feedback, revert, resume, stop.

Sessions are the ordinary session folders under ``--out``: the CLI (``resume``, ``report``) and the
web UI work on them too. Starting, feedback and resume answer 202 at once; the run goes on in the
background and ``GET /v1/sessions/{id}/events`` streams its every step, score, decision, veto,
rollback and its end as Server-Sent Events. ``DELETE`` stops a run at its next step boundary; the
session stays and ``resume`` continues it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from emage_agent.adapters.serve.errors import ApiError
from emage_agent.adapters.serve.options import ImageRequest, check_request
from emage_agent.adapters.serve.runs import Run
from emage_agent.adapters.serve.state import POLL_S, ServeState, documented, json_object
from emage_agent.adapters.serve.views import describe, image_path, session_dir
from emage_agent.api import Agent, Session
from emage_agent.core.errors import EmageError
from emage_agent.session import SessionStore

SSE_MAX_SECONDS = 3600.0  # one stream's life; the client reconnects with Last-Event-ID
HEARTBEAT_S = 15.0
MAX_EVENT_CHARS = 2000
MAX_LIST = 200


class Feedback(BaseModel):
    text: str = Field(min_length=1, max_length=2000, description="What is still wrong, in your words.")
    iterations: int = Field(default=1, ge=1, le=20, description="Repair iterations to run now.")


class Revert(BaseModel):
    step: int = Field(ge=1, description="The step to make current again (later steps stay in the history).")


class Resume(BaseModel):
    iterations: int | None = Field(default=None, ge=0, le=100, description="More iterations (default: the rest).")


def _sse(event: dict[str, Any], session_id: str | None) -> bytes:
    data = {**event, "session_id": session_id, "message": str(event.get("message", ""))[:MAX_EVENT_CHARS]}
    text = json.dumps(data, ensure_ascii=False, default=str)
    return f"id: {event['id']}\nevent: {event['kind']}\ndata: {text}\n\n".encode()


def router(state: ServeState) -> APIRouter:
    api = APIRouter(prefix="/v1/sessions", tags=["Sessions"])
    service = state.service

    def folder(session_id: str) -> Any:
        return session_dir(service.root, session_id)

    def view(request: Request, session_id: str) -> dict[str, Any]:
        with SessionStore.open(folder(session_id)) as store:
            return describe(store, service.running(session_id), lambda s, n: state.image_url(request, s, n))

    def continuing(session_id: str, action: Callable[[Session], Any]) -> Any:
        path = folder(session_id)

        def work(agent: Agent, run: Run) -> Session:
            session = agent.open(path)
            session.loop.halt = run.halt.is_set
            action(session)
            return session

        return work

    def accepted(request: Request, session_id: str, run: Run) -> JSONResponse:
        body = {**view(request, session_id), "run": run.key}
        body["status"] = "running" if run.started.is_set() else "queued"
        return JSONResponse(body, status_code=202)

    @api.post(
        "",
        status_code=202,
        summary="Start a session; answers with its id at once",
        openapi_extra=documented(ImageRequest),
    )
    async def start(request: Request) -> JSONResponse:
        parsed = check_request(await json_object(request))
        if parsed.model != "emage":
            raise ApiError(400, "sessions run the refinement loop; use the model emage", param="model")

        def begin() -> JSONResponse:
            state.admit()  # full or stopping: refused before a session folder is made
            session = service.agent.create(parsed.prompt, **parsed.options)
            sid = session.id
            session.close()
            run = state.submit(continuing(sid, lambda s: s.run()), session_id=sid)
            return accepted(request, sid, run)

        async def make() -> JSONResponse:
            return await anyio.to_thread.run_sync(begin)

        raw = await request.body()
        return await state.keys.answer(request.headers.get("idempotency-key"), "sessions", raw, make, 60.0)

    @api.get("", summary="The sessions under --out, newest first")
    def listing(request: Request, limit: int = 50) -> dict[str, Any]:
        rows = []
        folders = sorted((p for p in service.root.iterdir() if (p / "session.db").is_file()), reverse=True)
        for path in folders[: max(1, min(limit, MAX_LIST))]:
            try:
                with SessionStore.open(path) as store:
                    best = store.best()
                    run = service.running(store.id)
                    rows.append(
                        {
                            "id": store.id,
                            "prompt": store.info.original_prompt,
                            "status": describe(store, run, lambda s, n: state.image_url(request, s, n))["status"],
                            "score": best.score if best else None,
                            "updated_at": store.info.updated_at,
                        }
                    )
            except EmageError:
                continue  # not a readable session: not listed
        return {"object": "list", "data": rows}

    @api.get("/{session_id}", summary="Status, steps, scores and the best image")
    def read(request: Request, session_id: str) -> dict[str, Any]:
        return view(request, session_id)

    @api.get("/{session_id}/images/{step}", summary="The image in force at a step (PNG)")
    def image(session_id: str, step: int) -> FileResponse:
        with SessionStore.open(folder(session_id)) as store:
            path = image_path(store, step)
        return FileResponse(path, media_type="image/png")

    @api.post("/{session_id}/feedback", status_code=202, summary="Your words become the next judgement's top issue")
    def feedback(request: Request, session_id: str, body: Feedback) -> JSONResponse:
        run = state.submit(continuing(session_id, lambda s: s.refine(body.text, body.iterations)), session_id)
        return accepted(request, session_id, run)

    @api.post("/{session_id}/resume", status_code=202, summary="Continue from the last committed step")
    def resume(request: Request, session_id: str, body: Resume | None = None) -> JSONResponse:
        iterations = body.iterations if body is not None else None
        run = state.submit(continuing(session_id, lambda s: s.run(iterations)), session_id)
        return accepted(request, session_id, run)

    @api.post("/{session_id}/revert", summary="Make an earlier step current again")
    def revert(request: Request, session_id: str, body: Revert) -> dict[str, Any]:
        path = folder(session_id)
        if service.running(session_id) is not None:
            raise ApiError(409, "the session is running; DELETE it (stop) first", code="session_busy")
        session = service.agent.open(path)
        try:
            session.revert(body.step)
        finally:
            session.close()
        return view(request, session_id)

    @api.delete("/{session_id}", summary="Stop the session's run at its next step boundary (resumable)")
    def stop(request: Request, session_id: str) -> JSONResponse:
        folder(session_id)
        stopping = service.stop(session_id)
        body = {**view(request, session_id), "stopping": stopping}
        return JSONResponse(body, status_code=202 if stopping else 200)

    @api.get("/{session_id}/events", summary="Server-Sent Events: every step, score, decision, veto, the end")
    async def events(request: Request, session_id: str) -> StreamingResponse:
        folder(session_id)
        last = request.headers.get("last-event-id", "")
        seen = int(last) + 1 if last.isdigit() else 0

        async def stream() -> AsyncIterator[bytes]:
            run = service.latest(session_id)
            if run is None:  # nothing runs it in this process: its state, then the end
                yield _sse(
                    {"id": 0, "kind": "state", "message": "not running", "data": view(request, session_id)}, session_id
                )
                yield _sse({"id": 1, "kind": "end", "message": "not running", "data": {}}, session_id)
                return
            deadline, beat, at = time.monotonic() + SSE_MAX_SECONDS, time.monotonic(), seen
            while time.monotonic() < deadline:
                for event in run.since(at):
                    yield _sse(event, session_id)
                    at = event["id"] + 1
                    if event["kind"] == "end":
                        return
                if time.monotonic() - beat > HEARTBEAT_S:
                    beat = time.monotonic()
                    yield b": keep-alive\n\n"
                await asyncio.sleep(POLL_S * 2)

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    return api
