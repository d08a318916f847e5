"""The service's ASGI app and its server: FastAPI routes behind the Host/Origin guard, the token and a body limit.

``serve`` runs it with uvicorn. SIGTERM (or Ctrl-C) first drains the service (no new runs; every run
stops at its next step boundary, its session resumable), then uvicorn stops taking connections and
lets the open requests answer, then the lifespan waits for the running steps to commit.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Sequence
from types import FrameType
from typing import Any

from fastapi import FastAPI

from emage_agent.adapters.netguard import HostGuard, host_rule, is_loopback
from emage_agent.adapters.serve import errors, openai_images, sessions_api
from emage_agent.adapters.serve.guard import BearerAuth, BodyLimit
from emage_agent.adapters.serve.state import ServeState
from emage_agent.core.errors import UserError

SHUTDOWN_WAIT_S = 300.0  # the longest a stopping server waits for running steps to commit


def _gpu_status(state: ServeState) -> dict[str, Any]:
    gpu = state.service.gpu
    return {
        "jobs": gpu.waiting(),
        "workers": [getattr(w, "name", type(w).__name__) for w in gpu.workers],
        "lost": list(gpu.lost),
        "calls": gpu.calls,
        "retries": gpu.retries,
        "busy_fraction": round(gpu.busy_fraction(), 3),
    }


def build_app(
    state: ServeState, *, host: str = "127.0.0.1", port: int | None = None, allowed_hosts: Sequence[str] = ()
) -> Any:
    """The whole ASGI app. A bind off loopback without a token is refused here, before anything listens."""
    if not state.token and not is_loopback(host):
        raise UserError(
            f"refusing to serve on {host} without a token; pass --auth TOKEN (or set EMAGE_SERVE_TOKEN) "
            "and give clients that token as their API key, or bind 127.0.0.1",
            field="--auth",
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        import anyio

        await anyio.to_thread.run_sync(state.service.close, SHUTDOWN_WAIT_S)

    app = FastAPI(
        title="EMage",
        summary="FLUX.1 images checked by a judge against their prompt: an OpenAI-compatible images API and sessions.",
        version="1",
        lifespan=lifespan,
    )
    errors.install(app)

    @app.get("/health", tags=["Service"], summary="Up, and whether it takes new runs")
    async def health() -> dict[str, Any]:
        return {"status": "stopping" if state.service.draining else "ok", **state.service.counts()}

    @app.get("/v1/queue", tags=["Service"], summary="Runs waiting and running, and the GPU queue")
    async def queue() -> dict[str, Any]:
        return {**state.service.counts(), "retry_after": state.service.retry_after(), "gpu": _gpu_status(state)}

    app.include_router(openai_images.router(state))
    app.include_router(sessions_api.router(state))
    inner: Any = BodyLimit(app, state.max_body)
    if state.token:
        inner = BearerAuth(inner, state.token)
    return HostGuard(inner, host_rule(host, port, allowed_hosts))


def serve(state: ServeState, *, host: str, port: int, allowed_hosts: Sequence[str] = ()) -> None:
    """Serve until SIGTERM or Ctrl-C; then drain, answer the open requests, let the running steps commit."""
    import uvicorn

    app = build_app(state, host=host, port=port, allowed_hosts=allowed_hosts)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            state.service.drain()  # before uvicorn waits on the open requests: their runs stop at a step boundary
            super().handle_exit(sig, frame)

    shown = f"[{host}]" if ":" in host else host
    print(
        f"EMage on http://{shown}:{port}/v1 (docs at /docs; sessions in {state.service.root})"
        + (" - token required" if state.token else ""),
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=int(SHUTDOWN_WAIT_S)
    )
    Server(config).run()
