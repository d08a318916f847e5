"""Which GPU queue a caller gets: this machine's executor, or the GPU actors of a Ray cluster.

Both are a ``GpuQueue``; callers (batch, MCP, UI) see no difference but speed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from emage_agent.core.errors import UserError
from emage_agent.core.settings import Settings
from emage_agent.engine.gpu import GpuQueue

RAY_MISSING = "Ray is not installed; install it with: pip install 'emage-agent[ray]'"


@contextlib.contextmanager
def gpu_queue(settings: Settings, ray_address: str | None = None, actors: int | None = None) -> Iterator[GpuQueue]:
    """A ready queue, closed afterwards: the local executor, or one actor per GPU of a cluster."""
    if ray_address is None:
        from emage_agent.executor import Executor, resolve_device
        from emage_agent.vlm import local_model

        resolve_device(settings)  # no GPU and no explicit CPU choice: say so now, not per item
        executor = Executor(settings, local_vlm=local_model(settings), long_lived=True)
        try:
            yield GpuQueue(executor)
        finally:
            executor.close()
        return
    try:
        import ray
    except ImportError:
        raise UserError(RAY_MISSING, field="--ray") from None

    from emage_agent.engine.cluster import cluster_queue

    started_here = not ray.is_initialized()
    queue = cluster_queue(settings, ray_address, actors)
    try:
        yield queue
    finally:
        _release(queue, ray, started_here)


def _release(queue: GpuQueue, ray: Any, started_here: bool) -> None:
    """Free the actors (their GPUs go back to the cluster); stop Ray only if this call started it."""
    for worker in queue.workers:
        with contextlib.suppress(Exception):
            ray.kill(worker.actor)  # type: ignore[attr-defined]
    if started_here:
        ray.shutdown()
