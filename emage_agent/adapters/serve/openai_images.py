"""The OpenAI images API: ``GET /v1/models``, ``POST /v1/images/generations``, ``POST /v1/images/edits``.

Apps that speak it (Open WebUI, LibreChat, the ``openai`` SDK) work unchanged with
``base_url=http://HOST:PORT/v1``. The model ``emage`` runs the whole loop and answers with the n best
images; ``revised_prompt`` is the prompt the image was made with when EMage rewrote it. ``flux-dev``
is one ``generate`` call per image, no judge. Both are ordinary sessions under ``--out``.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from emage_agent.adapters.serve.errors import ApiError, from_emage
from emage_agent.adapters.serve.options import MODELS, ImageRequest, Parsed, check_request
from emage_agent.adapters.serve.runs import Run
from emage_agent.adapters.serve.state import ServeState, documented, finished, json_object
from emage_agent.adapters.serve.uploads import region_mask, start_picture
from emage_agent.adapters.serve.views import best_images, session_dir
from emage_agent.api import Agent, Session
from emage_agent.core.errors import UserError
from emage_agent.session import SessionStore

CREATED = int(time.time())
MAX_FIELD_CHARS = 4000


def _loop_work(parsed: Parsed, picture: Any = None, region: Any = None) -> Any:
    """The run of one ``emage`` request: a session (from the picture, when given) refined to the end."""

    def work(agent: Agent, run: Run) -> Session:
        if picture is not None:
            session = agent.start(parsed.prompt, image=picture, mask=region, **parsed.options)
        else:
            session = agent.create(parsed.prompt, **parsed.options)
        run.session_id = session.id
        run.sessions.append(session.id)
        session.loop.halt = run.halt.is_set
        session.run()
        return session

    return work


def _plain_work(parsed: Parsed) -> Any:
    """``flux-dev``: one ``generate`` call per image, each its own session, no judge."""

    def work(agent: Agent, run: Run) -> None:
        args = {"prompt": parsed.prompt}
        args |= {k: parsed.options[k] for k in ("width", "height", "steps", "guidance", "seed") if k in parsed.options}
        for index in range(parsed.n):
            if run.halt.is_set():
                break
            if "seed" in args and index:
                args["seed"] = (parsed.options["seed"] + index) % 2**32
            out = agent.run_tool("generate", dict(args))
            if not out["ok"]:
                raise UserError(str(out["note"]).removeprefix("error: "), field="generate")
            run.sessions.append(out["session_id"])
            run.session_id = out["session_id"]
        return None

    return work


def _answer(state: ServeState, request: Request, parsed: Parsed, run: Run) -> JSONResponse:
    """The finished run as OpenAI's answer: ``created`` and ``data[]`` of images, best first."""
    if run.error is not None:
        failed = from_emage(run.error)
        if run.session_id and failed.status >= 500:
            failed.message += (
                f"; session {run.session_id} is saved: POST /v1/sessions/{run.session_id}/resume continues it"
            )
        raise failed
    if state.service.draining and run.halt.is_set():
        where = f"; session {run.session_id} is saved and resumable" if run.session_id else ""
        raise ApiError(503, "the server is stopping" + where, kind="server_error", headers={"Retry-After": "10"})
    root = state.service.root
    picked: list[tuple[str, int, Any, str | None]] = []
    ids = run.sessions if parsed.model != "emage" else ([run.session_id] if run.session_id else [])
    for sid in ids:
        with SessionStore.open(session_dir(root, sid)) as store:
            count = parsed.n if parsed.model == "emage" else 1
            picked += [(sid, step, path, prompt) for step, path, prompt in best_images(store, count)]
    if not picked:
        raise ApiError(500, "the run ended without an image", kind="server_error", code="no_image")
    data = []
    for sid, step, path, prompt in picked[: parsed.n]:
        item: dict[str, Any] = {"revised_prompt": prompt}
        if parsed.response_format == "url":
            item["url"] = state.image_url(request, sid, step)
        else:
            item["b64_json"] = base64.b64encode(path.read_bytes()).decode()
        data.append(item)
    headers = {"X-EMage-Session": ids[-1]} if ids else {}
    return JSONResponse({"created": int(time.time()), "data": data}, headers=headers)


async def _run_request(state: ServeState, request: Request, parsed: Parsed, work: Any) -> JSONResponse:
    run = state.submit(work)
    await finished(run)
    return await anyio.to_thread.run_sync(_answer, state, request, parsed, run)  # reads the PNGs


def _text(value: Any, name: str) -> str:
    if isinstance(value, UploadFile):
        raise UserError("must be a text field, not a file", field=name)
    if len(value) > MAX_FIELD_CHARS:
        raise UserError(f"at most {MAX_FIELD_CHARS} characters", field=name)
    return str(value)


async def _upload(form: Any, name: str) -> bytes | None:
    items = form.getlist(name) or form.getlist(f"{name}[]")
    if not items:
        return None
    if not isinstance(items[0], UploadFile):
        raise UserError("must be a file (multipart upload)", field=name)
    return await items[0].read()


def router(state: ServeState) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["OpenAI images"])

    @api.get("/models", summary="The models this server serves")
    async def models() -> dict[str, Any]:
        data = [{"id": m, "object": "model", "created": CREATED, "owned_by": "emage", "description": d}
                for m, d in MODELS.items()]  # fmt: skip
        return {"object": "list", "data": data}

    @api.get("/models/{model}", summary="One model")
    async def model(model: str) -> dict[str, Any]:
        if model not in MODELS:
            raise ApiError(404, f"the model {model[:100]!r} does not exist", param="model", code="model_not_found")
        return {"id": model, "object": "model", "created": CREATED, "owned_by": "emage", "description": MODELS[model]}

    @api.post(
        "/images/generations",
        summary="Create an image (EMage's options as extra fields)",
        openapi_extra=documented(ImageRequest),
    )
    async def generations(request: Request) -> JSONResponse:
        parsed = check_request(await json_object(request))
        raw = await request.body()
        work = _loop_work(parsed) if parsed.model == "emage" else _plain_work(parsed)

        async def make() -> JSONResponse:
            return await _run_request(state, request, parsed, work)

        key = request.headers.get("idempotency-key")
        return await state.keys.answer(key, "generations", raw, make, state.request_timeout)

    @api.post("/images/edits", summary="Edit a picture (multipart: image, optional mask, prompt, ...)")
    async def edits(request: Request) -> JSONResponse:
        form = await request.form(max_files=4, max_fields=64, max_part_size=state.max_body)
        image, mask = await _upload(form, "image"), await _upload(form, "mask")
        if image is None:
            raise UserError("send the picture to edit as the multipart file field 'image'", field="image")
        fields = {k: _text(v, k) for k, v in form.multi_items() if k not in ("image", "image[]", "mask")}
        parsed = check_request(fields)
        if parsed.model != "emage":
            raise UserError("edits run the refinement loop; use the model emage", field="model")
        picture, _note = await anyio.to_thread.run_sync(start_picture, image)
        region = await anyio.to_thread.run_sync(region_mask, mask) if mask is not None else None
        options = {k: v for k, v in parsed.options.items() if k not in ("width", "height")}  # the picture's size
        parsed = parsed.model_copy(update={"options": options})
        work = _loop_work(parsed, picture, region)

        async def make() -> JSONResponse:
            return await _run_request(state, request, parsed, work)

        digest_of = image + (mask or b"") + repr(sorted(fields.items())).encode()
        key = request.headers.get("idempotency-key")
        return await state.keys.answer(key, "edits", digest_of, make, state.request_timeout)

    return api
