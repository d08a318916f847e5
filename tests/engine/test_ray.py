"""A real local Ray: two CPU actors hold the executors, the driver keeps the sessions; one actor is killed."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emage_agent.api import Agent
from emage_agent.engine import Job, RateLimiter, SessionPool
from tests.adapters.test_cli import cli_env, emage
from tests.support.fake_gemini import Reply, evaluation_reply

ray = pytest.importorskip("ray")
ROOT = str(Path(__file__).resolve().parents[2])
SMALL = {"width": 64, "height": 64, "steps": 2, "planner": "selector", "iterations": 0}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A local cluster with 2 CPUs; workers import this checkout of emage_agent."""
    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = ROOT + (os.pathsep + path if path else "")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        os.environ["PYTHONPATH"] = path


@pytest.fixture
def settings(tiny_settings: Any, gemini_settings: Any) -> Any:
    gemini = {k: v for k, v in gemini_settings.model_dump().items() if k.startswith("gemini_")}
    return tiny_settings.model_copy(update=gemini)


def test_batch_on_two_actors_finishes_when_one_is_killed(
    ray_cluster: str, settings: Any, fake_gemini: Any, tmp_path: Path
) -> None:
    from emage_agent.engine.cluster import cluster_queue

    fake_gemini.handler = lambda r: Reply(200, evaluation_reply(0.9).body, delay_s=0.3)
    queue = cluster_queue(settings, "auto", actors=2)
    victim = queue.workers[0]
    try:
        pids = ray.get([w.actor.pid.remote() for w in queue.workers])
        assert len(set(pids)) == 2 and os.getpid() not in pids  # the GPU work runs in the actors
        agent = Agent(settings, root=tmp_path, executor=queue, limiter=RateLimiter(None))
        jobs = [Job(key=f"j{i}", prompt=f"a fox number {i}", options=SMALL, root=tmp_path / f"j{i}") for i in range(6)]
        outcomes: list[Any] = []
        runner = threading.Thread(target=lambda: outcomes.extend(SessionPool(agent, concurrency=4).run(jobs)))
        runner.start()
        deadline = time.monotonic() + 120
        while queue.calls < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        ray.kill(victim.actor)  # mid-batch: a node lost
        runner.join(timeout=180)
        assert [o.status for o in outcomes] == ["done"] * 6, [o.error for o in outcomes]
        assert victim not in queue.workers and len(queue.workers) == 1 and queue.retries == 1
        for o in outcomes:
            summary = json.loads((Path(o.session_dir) / "summary.json").read_text())
            assert [h["tool"] for h in summary["history"]] == ["generate"]  # one step each: none lost, none twice
            assert Path(summary["final_image"]).is_file()  # written by the driver from the actor's PNG bytes
        survivor = queue.workers[0]
        loads = ray.get(survivor.actor.counters.remote())["loads"]
        assert loads and all(n == 1 for n in loads.values())  # models loaded once, kept resident across calls
    finally:
        for w in queue.workers:
            ray.kill(w.actor)


def test_cli_batch_joins_a_running_cluster(ray_cluster: str, settings: Any, fake_gemini: Any, tmp_path: Path) -> None:
    fake_gemini.handler = lambda r: evaluation_reply(0.9)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red fox\na blue car\n")
    out = tmp_path / "batch"
    args = ["batch", str(prompts), "--out", str(out), "--ray", ray_cluster, "--ray-actors", "1", "--json"]
    small = ["--width", "64", "--height", "64", "--steps", "2", "--planner", "selector", "--iterations", "0"]
    env = cli_env(settings, PYTHONPATH=os.environ["PYTHONPATH"])
    result = emage(*args, *small, "--concurrency", "2", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["done"] * 2 and all(Path(r["best_image"]).is_file() for r in rows)
    assert ray.available_resources().get("CPU", 0) == 2  # the batch gave its actors back
