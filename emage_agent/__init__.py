"""EMage: generate with FLUX.1, judge with a VLM (Gemini by default), repair with the right FLUX tool.

Heavy dependencies (torch, diffusers, google-genai, openai) load only when a class that needs
them is first used, so importing the package and ``emage-agent --help`` stay fast.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Agent", "FluxVLMPipeline", "Session", "__version__"]
__version__ = "0.1.0"

_LAZY = {"Agent": "emage_agent.api", "Session": "emage_agent.api", "FluxVLMPipeline": "emage_agent.api"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emage_agent' has no attribute {name!r}")
