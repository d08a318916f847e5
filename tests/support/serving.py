"""The service on scripted collaborators, in a thread (uvicorn on a random port) or as its own process.

``python -m tests.support.serving ROOT PORT DELAY`` runs the real ``serve`` (SIGTERM handling included)
on the scripted agent, for the tests that kill the server. This module holds no tests.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emage_agent.adapters.serve.app import build_app, serve
from emage_agent.adapters.serve.runs import Service
from emage_agent.adapters.serve.state import ServeState
from emage_agent.core.errors import ExecutionFailure
from emage_agent.engine import GpuQueue
from tests.support.scripted import ScriptedExecutor, scripted_agent
from tests.support.uvicorn_thread import uvicorn_on_free_port

TOKEN = "serve-t0ken-for-tests-7c1d"


class SlowExecutor(ScriptedExecutor):
    """Scripted images that take ``delay`` seconds each; counts overlap and the threads that asked.

    A prompt containing "explode" fails the way a broken GPU would (``ExecutionFailure``)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.inside = self.most_inside = 0
        self.threads: list[int] = []
        self._lock = threading.Lock()

    def run(self, tool: str, args: dict[str, Any], images: Any = None, on_step: Any = None) -> Any:
        if "explode" in str(args.get("prompt", "")):
            raise ExecutionFailure("the GPU fell over (scripted)")
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            self.threads.append(threading.get_ident())
        try:
            time.sleep(self.delay)
            return super().run(tool, args, images, on_step)
        finally:
            with self._lock:
                self.inside -= 1


def scripted_state(
    root: Path,
    *,
    scores: list[float] | None = None,
    delay: float = 0.0,
    concurrency: int = 2,
    queue: int = 8,
    token: str | None = None,
    **state: Any,
) -> tuple[ServeState, SlowExecutor, GpuQueue]:
    agent = scripted_agent(root, scores or [0.5])
    executor = SlowExecutor(delay)
    gpu = GpuQueue(executor)
    service = Service(agent, gpu, root, concurrency=concurrency, max_waiting=queue)
    return ServeState(service, token=token, **state), executor, gpu


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(state: ServeState) -> Iterator[str]:
    """The app on uvicorn at 127.0.0.1 and a free port, in a thread; yields the base URL (no trailing slash)."""

    def make_app(port: int) -> Any:  # the Host guard names the port
        return build_app(state, host="127.0.0.1", port=port)

    with uvicorn_on_free_port(make_app, timeout_graceful_shutdown=5) as port:
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            state.service.drain()


if __name__ == "__main__":
    root, port, delay = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    served, _executor, _gpu = scripted_state(root, delay=delay)
    serve(served, host="127.0.0.1", port=port)
