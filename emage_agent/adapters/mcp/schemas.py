"""The MCP-only tools' input schemas, descriptions and instructions, and the check of arguments against them.

The single tools' schemas come from their contracts (``tools/*.json``) plus an optional ``session_id``;
``evaluate``, ``refine``, ``session_history`` and ``revert`` exist only over MCP and are described here.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from emage_agent.core.errors import UserError
from emage_agent.core.options import FIXED_OPTIONS, PERSON_OPTIONS, option_schema
from emage_agent.core.tools import describe_error, export_tools, first_image_tool


def _text(max_length: int, description: str) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_length, "description": description}


def _object(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


SESSION_ID = _text(
    300,
    "The session to work in: its id or its directory inside the session root. "
    "generate without it starts a new session; every other tool needs it.",
)
_GEN = export_tools("json", [first_image_tool()])[0]["parameters"]["properties"]
# refine's options, iterations aside (it means "to run now" here): all the options model's, generated from it
REFINE_OPTIONS = tuple(n for n in PERSON_OPTIONS if n != "iterations")
PICTURE_OPTIONS = ("image", "mask")  # refine's own picture to start from: files inside the session root
NEW_SESSION_ONLY = tuple(FIXED_OPTIONS)  # they belong to the first image: a continuing session keeps them
_CONTINUING = " Continuing a session: applies to its next steps."
_FIXED = " New sessions only: a continuing session keeps its first image's {}."


def _refine_option(name: str) -> dict[str, Any]:
    """An option's schema from the options model, saying whether a continuing session may change it."""
    schema = option_schema(name)
    schema.pop("default", None)
    note = _FIXED.format("size" if name in ("width", "height") else name) if name in NEW_SESSION_ONLY else _CONTINUING
    return {**schema, "description": schema.get("description", "") + note}


BRIEF = (  # the summary keys refine returns
    "session_id",
    "session_dir",
    "satisfaction_score",
    "best_step",
    "final_image",
    "final_prompt",
    "original_prompt",
    "iterations",
    "stopped_because",
)
SCHEMAS: dict[str, dict[str, Any]] = {
    "evaluate": _object(
        ["image"],
        image=_text(
            1000, "An artifact id of the session ('current', 's3-image') or an image file inside the session root."
        ),
        prompt=_text(2000, "What the image should show; defaults to the session's current prompt."),
        session_id=SESSION_ID,
    ),
    "refine": _object(
        [],
        prompt={**_GEN["prompt"], "description": "Start a new session with this prompt."},
        session_id={**SESSION_ID, "description": "Continue this session instead of starting one."},
        feedback=_text(
            2000,
            "What is still wrong, in your words (needs session_id); it becomes the weightiest "
            "issue of the next judgement.",
        ),
        image=_text(
            1000, "New sessions: start from this picture (a file inside the session root) instead of generating."
        ),
        mask=_text(
            1000, "With image: repairs change only the white region of this mask (a file inside the session root)."
        ),
        iterations={
            **{k: v for k, v in option_schema("iterations").items() if k != "default"},
            "description": "Repair iterations to run now (a new session: 3 by default; continuing: 1).",
        },
        **{k: _refine_option(k) for k in REFINE_OPTIONS},
    ),
    "session_history": _object(["session_id"], session_id=SESSION_ID),
    "revert": _object(
        ["session_id", "step"],
        session_id=SESSION_ID,
        step={"type": "integer", "minimum": 1, "description": "The step to make current again."},
    ),
}
DESCRIPTIONS = {
    "evaluate": "Judge an image against a prompt with the configured VLM: a satisfaction score in [0, 1], the issues "
    "(category, severity, target, box) and a summary. Changes nothing.",
    "refine": "Run EMage's whole loop: generate, judge, repair until good. Give a prompt to start a session, or a "
    "session_id (and optionally feedback) to continue one. Returns the best image, its score, the session id and "
    "a short history. Takes minutes on a GPU; progress is reported.",
    "session_history": "Every step of a session: tool, arguments, score, vetoes, rollbacks, and the best image.",
    "revert": "Make an earlier step of a session current again (later steps stay in the history).",
}
INSTRUCTIONS = (
    "EMage makes images match their prompt. Use refine for the automatic loop, or the single tools "
    "(generate first; then edit, make_mask + inpaint, canny_edit, depth_edit, rewrite_prompt) with the session_id that "
    "generate returns. Images are referred to by artifact ids such as 's3-image'; 'current' is the session's best."
)


def contract_schema(name: str) -> dict[str, Any]:
    """A tool contract's parameters as an MCP input schema, plus the optional ``session_id``."""
    schema = export_tools("mcp", [name])[0]["inputSchema"]
    schema["properties"]["session_id"] = dict(SESSION_ID)
    return schema


def check_schema(schema: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """The arguments checked against ``schema``; the first problem becomes a ``UserError`` naming the field."""
    errors = sorted(Draft202012Validator(schema).iter_errors(args), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        err = errors[0]
        field = ".".join(map(str, err.absolute_path))
        if not field and err.validator in ("required", "additionalProperties") and "'" in err.message:
            field = err.message.split("'")[1]
        raise UserError(describe_error(err), field=field or "arguments")
    return args
