"""The OpenAI-compatible side of the request interface: turns to chat messages, the completion to a ``Reply``.

What is this backend's own: images go as data URLs; tool results are ``tool`` messages right after the
assistant turn that made the calls, while the images they return travel in the next user message (most
servers take text only in ``tool`` messages); a call the model wrote as a JSON object in plain text (some
Ollama models) is read too, and its result goes back as text; answers ask for JSON through the client's
``response_format`` ladder and arrive as text.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from emage_agent.vlm.parsing import extract_json
from emage_agent.vlm.transport import Reply, Request, Turn, split_results
from emage_agent.vlm.turns import Pending

ANSWER_NAMES = {"evaluate": "evaluation"}  # the json_schema name per purpose (else the purpose itself)


def image_part(png: bytes) -> dict[str, Any]:
    """A PNG as an ``image_url`` content part (a data URL: no upload, works on every server)."""
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def answer_text(response: Any) -> str:
    """The first choice's text; ``""`` when it has none."""
    message = response.choices[0].message if response.choices else None
    content = getattr(message, "content", None)
    return content if isinstance(content, str) else ""


def messages(request: Request) -> list[dict[str, Any]]:
    """The turns as chat messages: the system prompt, then each turn (a model turn exactly as it came)."""
    out: list[dict[str, Any]] = [{"role": "system", "content": request.system}] if request.system else []
    for turn in request.turns:
        if turn.role == "model":
            out.append(turn.raw)
            continue
        content: list[dict[str, Any]] = []
        for kind, value in split_results(turn.parts, inline_images=False):
            if kind == "result" and value.call_id:
                answer = json.dumps(value.payload, ensure_ascii=False)
                out.append({"role": "tool", "tool_call_id": value.call_id, "content": answer})
            elif kind == "result":
                content.append(text_part(f"Result of {value.name}: {json.dumps(value.payload, ensure_ascii=False)}"))
            else:
                content.append(text_part(value) if kind == "text" else image_part(value))
        plain = request.tools is None and len(content) == 1 and content[0]["type"] == "text"
        out.append({"role": "user", "content": content[0]["text"] if plain else content})
    return out


def _arguments(raw: Any) -> tuple[dict[str, Any], str | None]:
    """A tool call's arguments (a JSON string on the wire) and why they could not be read."""
    if isinstance(raw, dict):
        return raw, None
    try:
        value = json.loads(raw or "{}")
    except (TypeError, json.JSONDecodeError) as exc:
        return {}, f"the arguments are not JSON ({exc})"
    return (value, None) if isinstance(value, dict) else ({}, "the arguments are not a JSON object")


def calls_in_text(text: str) -> list[Pending]:
    """``{"name": ..., "arguments": {...}}`` (or ``tool``/``args``) written as text instead of a tool call."""
    data = extract_json(text)
    items = data if isinstance(data, list) else [data]
    found = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("name") or item.get("tool"), str):
            args = item.get("arguments", item.get("args", {}))
            found.append(
                Pending(str(item.get("name") or item.get("tool")), None, args if isinstance(args, dict) else {})
            )
    return found


def read_tool_calls(response: Any, sent: int) -> Reply:
    """The assistant turn as sent back later, and its calls (tool calls, else calls written as text)."""
    message = response.choices[0].message
    raw_calls = list(getattr(message, "tool_calls", None) or [])
    text = answer_text(response)
    if not raw_calls and not text:
        finish = getattr(response.choices[0], "finish_reason", None)
        return Reply(empty=f"the model returned no content (finish_reason={finish})")
    turn: dict[str, Any] = {"role": "assistant", "content": text or None}
    if not raw_calls:
        return Reply(calls=calls_in_text(text), turn=Turn("model", raw=turn))
    turn["tool_calls"] = []
    calls: list[Pending] = []
    for n, call in enumerate(raw_calls):
        call_id = getattr(call, "id", None) or f"call_{sent}_{n}"
        fn = call.function
        turn["tool_calls"].append(
            {"id": call_id, "type": "function", "function": {"name": fn.name, "arguments": fn.arguments}}
        )
        args, error = _arguments(fn.arguments)
        calls.append(
            Pending(fn.name or "", call_id, args, f"invalid arguments for {fn.name}: {error}" if error else None)
        )
    return Reply(text=text, calls=calls, turn=Turn("model", raw=turn))


def send(chat_json: Callable[..., Any], chat_tools: Callable[..., Any], tools: list[Any], request: Request) -> Reply:
    """One request through the client's ladders (``response_format``, ``tool_choice``) and retries."""
    wire = messages(request)
    if request.tools is not None:
        return read_tool_calls(chat_tools(request.purpose, wire, tools), len(wire))
    schema = request.answer.model_json_schema() if request.answer else {"type": "object"}
    name = ANSWER_NAMES.get(request.purpose, request.purpose)
    return Reply(text=answer_text(chat_json(request.purpose, wire, name, schema)))
