"""``serve`` on a two-node Ray cluster on this machine: each node has one unit of a custom resource standing in
for a GPU, one actor lands on each, and two clients at once keep both busy. The sessions stay on the driver.

The nodes are started with Ray's own ``cluster_utils.Cluster`` (a head and a second raylet, like ``ray start
--head`` plus ``ray start --address``), which stops only the processes it started.
"""

from __future__ import annotations

import base64
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI
from PIL import Image

from emage_agent.adapters.serve.runs import Service
from emage_agent.adapters.serve.state import ServeState
from emage_agent.api import Agent
from emage_agent.engine import RateLimiter
from emage_agent.engine.backend import gpu_queue
from tests.support.fake_gemini import evaluation_reply
from tests.support.serving import serving

ray = pytest.importorskip("ray")
REPO = str(Path(__file__).resolve().parents[3])
RESOURCE = "emage_test_gpu"


@pytest.fixture
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from ray.cluster_utils import Cluster

    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = REPO + (os.pathsep + path if path else "")  # the nodes' workers import this checkout
    node = {"num_cpus": 1, "resources": {RESOURCE: 1}}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        cluster.add_node(**node)
        yield cluster.address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        os.environ["PYTHONPATH"] = path


def test_serve_uses_both_nodes(
    two_nodes: str, tiny_settings: Any, gemini_settings: Any, fake_gemini: Any, tmp_path: Path
) -> None:
    fake_gemini.handler = lambda request: evaluation_reply(0.9)
    gemini = {k: v for k, v in gemini_settings.model_dump().items() if k.startswith("gemini_")}
    settings = tiny_settings.model_copy(update={**gemini, "ray_gpu_resource": RESOURCE, "session_root": tmp_path})
    answers: list[Any] = []
    with gpu_queue(settings, two_nodes) as queue:
        nodes = {ray.get(w.actor.node.remote()) for w in queue.workers}
        assert len(queue.workers) == 2 and len(nodes) == 2  # one actor per node's stand-in GPU
        agent = Agent(settings, root=tmp_path, executor=queue, limiter=RateLimiter(None))
        state = ServeState(Service(agent, queue, tmp_path, concurrency=2))
        with serving(state) as url:
            client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)

            def ask(prompt: str) -> None:
                body = {"steps": 2, "planner": "selector"}
                answers.append(client.images.generate(prompt=prompt, size="64x64", n=2, extra_body=body))

            threads = [threading.Thread(target=ask, args=(p,)) for p in ("a red fox", "a grey owl")]
            for t in threads:
                t.start()
            for t in threads:
                t.join(300)
            status = state.service.gpu
            loads = [ray.get(w.actor.counters.remote())["loads"] for w in queue.workers]
    assert len(answers) == 2 and all(len(a.data) == 2 for a in answers)
    for answer in answers:
        assert Image.open(io.BytesIO(base64.b64decode(answer.data[0].b64_json or ""))).size == (64, 64)
    assert status.calls == 4 and all(loads), loads  # four images, and both actors made some of them
    assert len([p for p in tmp_path.iterdir() if (p / "session.db").is_file()]) == 2  # the driver wrote them
