"""Which backend judges and which plans, and building one: the only place that knows every backend.

``EMAGE_VLM`` picks the judge (``auto``: Gemini when its key is set, else an OpenAI-compatible server when
its base URL or key is set, else the local model when a GPU is there); ``EMAGE_PLANNER_VLM`` picks the
planner and rewriter (unset: the judge's backend). Backends are imported lazily, so choosing one never
imports another's SDK, and the local model loads only on its first call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from emage_agent.core.errors import UserError
from emage_agent.core.settings import Settings
from emage_agent.vlm.evaluator import Evaluator
from emage_agent.vlm.planner import Planner
from emage_agent.vlm.rewriter import Rewriter
from emage_agent.vlm.transport import Transport

Backend = Literal["gemini", "openai", "local"]
Role = Literal["evaluator", "planner"]
NOTHING_SET = (
    "no VLM to judge with; set GEMINI_API_KEY (Gemini), EMAGE_OPENAI_BASE_URL (an OpenAI-compatible "
    "server such as vLLM or Ollama) or OPENAI_API_KEY, or run on a GPU for the local model (EMAGE_VLM=local)"
)


def _set(secret: Any) -> bool:
    """A key counts when it is there and not blank (an empty line in .env is not a key)."""
    value = secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret
    return bool(str(value or "").strip())


def _gpu_available(settings: Settings) -> bool:
    if settings.device == "cpu":
        return False
    from emage_agent.executor.hardware import describe_hardware

    return bool(describe_hardware()["cuda"])


def choose(settings: Settings, role: Role = "evaluator") -> Backend:
    """The backend for ``role``; raises ``UserError`` (naming what to set) when ``auto`` finds none."""
    wanted = settings.vlm if role == "evaluator" else (settings.planner_vlm or settings.vlm)
    if wanted != "auto":
        return wanted
    if _set(settings.gemini_api_key):
        return "gemini"
    if (settings.openai_base_url or "").strip() or _set(settings.openai_api_key):
        return "openai"
    if _gpu_available(settings):
        return "local"
    raise UserError(NOTHING_SET, field="EMAGE_VLM")


def local_model(settings: Settings) -> str | None:
    """The local VLM this process will load when it judges or plans (None: both are remote, or none is set).

    The memory planner counts it beside FLUX, since both share the device."""
    for role in ("evaluator", "planner"):
        try:
            if choose(settings, role) == "local":  # type: ignore[arg-type]
                return settings.local_vlm_model
        except UserError:  # auto found nothing for this role: the session will say so itself
            continue
    return None


def model_of(settings: Settings, backend: Backend) -> str:
    return {
        "gemini": settings.gemini_model,
        "openai": settings.openai_model,
        "local": settings.local_vlm_model,
    }[backend]


@dataclass
class VLM:
    """The shared roles around one backend's transport (one connection pool, one call log)."""

    name: Backend
    model: str
    client: Any
    evaluator: Any
    rewriter: Any
    new_planner: Callable[[], Any]

    def share_calls(self, calls: list[Any]) -> None:
        """Log this backend's calls into ``calls`` (one list for all backends keeps their order)."""
        self.client.calls = calls


def open_vlm(settings: Settings, backend: Backend, limiter: Any = None) -> VLM:
    """Build ``backend``'s transport and the shared roles over it; raises ``UserError`` on bad config.

    ``limiter`` (``engine.RateLimiter``) paces a remote backend's requests across sessions."""
    client = _transport(settings, backend, limiter)
    return VLM(backend, client.model, client, Evaluator(client), Rewriter(client), lambda: Planner(client))


def _transport(settings: Settings, backend: Backend, limiter: Any) -> Transport:
    if backend == "gemini":
        from emage_agent.vlm.gemini.client import GeminiClient

        return GeminiClient(settings, limiter=limiter)
    if backend == "openai":
        try:
            from emage_agent.vlm.openai_compat.client import OpenAIClient
        except ImportError:
            raise UserError("needs the openai package: pip install 'emage-agent[openai]'", field="EMAGE_VLM") from None
        return OpenAIClient(settings, limiter=limiter)
    if backend == "local":
        import importlib.util

        from emage_agent.vlm.local import LocalClient

        if importlib.util.find_spec("xgrammar") is None:
            raise UserError("the local VLM needs xgrammar: pip install 'emage-agent[local]'", field="EMAGE_VLM")
        return LocalClient(settings)
    raise UserError(f"unknown backend {backend!r}; backends are auto, gemini, openai, local", field="EMAGE_VLM")
