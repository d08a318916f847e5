"""Run options and progress events: what a caller may ask of a session, checked up front."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from emage_agent.core.errors import UserError
from emage_agent.core.tools import first_image_tool, get_contract, validate_arguments

PlannerKind = Literal["vlm", "selector"]  # vlm: the VLM plans by function calling; selector: rules only
PLANNER_ALIASES = {"gemini": "vlm"}  # older names still accepted (stored sessions, scripts), read as the new one


_SIZE = "the size is fixed by the session's first image; every edit keeps it"
_CONTINUING: dict[str, Any] = {"continuing": True}  # a continuing session may change it (for its next steps)
_INTERNAL: dict[str, Any] = {"internal": True}  # set by EMage itself, not a way in


def _fixed(reason: str) -> dict[str, Any]:
    """Metadata of an option that belongs to the first image: a continuing session refuses it, saying why."""
    return {"fixed": reason}


class RunOptions(BaseModel):
    """How one session runs. Stored with the session so ``resume`` continues the same way.

    The one owner of every run option: its name, limits, help (``description``) and whether a continuing
    session may change it (``json_schema_extra``). The CLI flags, the MCP ``refine`` schema, the batch item
    fields, the bench options and the API's continuing-session rules are generated from these fields.
    """

    model_config = ConfigDict(extra="forbid")

    iterations: int = Field(
        default=3, ge=0, le=100, description="Repair iterations after the first image.", json_schema_extra=_CONTINUING
    )
    threshold: float = Field(
        default=0.8,
        ge=0.0,
        le=1.0,
        description="Stop when the satisfaction score reaches this.",
        json_schema_extra=_CONTINUING,
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=4294967295,
        description="Seed of the first image (empty: random).",
        json_schema_extra=_fixed("the seed belongs to the session's first image, which already exists"),
    )
    width: int = Field(default=1024, description="Width, a multiple of 16.", json_schema_extra=_fixed(_SIZE))
    height: int = Field(default=1024, description="Height, a multiple of 16.", json_schema_extra=_fixed(_SIZE))
    steps: int | None = Field(
        default=None, description="Denoising steps (default: the model card's).", json_schema_extra=_CONTINUING
    )
    guidance: float | None = Field(
        default=None, description="Guidance (default: the model card's).", json_schema_extra=_CONTINUING
    )
    planner: PlannerKind = Field(
        default="vlm",
        description="vlm (the VLM plans by function calling) or selector (rules); gemini is read as vlm.",
        json_schema_extra=_CONTINUING,
    )
    max_vlm_calls: int | None = Field(
        default=None, ge=1, description="Budget of VLM calls.", json_schema_extra=_CONTINUING
    )
    max_gpu_seconds: float | None = Field(
        default=None, gt=0, description="Budget of tool seconds.", json_schema_extra=_CONTINUING
    )
    # Opt-in: lower the threshold while the scores plateau, down to the floor (None: the selector's defaults).
    adaptive_threshold: bool = Field(
        default=False,
        description="Lower the threshold while the scores plateau (see adaptive_floor, adaptive_step).",
        json_schema_extra=_CONTINUING,
    )
    adaptive_floor: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Lowest adaptive threshold (default 0.6).",
        json_schema_extra=_CONTINUING,
    )
    adaptive_step: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Adaptive threshold step (default 0.05).",
        json_schema_extra=_CONTINUING,
    )
    # The executor's speed settings the session ran with (see ``config.speed_settings``), for tracing.
    speed: dict[str, Any] | None = Field(default=None, json_schema_extra=_INTERNAL)
    candidates: int = Field(
        default=1,
        ge=1,
        le=8,
        description="First images and variants per repair; the best is kept.",
        json_schema_extra=_CONTINUING,
    )
    # Artifact id of the user's mask: repairs change only its white pixels (set from a start picture's mask).
    region: str | None = Field(default=None, json_schema_extra=_INTERNAL)
    # The prompt's objects for detector verification, asked once.
    objects: list[dict[str, Any]] | None = Field(default=None, json_schema_extra=_INTERNAL)
    # Made by ``--demo``: tiny random-weight models and a scripted judge, not real images.
    demo: bool = Field(default=False, json_schema_extra=_INTERNAL)

    @field_validator("planner", mode="before")
    @classmethod
    def _planner_alias(cls, value: Any) -> Any:
        """``gemini`` was the VLM planner's name before other backends came; it still means ``vlm``."""
        return PLANNER_ALIASES.get(value, value) if isinstance(value, str) else value

    def generate_args(self, prompt: str) -> dict[str, Any]:
        """Arguments of the first ``generate`` call, checked against its contract."""
        raw: dict[str, Any] = {"prompt": prompt, "width": self.width, "height": self.height}
        for key in ("seed", "steps", "guidance"):
            if getattr(self, key) is not None:
                raw[key] = getattr(self, key)
        return validate_arguments(first_image_tool(), raw)


def _extra(name: str) -> dict[str, Any]:
    extra = RunOptions.model_fields[name].json_schema_extra
    return extra if isinstance(extra, dict) else {}


# The options a person sets, through every way in (CLI, chat, MCP, batch, bench, UI, API), in field order.
PERSON_OPTIONS: tuple[str, ...] = tuple(n for n in RunOptions.model_fields if not _extra(n).get("internal"))
# What a continuing session may change (they apply to the next steps) and what it may not, with why.
CONTINUING_OPTIONS: tuple[str, ...] = tuple(n for n in PERSON_OPTIONS if _extra(n).get("continuing"))
FIXED_OPTIONS: dict[str, str] = {n: str(_extra(n)["fixed"]) for n in PERSON_OPTIONS if "fixed" in _extra(n)}


def option_help(name: str) -> str:
    return RunOptions.model_fields[name].description or name


def option_default(name: str) -> Any:
    return RunOptions.model_fields[name].default


OPTION_ALIASES: dict[str, dict[str, str]] = {"planner": PLANNER_ALIASES}  # older values each option still takes


def with_aliases(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every older option value read as its new one (``planner: gemini`` -> ``vlm``)."""
    out = dict(values)
    for name, aliases in OPTION_ALIASES.items():
        if isinstance(out.get(name), str):
            out[name] = aliases.get(out[name], out[name])
    return out


def option_schema(name: str) -> dict[str, Any]:
    """One option as a plain JSON Schema (type, limits, help) for schema-driven ways in such as MCP.

    An option that is also a ``generate`` argument takes that contract's limits (a multiple of 16, ...).
    """
    schema = dict(RunOptions.model_json_schema()["properties"][name])
    for key in ("title", "continuing", "fixed", "internal"):
        schema.pop(key, None)
    if "anyOf" in schema:  # ``int | None``: a way in leaves it out for None
        schema = {**next(s for s in schema.pop("anyOf") if s.get("type") != "null"), **schema}
    if schema.get("default", 0) is None:
        schema.pop("default")
    if "enum" in schema and name in OPTION_ALIASES:  # a schema-checking way in must let the older names through
        schema["enum"] = [*schema["enum"], *OPTION_ALIASES[name]]
    contract = get_contract(first_image_tool()).parameters["properties"].get(name)
    if contract is not None:
        limits = {k: v for k, v in contract.items() if k not in ("description", "default")}
        schema = {**schema, **limits}
    return schema


def parse_options(**values: Any) -> RunOptions:
    """``RunOptions`` from loose values, or a ``UserError`` naming the field and what it allows."""
    values = {k: v for k, v in values.items() if v is not None}
    try:
        options = RunOptions(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "options"
        raise UserError(first["msg"], field=field) from None
    options.generate_args("size check")  # width, height, steps, guidance within the contract
    return options
