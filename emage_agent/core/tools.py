"""The tool contracts in ``tools/*.json``: the single source of truth for every tool.

The executor's argument validation, the Gemini function declarations, the MCP tool
schemas and the exports for other agent systems are all derived here, so they cannot drift.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any, Literal

from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict

from emage_agent.core.errors import InvalidArgument, UserError
from emage_agent.core.resources import data_dir

TOOL_NAMES: tuple[str, ...] = (
    "generate",
    "canny_edit",
    "depth_edit",
    "inpaint",
    "edit",
    "make_mask",
    "rewrite_prompt",
)
ExportFormat = Literal["gemini", "openai", "mcp", "json"]


class ToolContract(BaseModel):
    """A tool's name, the description the planner reads and its JSON Schema parameters."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    parameters: dict[str, Any]

    def defaults(self) -> dict[str, Any]:
        return {k: v["default"] for k, v in self.parameters.get("properties", {}).items() if "default" in v}


@cache
def load_contracts() -> dict[str, ToolContract]:
    """All contracts by name, checked once: valid JSON Schema and file name equal to tool name."""
    folder = data_dir("tools")
    contracts: dict[str, ToolContract] = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".json"):
            continue
        contract = ToolContract.model_validate(json.loads(entry.read_text(encoding="utf-8")))
        if f"{contract.name}.json" != entry.name:
            raise UserError(f"tools/{entry.name} declares the tool {contract.name!r}; file and tool names must agree")
        Draft202012Validator.check_schema(contract.parameters)
        contracts[contract.name] = contract
    missing = set(TOOL_NAMES) - set(contracts)
    if missing:
        raise UserError(f"tools/ lacks the contracts for {sorted(missing)}")
    return contracts


def get_contract(name: str) -> ToolContract:
    contracts = load_contracts()
    if name not in contracts:
        raise InvalidArgument(f"unknown tool {name!r}; tools are {', '.join(sorted(contracts))}", field="tool")
    return contracts[name]


def _field(error: Any) -> str:
    path = [str(p) for p in error.absolute_path]
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        path.append(missing)
    if error.validator == "additionalProperties" and not path:
        extra = error.message.split("'")[1] if "'" in error.message else "?"
        path.append(extra)
    return ".".join(path) or "arguments"


HEAD_CHARS = 40  # how much of an oversized value an error may echo


def short(value: Any) -> str:
    """``repr(value)``, or its first characters when long: errors never echo a whole oversized input."""
    text = repr(value)
    return text if len(text) <= HEAD_CHARS + 2 else text[:HEAD_CHARS] + "…"


def describe_error(error: Any) -> str:
    """A schema error in words that state the limit and the actual size, echoing at most a short head."""
    value, limit = error.instance, error.validator_value
    if error.validator in ("maxLength", "minLength") and isinstance(value, str):
        bound = "at most" if error.validator == "maxLength" else "at least"
        return f"is {len(value)} characters long; the limit is {bound} {limit} (starts {short(value)})"
    if error.validator in ("maxItems", "minItems") and isinstance(value, list):
        bound = "at most" if error.validator == "maxItems" else "at least"
        return f"has {len(value)} items; the limit is {bound} {limit}"
    message = str(error.message)
    full = repr(value)
    return message.replace(full, short(value)) if len(full) > HEAD_CHARS + 2 else message


def _allowed(schema: dict[str, Any]) -> str:
    """What a property accepts, in words, for error messages."""
    parts = [schema.get("type", "value")]
    if "enum" in schema:
        parts.append(f"one of {schema['enum']}")
    if "minimum" in schema and "maximum" in schema:
        parts.append(f"in [{schema['minimum']}, {schema['maximum']}]")
    if "multipleOf" in schema:
        parts.append(f"a multiple of {schema['multipleOf']}")
    if "minItems" in schema:
        parts.append(f"{schema['minItems']} items")
    return " ".join(str(p) for p in parts)


def validate_arguments(name: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
    """The arguments checked against the tool's contract, with defaults filled in.

    Raises ``InvalidArgument`` naming the first offending field and what it allows.
    """
    contract = get_contract(name)
    args = dict(arguments or {})
    validator = Draft202012Validator(contract.parameters)
    errors = sorted(validator.iter_errors(args), key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        err = errors[0]
        field = _field(err)
        props = contract.parameters.get("properties", {})
        top = field.split(".")[0]
        if err.validator == "additionalProperties":
            raise InvalidArgument(f"{name} takes no argument {top!r}; it takes {', '.join(sorted(props))}", field=top)
        if err.validator == "required":
            raise InvalidArgument(f"{name} requires it", field=field)
        states_limit = err.validator in ("maxLength", "minLength", "maxItems", "minItems")
        allowed = _allowed(props.get(top, {})) if top in props and not states_limit else ""
        raise InvalidArgument(describe_error(err) + (f" (allowed: {allowed})" if allowed else ""), field=field)
    return {**contract.defaults(), **args}


def export_tools(fmt: ExportFormat = "json", names: list[str] | None = None) -> list[dict[str, Any]]:
    """The contracts in another agent system's tool format, deep-copied so callers may mutate."""
    contracts = load_contracts()
    selected = [contracts[n] for n in (names or list(contracts))]
    out: list[dict[str, Any]] = []
    for c in selected:
        params = copy.deepcopy(c.parameters)
        if fmt == "gemini":
            out.append({"name": c.name, "description": c.description, "parameters_json_schema": params})
        elif fmt == "openai":
            out.append(
                {"type": "function", "function": {"name": c.name, "description": c.description, "parameters": params}}
            )
        elif fmt == "mcp":
            out.append({"name": c.name, "description": c.description, "inputSchema": params})
        elif fmt == "json":
            out.append({"name": c.name, "description": c.description, "parameters": params})
        else:
            raise UserError(f"unknown format {fmt!r}; formats are gemini, openai, mcp, json", field="format")
    return out
