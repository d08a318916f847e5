"""Benchmark: images per minute and GPU-busy fraction of a batch, by concurrency and backend.

Runs K prompts as sessions on the tiny random-weight FLUX family with a stand-in Gemini that
answers every evaluation after a fixed latency (the real ``google-genai`` client talks to it on
127.0.0.1). Each item makes its first image, is judged 0.5 with one issue, is repaired once by
the selector's choice and judged 0.9: two GPU calls and two VLM calls per item. The same batch
runs at each concurrency in one process (one executor behind the GPU queue) and, with ``--ray``,
on a local Ray cluster with two CPU actors. Models are loaded before timing starts.

    python benchmarks/throughput.py --items 8 --latency 1.0 --ray
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emage_agent.api import Agent  # noqa: E402
from emage_agent.engine import GpuQueue, Job, RateLimiter, SessionPool  # noqa: E402
from tests.support.fake_gemini import FAKE_KEY, FakeGemini, Reply, evaluation_reply  # noqa: E402
from tests.support.tiny_family import build_tiny_family  # noqa: E402

ISSUE = {"category": "style", "severity": 0.8, "description": "the car should be blue", "target": "car"}
OPTIONS = {"width": 64, "height": 64, "steps": 2, "seed": 1, "planner": "selector", "iterations": 1}


class Judge:
    """First look at a prompt: 0.5 and one issue; any later look: 0.9. Every answer after ``latency`` s."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, request: Any) -> Reply | None:
        if request.purpose != "evaluate":
            return None
        text = request.text()
        key = next((line for line in text.splitlines() if "benchmark prompt" in line), text[:80])
        with self._lock:
            self.seen[key] = self.seen.get(key, 0) + 1
            first = self.seen[key] == 1
        reply = evaluation_reply(0.5, [ISSUE]) if first else evaluation_reply(0.9)
        return Reply(200, reply.body, delay_s=self.latency)


def run_level(settings: Any, workers: list[Any], items: int, concurrency: int, folder: Path) -> dict[str, Any]:
    """One batch; prompts are unique per backend and level, so the judge sees each item fresh."""
    queue = GpuQueue(workers=workers)
    agent = Agent(settings, root=folder, executor=queue, limiter=RateLimiter(None))
    prompt = "benchmark prompt {}-{}-{}: a red fox on a car"
    jobs = [
        Job(
            key=f"i{i}",
            prompt=prompt.format(folder.name, concurrency, i),
            options=OPTIONS,
            root=folder / f"c{concurrency}" / f"i{i}",
        )
        for i in range(items)
    ]
    started = time.monotonic()
    outcomes = SessionPool(agent, concurrency=concurrency).run(jobs)
    wall = time.monotonic() - started
    failed = [o.error for o in outcomes if o.status != "done"]
    if failed:
        raise SystemExit(f"benchmark items failed: {failed[:3]}")
    images = sum(1 for o in outcomes for h in (o.summary or {}).get("history", []) if h["image"] is not None)
    return {
        "concurrency": concurrency,
        "items": items,
        "images": images,
        "wall_s": round(wall, 2),
        "images_per_min": round(images / wall * 60, 1),
        "gpu_busy": round(queue.busy_seconds / (wall * len(workers)), 3),
        "gpu_calls": queue.calls,
        "max_overlap": queue.max_overlap,
    }


def warm(workers: list[Any]) -> None:
    """Load every model the batch uses on every worker before the clock starts."""
    from PIL import Image

    image = Image.new("RGB", (64, 64), (120, 40, 40))
    for w in workers:
        w.run("generate", {"prompt": "warm up", "width": 64, "height": 64, "steps": 2, "seed": 0})
        for tool in ("canny_edit", "depth_edit"):
            w.run(tool, {"prompt": "warm up", "steps": 2, "seed": 0}, {"image": image})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=8, help="prompts in the batch (K)")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds the stand-in VLM takes per answer")
    parser.add_argument("--levels", default="1,2,4,8", help="concurrencies to run")
    parser.add_argument("--ray", action="store_true", help="also run on a local Ray cluster with two CPU actors")
    parser.add_argument("--json", type=Path, default=Path("throughput.json"), help="where to write the figures")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    results: dict[str, Any] = {"items": args.items, "vlm_latency_s": args.latency, "runs": []}
    with tempfile.TemporaryDirectory() as tmp, FakeGemini() as fake:
        folder = Path(tmp)
        fake.handler = Judge(args.latency)
        settings = build_tiny_family(folder / "family").settings(
            gemini_api_key=FAKE_KEY, gemini_base_url=fake.url, gemini_timeout_s=30.0
        )
        from emage_agent.executor import Executor

        with Executor(settings) as executor:
            warm([executor])
            for level in levels:
                row = {"backend": "in-process"} | run_level(settings, [executor], args.items, level, folder / "local")
                results["runs"].append(row)
                print(json.dumps(row), flush=True)
        if args.ray:
            import ray

            from emage_agent.engine.cluster import start_actors

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            try:
                workers = start_actors(settings, 2)
                warm(workers)
                for level in levels:
                    row = {"backend": "ray-2-cpu-actors"} | run_level(
                        settings, workers, args.items, level, folder / "ray"
                    )
                    results["runs"].append(row)
                    print(json.dumps(row), flush=True)
            finally:
                ray.shutdown()
    base = {r["backend"]: r["wall_s"] for r in results["runs"] if r["concurrency"] == levels[0]}
    for r in results["runs"]:
        r["speedup_vs_first_level"] = round(base[r["backend"]] / r["wall_s"], 2)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'backend':<18} {'conc':>4} {'wall s':>7} {'img/min':>8} {'gpu busy':>8} {'speedup':>7}")
    for r in results["runs"]:
        print(
            f"{r['backend']:<18} {r['concurrency']:>4} {r['wall_s']:>7} {r['images_per_min']:>8} "
            f"{r['gpu_busy']:>8.0%} {r['speedup_vs_first_level']:>6}x"
        )
    print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
