"""What an OpenAI-style request may ask of EMage: the OpenAI fields, and EMage's run options as extra fields.

EMage's own options (threshold, iterations, seed, candidates, ...) are not declared again here: their
names, types and limits are read from ``RunOptions.model_fields``, so the service accepts exactly what
the CLI, MCP and batch accept. ``quality`` maps to the iteration budget (``QUALITY_ITERATIONS``); an
explicit ``iterations`` wins. ``n`` asks for n candidates; the n best-scored images come back.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from emage_agent.core.errors import UserError
from emage_agent.core.options import RunOptions, parse_options, with_aliases

# Fields of the options model that describe a session's records or its picture, not a request.
NOT_REQUEST_OPTIONS = frozenset({"speed", "region", "objects", "image", "mask", "width", "height"})
OPTION_NAMES = tuple(name for name in RunOptions.model_fields if name not in NOT_REQUEST_OPTIONS)
QUALITY_ITERATIONS = {"low": 1, "standard": 3, "medium": 3, "auto": 3, "high": 6, "hd": 6}
MAX_N = 4
MAX_PROMPT = 4000
MODELS = {
    "emage": "the refinement loop: generate, judge with the VLM, repair until the score reaches the threshold",
    "flux-dev": "one generate call with the configured FLUX model, no judge",
}


def _optional(name: str) -> tuple[Any, Any]:
    """``RunOptions``' field as an optional request field: same type and limits, default None."""
    info = copy.copy(RunOptions.model_fields[name])
    info.default = None
    info.default_factory = None
    return (info.annotation | None, info)


class OpenAIFields(BaseModel):
    """The OpenAI images API's own fields (those EMage honours, and those it accepts and ignores)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT, description="What the image should show.")
    model: str = Field(default="emage", max_length=100, description="emage (the loop) or flux-dev (one call).")
    n: int = Field(default=1, ge=1, le=MAX_N, description="Candidates; the n best-scored images come back.")
    size: str = Field(default="auto", max_length=20, description="WxH, sides multiples of 16 in [64, 2048].")
    response_format: Literal["b64_json", "url"] = "b64_json"
    quality: Literal["low", "standard", "medium", "auto", "high", "hd"] | None = Field(
        default=None, description="Iteration budget: low 1, standard/medium/auto 3, high/hd 6."
    )
    user: str | None = Field(default=None, max_length=256)
    style: str | None = Field(default=None, max_length=40, description="Accepted and ignored.")
    background: str | None = Field(default=None, max_length=40, description="Accepted and ignored.")
    moderation: str | None = Field(default=None, max_length=40, description="Accepted and ignored.")
    output_format: Literal["png"] | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100, description="Accepted and ignored.")


ImageRequest: type[OpenAIFields] = create_model(  # type: ignore[call-overload]
    "ImageRequest", __base__=OpenAIFields, **{name: _optional(name) for name in OPTION_NAMES}
)


class Parsed(BaseModel):
    """A checked request: the prompt, the plain-model choice, how many images, and EMage's run options."""

    prompt: str
    model: str
    n: int
    response_format: str
    options: dict[str, Any]


def parse_size(size: str) -> dict[str, int]:
    if size == "auto":
        return {}
    width, sep, height = size.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise UserError(f"{size[:20]!r} is not WxH (for example 1024x1024) or auto", field="size")
    return {"width": int(width), "height": int(height)}


def check_request(raw: dict[str, Any]) -> Parsed:
    """The request's fields checked (OpenAI's and EMage's, with EMage's limits), or a ``UserError`` naming one."""
    try:
        request = ImageRequest.model_validate(with_aliases(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        message = (
            first["msg"]
            if first["type"] != "extra_forbidden"
            else "not a field; EMage takes " + ", ".join([*OpenAIFields.model_fields, *OPTION_NAMES])
        )
        raise UserError(message, field=field) from None
    if request.model not in MODELS:
        raise ModelNotFound(f"the model {request.model[:100]!r} does not exist; this server has {', '.join(MODELS)}")
    prompt = request.prompt.strip()
    if not prompt:
        raise UserError("the prompt is empty; say what the image should show", field="prompt")
    options = {name: getattr(request, name) for name in OPTION_NAMES if getattr(request, name) is not None}
    if request.quality is not None and "iterations" not in options:
        options["iterations"] = QUALITY_ITERATIONS[request.quality]
    if request.n > 1:
        options["candidates"] = max(options.get("candidates", 1), request.n)
    options.update(parse_size(request.size))
    try:
        parse_options(**options)  # the same checks (and messages) as every other way in
    except UserError as exc:
        if exc.field not in ("width", "height"):
            raise
        raise UserError(f"{request.size}: {str(exc).split(': ', 1)[-1]}", field="size") from None
    return Parsed(
        prompt=prompt, model=request.model, n=request.n, response_format=request.response_format, options=options
    )


class ModelNotFound(UserError):
    """The request names a model this server does not serve (404, as OpenAI answers)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="model")
