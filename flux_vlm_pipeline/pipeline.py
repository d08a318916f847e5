"""``from flux_vlm_pipeline.pipeline import FluxVLMPipeline``: a re-export of :class:`emage_agent.FluxVLMPipeline`."""

from emage_agent.api import FluxVLMPipeline

__all__ = ["FluxVLMPipeline"]
