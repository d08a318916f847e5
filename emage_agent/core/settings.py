"""Settings from the environment and ``.env``: one typed object, read once per process.

Every model setting takes a hub id or a local directory in the hub's layout. Secrets are
``SecretStr`` so they never print by accident (``repr``, logs, error messages).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from emage_agent.core.errors import UserError

Device = Literal["auto", "cuda", "cpu"]
DType = Literal["auto", "bfloat16", "float16", "float32"]
Residency = Literal["auto", "resident", "swap", "offload"]
VLMChoice = Literal["auto", "gemini", "openai", "local"]
QuantizeSetting = Literal["none", "fp8", "int8", "nf4", "auto"]
CompileMode = Literal["auto", "off", "regional", "full", "max-autotune"]
StepCache = Literal["off", "first_block", "taylorseer"]
Attention = Literal["auto", "native", "flash", "fa3", "sage", "sage_fp8", "flex"]
SPEED_FIELDS = (
    "quantize",
    "compile",
    "compile_backend",
    "step_cache",
    "step_cache_threshold",
    "attention",
    "residency",
)


class Settings(BaseSettings):
    """EMage's configuration. Environment names are ``EMAGE_<FIELD>`` unless noted."""

    model_config = SettingsConfigDict(
        env_prefix="EMAGE_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
    )

    gemini_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("GEMINI_API_KEY", "GOOGLE_API_KEY", "gemini_api_key")
    )
    hf_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("HF_TOKEN", "hf_token"))
    gemini_model: str = "gemini-2.5-flash"
    gemini_fallback_model: str | None = None
    gemini_base_url: str | None = None
    gemini_api_version: str = "v1beta"
    gemini_timeout_s: float = Field(default=90.0, gt=0)
    gemini_max_attempts: int = Field(default=5, ge=1, le=20)
    gemini_max_retry_s: float = Field(default=120.0, gt=0)
    gemini_retry_initial_s: float = Field(default=1.0, ge=0)
    vlm_rpm: float | None = Field(default=None, gt=0)  # requests per minute for all sessions of a process
    ray_address: str | None = None  # ``--ray``'s default: auto, local or a cluster address
    # The Ray resource one GPU actor takes: GPU, or a custom one (``ray start --resources '{"a100": 1}'``).
    ray_gpu_resource: str = Field(default="GPU", min_length=1, max_length=64)

    # Which VLM judges (EMAGE_VLM) and which plans and rewrites (EMAGE_PLANNER_VLM; unset: the same).
    vlm: VLMChoice = "auto"
    planner_vlm: VLMChoice | None = None

    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "EMAGE_OPENAI_API_KEY", "openai_api_key")
    )
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    openai_timeout_s: float = Field(default=120.0, gt=0)
    openai_max_attempts: int = Field(default=5, ge=1, le=20)
    openai_max_retry_s: float = Field(default=120.0, gt=0)
    openai_retry_initial_s: float = Field(default=1.0, ge=0)

    local_vlm_model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    local_vlm_max_new_tokens: int = Field(default=1024, ge=16, le=8192)
    local_vlm_max_chars: int = Field(default=600, ge=4, le=2000)  # longest free-text field of a local answer

    base_model: str = "black-forest-labs/FLUX.1-dev"
    canny_model: str = "black-forest-labs/FLUX.1-Canny-dev"
    depth_model: str = "black-forest-labs/FLUX.1-Depth-dev"
    fill_model: str = "black-forest-labs/FLUX.1-Fill-dev"
    depth_estimator: str = "depth-anything/Depth-Anything-V2-Small-hf"
    segmenter: str = "CIDAS/clipseg-rd64-refined"
    # Optional models: "none" switches the capability off (the edit tool, detector verification).
    kontext_model: str = "black-forest-labs/FLUX.1-Kontext-dev"
    detector: str = "google/owlv2-base-patch16-ensemble"
    detector_threshold: float = Field(default=0.3, gt=0.0, lt=1.0)

    device: Device = "auto"
    dtype: DType = "auto"
    residency: Residency = "auto"
    # Speed (docs/speed.md); ``auto`` is fast on a CUDA GPU and exact on the CPU; every session
    # records the values it ran with and why.
    quantize: QuantizeSetting = "auto"
    compile: CompileMode = "auto"
    compile_backend: str = "inductor"
    step_cache: StepCache = "off"
    step_cache_threshold: float = Field(default=0.05, gt=0, le=1)
    attention: Attention = "auto"

    session_root: Path = Path("emage-sessions")
    mcp_token: SecretStr | None = None
    # Host names the MCP HTTP server answers to besides its bind address (EMAGE_MCP_ALLOWED_HOSTS='["a.lan"]').
    mcp_allowed_hosts: list[str] = Field(default_factory=list)
    # Host names the web UI answers to besides its bind address (EMAGE_UI_ALLOWED_HOSTS='["studio.lan"]').
    ui_allowed_hosts: list[str] = Field(default_factory=list)
    mcp_open_sessions: int = Field(default=32, ge=1, le=10_000)  # sessions the MCP server keeps open at most

    @property
    def edit_enabled(self) -> bool:
        return not switched_off(self.kontext_model)

    @property
    def detector_enabled(self) -> bool:
        return not switched_off(self.detector)


def speed_settings(settings: Settings) -> dict[str, object]:
    """The settings that decide speed and memory, as a session records them."""
    return {name: getattr(settings, name) for name in SPEED_FIELDS}


def switched_off(source: str | None) -> bool:
    """A model setting of ``none`` (or empty) turns its optional capability off."""
    return source is None or source.strip().lower() in ("", "none", "off")


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning a bad value into a ``UserError`` that names the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first.get("loc") else "settings"
        env = name if name.isupper() else f"EMAGE_{name.upper()}"
        raise UserError(first["msg"], field=env) from None
