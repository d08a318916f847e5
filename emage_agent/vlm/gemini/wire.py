"""Gemini's side of the request interface: turns to ``types.Content``, and the answer back to a ``Reply``.

What is Gemini's own: the model's turn goes back as the very ``Content`` it came in (thought signatures);
tool results are function responses, with their image inside on Gemini 3 and as a plain part before it;
all tools are declared and ``allowed_function_names`` narrows the choice, so earlier calls in the history
always refer to declared functions; answers use a response schema, decoded by the SDK.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emage_agent.core.tools import export_tools
from emage_agent.vlm.gemini.sdk import types
from emage_agent.vlm.transport import Reply, Request, ToolResult, Turn, split_results
from emage_agent.vlm.turns import Pending


def function_declarations(names: list[str] | None = None) -> list[types.FunctionDeclaration]:
    """The contracts of ``names`` (default: all) as Gemini declarations (JSON Schema passed through untouched)."""
    return [types.FunctionDeclaration(**d) for d in export_tools("gemini", names)]


def supports_function_response_media(model: str) -> bool:
    """Gemini 3 takes images inside function responses; earlier models get them as a plain part."""
    return "gemini-3" in model


def _png(data: bytes) -> types.Part:
    return types.Part.from_bytes(data=data, mime_type="image/png")


def _response(result: ToolResult, inline: bool) -> types.Part:
    png = result.png if inline else None
    media = [types.FunctionResponsePart.from_bytes(data=png, mime_type="image/png")] if png else None
    response = types.FunctionResponse(id=result.call_id, name=result.name, response=result.payload, parts=media)
    return types.Part(function_response=response)


def contents(turns: list[Turn], model: str) -> list[types.Content]:
    """The turns as Gemini contents; a model turn is its raw ``Content``, untouched."""
    inline = supports_function_response_media(model)
    out: list[types.Content] = []
    for turn in turns:
        if turn.role == "model":
            out.append(turn.raw)
            continue
        parts = []
        for kind, value in split_results(turn.parts, inline):
            if kind == "result":
                parts.append(_response(value, inline))
            else:
                parts.append(types.Part(text=value) if kind == "text" else _png(value))
        out.append(types.Content(role="user", parts=parts))
    return out


def config(request: Request, declarations: list[types.FunctionDeclaration]) -> types.GenerateContentConfig:
    no_auto = types.AutomaticFunctionCallingConfig(disable=True)
    if request.tools is None:
        return types.GenerateContentConfig(
            system_instruction=request.system,
            response_mime_type="application/json" if request.answer else None,
            response_schema=request.answer,
            automatic_function_calling=no_auto,
        )
    mode = types.FunctionCallingConfigMode.ANY
    calling = types.FunctionCallingConfig(mode=mode, allowed_function_names=request.tools)
    return types.GenerateContentConfig(
        system_instruction=request.system,
        tools=[types.Tool(function_declarations=declarations)],
        tool_config=types.ToolConfig(function_calling_config=calling),
        automatic_function_calling=no_auto,
    )


def answer_text(response: Any) -> str:
    """The answer's visible text (thought parts skipped)."""
    candidates = response.candidates or []
    parts = (candidates[0].content.parts or []) if candidates and candidates[0].content else []
    return "".join(p.text for p in parts if p.text and not p.thought)


def _reasons(response: Any) -> tuple[Any, Any]:
    """Why an answer has no text: the prompt's block reason and the candidate's finish reason."""
    candidates = response.candidates or []
    block = response.prompt_feedback.block_reason if response.prompt_feedback else None
    return block, candidates[0].finish_reason if candidates else None


def send(generate: Callable[..., Any], model: str, declarations: list[Any], req: Request) -> Reply:
    """One request through ``generate`` (the client's retries, fallback model and error translation)."""
    response = generate(req.purpose, contents(req.turns, model), config(req, declarations))
    text = answer_text(response)
    block, finish = _reasons(response)
    if req.tools is None:
        if not text and (block or finish):
            text = f"(no text; block_reason={block}, finish_reason={finish})"
        return Reply(text=text, parsed=response.parsed)
    candidates = response.candidates or []
    content = candidates[0].content if candidates else None
    if content is None or not content.parts:
        return Reply(empty=f"the model returned no content (block_reason={block}, finish_reason={finish})")
    calls = [Pending(c.name or "", c.id, dict(c.args or {})) for c in (p.function_call for p in content.parts) if c]
    return Reply(text=text, calls=calls, turn=Turn("model", raw=content))
