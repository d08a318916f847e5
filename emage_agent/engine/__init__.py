"""Many sessions at once: the GPU queue they share, the VLM rate limit, and the pool that runs them.

What batch, MCP and the UI share, so several callers use one GPU's models without loading them
twice. Ray actors are one more kind of GPU-queue worker (``emage_agent.engine.cluster``, imported
only when a cluster is asked for, since it imports Ray).
"""

from emage_agent.engine.gpu import GpuQueue
from emage_agent.engine.pool import Job, Outcome, SessionPool
from emage_agent.engine.ratelimit import RateLimiter

__all__ = ["GpuQueue", "Job", "Outcome", "RateLimiter", "SessionPool"]
