"""Benchmark: what one repair sequence costs in disk reads, bus traffic, loads and seconds.

Runs generate -> canny_edit -> depth_edit -> make_mask -> inpaint twice with the same prompt and
prints the executor's counters after each round. The second round must read nothing from disk
and hit the embedding cache. With ``--tiny`` it builds the random-weight test family first (no
GPU, no downloads); otherwise it uses the models configured in the environment / ``.env``.

    python benchmarks/residency.py --tiny
    EMAGE_RESIDENCY=swap python benchmarks/residency.py --size 1024 --steps 28
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emage_agent.core.settings import Settings, load_settings  # noqa: E402
from emage_agent.executor import Executor  # noqa: E402


def tiny_settings(folder: Path) -> Settings:
    from tests.support.tiny_family import build_tiny_family

    return build_tiny_family(folder).settings()


def one_round(executor: Executor, size: int, steps: int, prompt: str) -> None:
    common = {"prompt": prompt, "steps": steps, "seed": 1}
    image = executor.run("generate", {**common, "width": size, "height": size}).image
    image = executor.run("canny_edit", common, {"image": image}).image
    image = executor.run("depth_edit", common, {"image": image}).image
    mask = executor.run("make_mask", {"box": [250, 250, 750, 750]}, {"image": image}).mask
    executor.run("inpaint", common, {"image": image, "mask": mask})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="build and use the tiny random-weight family")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (multiple of 16)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps per tool")
    args = parser.parse_args()
    size = args.size or (64 if args.tiny else 1024)
    steps = args.steps or (2 if args.tiny else 28)
    with tempfile.TemporaryDirectory() as tmp:
        settings = tiny_settings(Path(tmp)) if args.tiny else load_settings()
        with Executor(settings) as executor:
            for round_no in (1, 2):
                one_round(executor, size, steps, "a red fox sitting on the roof of a blue car")
                counters = executor.counters.model_dump(mode="json")
                print(f"after round {round_no}:")
                print(json.dumps(counters, indent=2))


if __name__ == "__main__":
    main()
