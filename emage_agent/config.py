"""Settings from the environment and ``.env``: one typed object, read once per process.

Every model setting takes a hub id or a local directory in the hub's layout. Secrets are
``SecretStr`` so they never print by accident (``repr``, logs, error messages).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from emage_agent.errors import UserError

Device = Literal["auto", "cuda", "cpu"]
DType = Literal["auto", "bfloat16", "float16", "float32"]
Residency = Literal["auto", "resident", "swap", "offload"]


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

    session_root: Path = Path("emage-sessions")
    mcp_token: SecretStr | None = None

    @property
    def edit_enabled(self) -> bool:
        return not switched_off(self.kontext_model)

    @property
    def detector_enabled(self) -> bool:
        return not switched_off(self.detector)


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
