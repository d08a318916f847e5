"""Benchmark: ``--candidates 3`` with the GPU and the judge overlapped, against one after the other.

Runs the real Agent, loop and store with the tiny random-weight FLUX family on the CPU and a
stand-in judge that answers after ``--judge-s`` seconds (1 s by default, a fast remote VLM). The
same session is run sequentially (generate, judge, generate, judge, ...) and overlapped (the next
candidate is made while the last is judged; judgements side by side); prints both wall times and
their ratio (the goal: 0.7 or less) and writes JSON.

    python benchmarks/candidates_overlap.py --json candidates_overlap.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emage_agent.api import Agent  # noqa: E402
from emage_agent.core.evaluation import Evaluation  # noqa: E402
from emage_agent.executor import Executor  # noqa: E402
from emage_agent.loop import candidates  # noqa: E402


class StandInJudge:
    """Answers every evaluation after ``latency`` seconds, with scores that differ per call."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.calls = 0

    def evaluate(self, image_png: bytes, prompt: str, original: str | None = None, feedback: Any = None) -> Evaluation:
        self.calls += 1
        time.sleep(self.latency)
        return Evaluation(satisfaction_score=0.5 + 0.1 * (self.calls % 3), issues=[], summary="stand-in")


class NoRewrites:
    """The session runs no iteration (``iterations=0``): nothing is rewritten."""

    def rewrite(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no rewrite expected")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.support.tiny_family import build_tiny_family

    with tempfile.TemporaryDirectory() as tmp:
        family = build_tiny_family(Path(tmp) / "family")
        settings = family.settings(session_root=Path(tmp) / "sessions", kontext_model="none", detector="none")
        with Executor(settings) as executor:
            executor.run("generate", {"prompt": "warm-up", "seed": 0, "width": args.size, "height": args.size})
            walls: dict[str, float] = {}
            gens: dict[str, float] = {}
            for mode, overlap in (("sequential", False), ("overlapped", True)):
                candidates.OVERLAP = overlap
                judge = StandInJudge(args.judge_s)
                agent = Agent(
                    settings, executor=executor, evaluator=judge, rewriter=NoRewrites(), planner_factory=lambda: None
                )
                before = executor.counters.tool_seconds.get("generate", 0.0)
                started = time.perf_counter()
                agent.start(
                    "a red fox on a blue car",
                    width=args.size,
                    height=args.size,
                    steps=args.steps,
                    seed=1,
                    candidates=args.candidates,
                    iterations=0,
                    planner="selector",
                )
                walls[mode] = time.perf_counter() - started
                gens[mode] = (executor.counters.tool_seconds["generate"] - before) / args.candidates
    candidates.OVERLAP = True
    ratio = walls["overlapped"] / walls["sequential"]
    k, g, j = args.candidates, statistics.mean(gens.values()), args.judge_s
    return {
        "candidates": k,
        "judge_s": j,
        "generate_s": round(g, 3),
        "generate_s_by_mode": {m: round(v, 3) for m, v in gens.items()},
        # K generations plus one judgement against K of each, at the generation time measured here
        "expected_ratio": round((k * g + j) / (k * (g + j)), 3),
        "sequential_s": round(walls["sequential"], 3),
        "overlapped_s": round(walls["overlapped"], 3),
        "ratio": round(ratio, 3),
        "goal": 0.7,
        "pass": ratio <= 0.7,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--judge-s", type=float, default=1.0, help="the stand-in judge's latency")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    result = run(parser.parse_args())
    print(
        f"--candidates {result['candidates']}, judge {result['judge_s']} s, generate {result['generate_s']} s: "
        f"sequential {result['sequential_s']} s, overlapped {result['overlapped_s']} s, "
        f"ratio {result['ratio']} (expected {result['expected_ratio']}; "
        f"{'PASS' if result['pass'] else 'FAIL'} against <= {result['goal']})"
    )
    args = parser.parse_args()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
