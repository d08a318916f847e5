"""Many sessions at once: the GPU queue they share (and, later, the VLM rate limit and Ray actors).

What batch, MCP and the UI share, so several callers use one GPU's models without loading them twice.
"""

from emage_agent.engine.gpu import GpuQueue, Lane

__all__ = ["GpuQueue", "Lane"]
