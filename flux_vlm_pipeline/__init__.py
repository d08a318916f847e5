"""The original import path of EMage's one-call interface, kept so the documented usage works verbatim."""

from typing import Any

__all__ = ["FluxVLMPipeline"]


def __getattr__(name: str) -> Any:
    if name == "FluxVLMPipeline":
        from flux_vlm_pipeline.pipeline import FluxVLMPipeline

        return FluxVLMPipeline
    raise AttributeError(f"module 'flux_vlm_pipeline' has no attribute {name!r}")
