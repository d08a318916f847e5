"""What ``emage-agent serve`` runs: check the keys, start the engine (local or Ray), serve until stopped."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from emage_agent.adapters.netguard import is_loopback
from emage_agent.adapters.serve.app import serve
from emage_agent.adapters.serve.runs import Service
from emage_agent.adapters.serve.state import ServeState
from emage_agent.core.errors import UserError
from emage_agent.core.settings import Settings
from emage_agent.engine import RateLimiter
from emage_agent.engine.backend import gpu_queue

NOT_STARTED = object()  # stands for the executor while the agent checks its keys


class ServeOptions(BaseModel):
    out: Path
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    token: str | None = None
    concurrency: int = Field(default=2, ge=1, le=64)
    queue: int = Field(default=16, ge=0, le=10_000)
    request_timeout: float = Field(default=900.0, gt=0)
    ray: str | None = None
    ray_actors: int | None = Field(default=None, ge=1)
    allowed_hosts: list[str] = []


def run_serve(settings: Settings, opts: ServeOptions) -> None:
    """Serve until SIGTERM or Ctrl-C. Bad flags and a missing token fail before any model or actor starts."""
    from emage_agent.api import Agent

    if not opts.token and not is_loopback(opts.host):
        raise UserError(
            f"refusing to serve on {opts.host} without a token; pass --auth TOKEN (or set EMAGE_SERVE_TOKEN) "
            "and give clients that token as their API key, or bind 127.0.0.1",
            field="--auth",
        )
    Agent(settings, executor=NOT_STARTED).check_ready()  # keys and the VLM side first
    with gpu_queue(settings, opts.ray, opts.ray_actors) as queue:
        agent = Agent(settings, root=opts.out, executor=queue, limiter=RateLimiter(settings.vlm_rpm))
        service = Service(agent, queue, opts.out, concurrency=opts.concurrency, max_waiting=opts.queue)
        state = ServeState(service, token=opts.token, request_timeout=opts.request_timeout)
        serve(state, host=opts.host, port=opts.port, allowed_hosts=opts.allowed_hosts)
