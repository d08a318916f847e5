"""Ray as a backend of the GPU queue: one actor per GPU, each holding a resident executor.

The driver keeps everything else: the sessions' loops, their stores, the VLM calls. Only a
tool call crosses the wire: its arguments and input images go to an actor as PNG bytes, and
the result comes back the same way, so the driver writes every PNG and every row itself.
An actor that dies (node lost, OOM, ``ray.kill``) raises ``WorkerLost`` in the driver; the
``GpuQueue`` drops it and runs the same call on another actor. Nothing of that step had been
committed, so the session simply continues from its last committed step.

This module imports Ray at the top: import it only when a cluster is asked for.
"""

from __future__ import annotations

import io
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import ray
from PIL import Image
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from emage_agent.core import errors
from emage_agent.core.errors import ExecutionFailure, UserError
from emage_agent.core.ports import png_bytes
from emage_agent.core.settings import Settings
from emage_agent.engine.gpu import GpuQueue, WorkerLost

ROLES = ("image", "mask", "control")
NOT_SHIPPED = {"gemini_api_key", "mcp_token"}  # actors never talk to the VLM: its keys stay on the driver
ERROR_KINDS = {name: getattr(errors, name) for name in ("ModelMistake", "UserError", "InvalidArgument")}


def _image(data: bytes | None) -> Image.Image | None:
    if data is None:
        return None
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.copy()


@ray.remote
class GpuActor:
    """One GPU's executor, loaded once and kept resident for every call sent to this actor."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from emage_agent.executor import Executor

        self.settings = Settings(_env_file=None, **settings)
        self.executor = Executor(self.settings, long_lived=True)

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        """The Ray node this actor runs on (its GPU's machine)."""
        return str(ray.get_runtime_context().get_node_id())

    def run(self, tool: str, args: dict[str, Any], pngs: dict[str, bytes]) -> dict[str, Any]:
        """Run one tool; images in and out as PNG bytes, EMage's own errors as plain data."""
        images = {role: _image(data) for role, data in pngs.items()}
        try:
            out = self.executor.run(tool, args, images or None)
        except errors.EmageError as exc:
            kind = type(exc).__name__
            return {"error": kind if kind in ERROR_KINDS else "ExecutionFailure", "message": str(exc)}
        result = {role: (png_bytes(img) if (img := getattr(out, role)) is not None else None) for role in ROLES}
        return result | {
            "tool": out.tool,
            "seed": out.seed,
            "seconds": out.seconds,
            "coverage": out.coverage,
            "note": out.note,
        }

    def counters(self) -> dict[str, Any]:
        return self.executor.counters.model_dump(mode="json")


class ActorWorker:
    """The driver's handle on one actor; to the ``GpuQueue`` it looks like an executor."""

    def __init__(self, actor: Any, name: str) -> None:
        self.actor = actor
        self.name = name

    def __repr__(self) -> str:
        return f"ActorWorker({self.name})"

    def run(
        self,
        tool: str,
        args: dict[str, Any],
        images: dict[str, Image.Image] | None = None,
        on_step: Callable[[int, int], None] | None = None,
    ) -> Any:
        from emage_agent.executor import ToolOutput

        pngs = {role: png_bytes(img) for role, img in (images or {}).items()}
        try:
            reply = ray.get(self.actor.run.remote(tool, args, pngs))
        except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
            raise WorkerLost(f"{self.name} lost: {type(exc).__name__}") from None
        if "error" in reply:
            raise ERROR_KINDS.get(reply["error"], ExecutionFailure)(reply["message"])
        images_out = {role: _image(reply[role]) for role in ROLES}
        return ToolOutput(
            tool=reply["tool"],
            seed=reply["seed"],
            seconds=reply["seconds"],
            coverage=reply["coverage"],
            note=reply["note"],
            **images_out,
        )


def probe(address: str, timeout: float = 5.0) -> None:
    """Refuse in one line an address nothing listens on, before Ray retries it for minutes.

    Why: given a dead ``HOST:PORT``, ``ray.init`` logs a warning every few seconds for five minutes,
    naming the node address it resolved rather than the one typed, and only then fails. ``auto`` is
    probed when ``RAY_ADDRESS`` names the cluster; otherwise Ray finds (or misses) it at once itself.
    """
    target = os.environ.get("RAY_ADDRESS", "") if address == "auto" else address
    if not target or target in ("local", "auto"):
        return
    host, _, port = target.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"{address!r} is not a Ray address; give auto, local or HOST:PORT", field="--ray")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise UserError(
            f"cannot reach a Ray cluster at {target!r}: {why.lower()}; is `ray start --head` running there?",
            field="--ray",
        ) from None


def connect(address: str) -> None:
    """Join or start Ray: ``auto`` (a running cluster), ``local`` (start one here) or an address."""
    if ray.is_initialized():
        return
    probe(address)
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    try:
        if address == "local":
            ray.init(include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot reach a Ray cluster at {address!r}: {first}", field="--ray") from None


def start_actors(settings: Settings, count: int | None = None) -> list[ActorWorker]:
    """One actor per GPU of the cluster, wherever its nodes are (``count`` overrides; CPU actors when there
    is no GPU). With ``EMAGE_RAY_GPU_RESOURCE`` set, one actor per unit of that custom resource instead."""
    name = settings.ray_gpu_resource
    available = int(ray.cluster_resources().get(name, 0))
    if name != "GPU" and available < 1:
        raise UserError(
            f"the Ray cluster has no {name!r} resource; start its nodes with --resources '{{\"{name}\": 1}}'",
            field="EMAGE_RAY_GPU_RESOURCE",
        )
    use_gpu = int(ray.cluster_resources().get("GPU", 0)) > 0 and settings.device != "cpu"
    count = count or (available if use_gpu or name != "GPU" else 1)
    if count < 1:
        raise UserError("must be at least 1", field="--ray-actors")
    resources: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": 1}
    if name != "GPU":
        resources["resources"] = {name: 1}
    shipped = settings.model_dump(exclude=NOT_SHIPPED)
    workers = []
    for i in range(count):
        actor = GpuActor.options(max_restarts=0, max_task_retries=0, **resources).remote(shipped)
        workers.append(ActorWorker(actor, f"gpu-actor-{i}"))
    try:
        ray.get([w.actor.pid.remote() for w in workers], timeout=600)  # fail here, not mid-batch
    except Exception as exc:
        raise ExecutionFailure(f"the GPU actors did not start: {type(exc).__name__}: {exc}") from None
    return workers


def cluster_queue(settings: Settings, address: str, actors: int | None = None) -> GpuQueue:
    """A ``GpuQueue`` whose workers are this cluster's GPU actors."""
    connect(address)
    return GpuQueue(workers=start_actors(settings, actors))
