"""Run options and progress events: what a caller may ask of a session, checked up front."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emage_agent.core.errors import UserError
from emage_agent.core.tools import validate_arguments

PlannerKind = Literal["gemini", "vlm", "selector"]  # gemini: the VLM planner (its older name)


class RunOptions(BaseModel):
    """How one session runs. Stored with the session so ``resume`` continues the same way."""

    model_config = ConfigDict(extra="forbid")

    iterations: int = Field(default=3, ge=0, le=100)
    threshold: float = Field(default=0.8, ge=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=4294967295)
    width: int = 1024
    height: int = 1024
    steps: int | None = None
    guidance: float | None = None
    planner: PlannerKind = "gemini"
    max_vlm_calls: int | None = Field(default=None, ge=1)
    max_gpu_seconds: float | None = Field(default=None, gt=0)
    # Opt-in: lower the threshold while the scores plateau, down to the floor (None: the selector's defaults).
    adaptive_threshold: bool = False
    adaptive_floor: float | None = Field(default=None, ge=0.0, le=1.0)
    adaptive_step: float | None = Field(default=None, gt=0.0, le=1.0)
    # The executor's speed settings the session ran with (see ``config.speed_settings``), for tracing.
    speed: dict[str, Any] | None = None
    candidates: int = Field(default=1, ge=1, le=8)  # first images and variants per repair; the best is kept
    region: str | None = None  # artifact id of the user's mask: repairs change only its white pixels
    objects: list[dict[str, Any]] | None = None  # the prompt's objects for detector verification, asked once

    def generate_args(self, prompt: str) -> dict[str, Any]:
        """Arguments of the first ``generate`` call, checked against its contract."""
        raw: dict[str, Any] = {"prompt": prompt, "width": self.width, "height": self.height}
        for key in ("seed", "steps", "guidance"):
            if getattr(self, key) is not None:
                raw[key] = getattr(self, key)
        return validate_arguments("generate", raw)


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


class AgentEvent(BaseModel):
    """A progress event for displays (CLI, MCP progress, chat). ``data`` is plain JSON."""

    kind: Literal["step", "diffusion", "decision", "veto", "score", "rollback", "stopped", "warning"]
    message: str
    data: dict[str, Any] = Field(default_factory=dict)
    preview: bytes | None = Field(default=None, exclude=True, repr=False)  # a diffusion preview (PNG), for displays
