"""The tool registry: the contracts in ``tools/*.json`` plus the traits the code needs, one owner per fact.

The executor's argument validation and dispatch, the planner declarations, the selector's repair table,
the session views, the MCP tool list and the exports for other agent systems all read this module, so
no other module spells a tool's name in a set or an if-chain and a switched-off tool is absent everywhere.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict

from emage_agent.core.errors import InvalidArgument, UserError
from emage_agent.core.resources import data_dir

if TYPE_CHECKING:
    from emage_agent.core.settings import Settings

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
Family = Literal["dev", "fill", "canny", "depth", "kontext", "none"]  # the FLUX.1 model a tool needs
UPLOAD = "upload"  # not a tool: the step kind of a person's own start picture, which is an image like a tool's


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


class Tool(BaseModel):
    """One tool: its contract and its traits. Argument-shaped traits are read from the contract itself."""

    model_config = ConfigDict(frozen=True)

    contract: ToolContract
    family: Family  # which FLUX.1 model it runs (none: no diffusion model)
    makes_image: bool = False  # its output becomes the session's current image
    makes_mask: bool = False  # its output is a mask for a later tool
    rewrites_prompt: bool = False  # the VLM's tool: it changes the prompt, not the image
    repairs: tuple[str, ...] = ()  # the issue categories it repairs
    preferred: bool = False  # where available, it repairs its categories before the tools that also do
    prepares: str | None = None  # the tool its output is for (make_mask -> inpaint): ranked right before it
    rank: int = 0  # ties between equally weighed repairs: prepare first, then the most local edit
    did: str = ""  # what it did, in words for people ("re-rendered the image, keeping its outlines")

    @property
    def name(self) -> str:
        return self.contract.name

    def _takes(self, arg: str) -> bool:
        return arg in self.contract.parameters.get("properties", {})

    @property
    def edits_image(self) -> bool:
        """It changes the current image (rather than making a new one from the prompt alone)."""
        return self.makes_image and self._takes("image")

    @property
    def needs_mask(self) -> bool:
        return self._takes("mask")

    @property
    def reads_image(self) -> bool:
        """It needs the current image as input (edits and mask making)."""
        return self._takes("image")

    @property
    def takes_prompt(self) -> bool:
        return self._takes("prompt")

    @property
    def takes_strength(self) -> bool:
        return self._takes("strength")

    @property
    def takes_instruction(self) -> bool:
        return self._takes("instruction")

    @property
    def denoises(self) -> bool:
        """A FLUX.1 diffusion run (seeded, its steps reported)."""
        return self.family != "none"

    def available(self, edit_enabled: bool) -> bool:
        """Whether the tool is on: the Kontext edit is off when ``EMAGE_KONTEXT_MODEL=none``."""
        return self.family != "kontext" or edit_enabled


_TRAITS: dict[str, dict[str, Any]] = {  # the one place the code's knowledge of each tool is written
    "rewrite_prompt": {
        "family": "none", "rewrites_prompt": True, "repairs": ("prompt", "semantic"), "rank": 0,
        "did": "rewrote the prompt",
    },
    "make_mask": {
        "family": "none", "makes_mask": True, "prepares": "inpaint", "rank": 1, "did": "marked a region to repaint",
    },
    "inpaint": {
        "family": "fill", "makes_image": True, "repairs": ("object",), "rank": 2,
        "did": "repainted one region of the image",
    },
    "edit": {
        "family": "kontext", "makes_image": True, "repairs": ("object", "style"), "preferred": True, "rank": 3,
        "did": "edited the image by instruction",
    },
    "depth_edit": {
        "family": "depth", "makes_image": True, "repairs": ("spatial",), "rank": 4,
        "did": "re-rendered the image, keeping its depth",
    },
    "canny_edit": {
        "family": "canny", "makes_image": True, "repairs": ("style",), "rank": 5,
        "did": "re-rendered the image, keeping its outlines",
    },
    "generate": {"family": "dev", "makes_image": True, "rank": 6, "did": "made a new image"},
}  # fmt: skip


@cache
def registry() -> dict[str, Tool]:
    """Every tool by name, in ``TOOL_NAMES`` order."""
    contracts = load_contracts()
    return {name: Tool(contract=contracts[name], **_TRAITS[name]) for name in TOOL_NAMES}


def get_tool(name: str) -> Tool:
    """The tool called ``name``, or an ``InvalidArgument`` naming the tools there are."""
    get_contract(name)
    return registry()[name]


def is_tool(name: str) -> bool:
    return name in registry()


def tool_names(edit_enabled: bool = True) -> list[str]:
    """The names of the tools that are on, in ``TOOL_NAMES`` order."""
    return [t.name for t in registry().values() if t.available(edit_enabled)]


def available_tools(settings: Settings) -> list[str]:
    """The tools these settings switch on: what every tool list (MCP, ``tools``, planners) offers."""
    return tool_names(settings.edit_enabled)


def image_step_kinds() -> frozenset[str]:
    """Step tools whose image becomes the current image: the image-making tools and a person's upload."""
    return frozenset({UPLOAD, *(t.name for t in registry().values() if t.makes_image)})


def family_tool(family: str) -> str:
    """The image-making tool that runs ``family``'s model (``canny`` -> the Canny-conditioned edit)."""
    return next(t.name for t in registry().values() if t.family == family and t.makes_image)


def first_image_tool() -> str:
    """The tool that makes an image from the prompt alone (FLUX.1-dev's ``generate``)."""
    return next(t.name for t in registry().values() if t.makes_image and not t.edits_image)


def mask_tool() -> str:
    return next(t.name for t in registry().values() if t.makes_mask)


def rewrite_tool() -> str:
    return next(t.name for t in registry().values() if t.rewrites_prompt)


def repair_tool_for(category: str, edit_enabled: bool) -> str | None:
    """The tool that repairs issues of ``category``: a preferred tool where it is on, else the plain one."""
    fits = [t for t in registry().values() if category in t.repairs and t.available(edit_enabled)]
    fits.sort(key=lambda t: (not t.preferred, t.rank))
    return fits[0].name if fits else None


def plain_repair_tool(category: str) -> str | None:
    """The repair for ``category`` that no preferred tool replaces (what the selector offers beside an edit)."""
    fits = sorted((t for t in registry().values() if category in t.repairs and not t.preferred), key=lambda t: t.rank)
    return fits[0].name if fits else None
