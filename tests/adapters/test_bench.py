"""The quality harness on the tiny family and the stand-in Gemini: 4 prompts, 3 modes, table and gallery."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from emage_agent.adapters.bench import Bench, detector_accuracy, load_prompts, parse_modes
from emage_agent.api import Agent
from emage_agent.core.detection import Detection, ObjectSpec
from emage_agent.core.errors import UserError
from emage_agent.executor import Executor
from tests.support.fake_gemini import Request, evaluation_reply
from tests.support.tiny_family import TinyFamily

SHIPPED = Path(__file__).resolve().parents[2] / "benchmarks" / "prompts.jsonl"


def test_shipped_set_covers_the_categories_and_geneval_reads(tmp_path: Path) -> None:
    prompts = load_prompts(SHIPPED)
    assert {p.category for p in prompts} == {"counting", "colour", "position", "attribute_binding", "text"}
    geneval = tmp_path / "geneval.jsonl"
    record = {"tag": "position", "include": [{"class": "dog", "count": 1, "position": ["left of", 1]}], "prompt": "x"}
    geneval.write_text(json.dumps(record) + "\n")
    [read] = load_prompts(geneval)
    assert read.category == "position" and read.objects == [ObjectSpec(name="dog", count=1, position="left")]
    with pytest.raises(UserError) as err:
        parse_modes("single,best_of_three")
    assert err.value.field == "--modes"


def test_bench_reads_the_prompt_files_batch_reads(tmp_path: Path) -> None:
    """One reader: plain text (one prompt a line), JSONL items with their own options, and bad lines refused."""
    text = tmp_path / "prompts.txt"
    text.write_text("# two prompts\na red fox\n\ntwo green apples\n")
    assert [(p.prompt, p.category, p.options) for p in load_prompts(text)] == [
        ("a red fox", "other", {}),
        ("two green apples", "other", {}),
    ]
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"prompt": "a cube", "category": "colour", "candidates": 2, "steps": 3}) + "\n")
    [read] = load_prompts(items)
    assert (read.category, read.options) == ("colour", {"candidates": 2, "steps": 3})
    items.write_text(json.dumps({"prompt": "a cube"}) + "\n" + json.dumps({"prompt": "x", "colour": "red"}) + "\n")
    with pytest.raises(UserError, match=":2 is not a prompt record.*colour"):
        load_prompts(items)


def test_detector_accuracy_checks_counts_and_positions() -> None:
    dogs = [
        Detection(label="dog", score=0.9, box=[0, 0, 100, 100]),
        Detection(label="dog", score=0.9, box=[0, 0, 9, 9]),
    ]
    assert detector_accuracy(dogs, [ObjectSpec(name="dog", count=2, position="left")], 0.3) == 1.0
    assert detector_accuracy(dogs, [ObjectSpec(name="dog", count=3, position="right")], 0.3) == 0.0
    assert detector_accuracy(dogs, [ObjectSpec(name="cat")], 0.3) is None


def test_bench_on_four_prompts_with_three_modes(
    tiny_family: TinyFamily, tiny_settings: Any, gemini_settings: Any, fake_gemini: Any, tmp_path: Path
) -> None:
    scores = iter([0.3, 0.5, 0.6, 0.4, 0.7, 0.2, 0.9] * 20)

    def judge(request: Request) -> Any:
        if request.purpose == "evaluate":
            issue = {"category": "style", "severity": 0.6, "description": "the colours are off", "target": "scene"}
            return evaluation_reply(next(scores), [issue])
        return None

    fake_gemini.handler = judge
    gemini = {k: v for k, v in gemini_settings.model_dump().items() if k.startswith("gemini_")}
    settings = tiny_settings.model_copy(update={**gemini, "detector": str(tiny_family.detector)})
    with Executor(settings) as executor:
        agent = Agent(settings, executor=executor)
        bench = Bench(
            agent, tmp_path / "bench", modes=["single", "best_of_n", "emage"], n=2, iterations=1, threshold=0.8,
            seed=5, session_options={"width": 64, "height": 64, "steps": 2, "planner": "selector"},
        )  # fmt: skip
        rows = bench.run(load_prompts(SHIPPED)[:4])
    assert len(rows) == 12 and [r.mode for r in rows[:3]] == ["single", "best_of_n", "emage"]
    by_mode = {m: [r for r in rows if r.mode == m] for m in ("single", "best_of_n", "emage")}
    assert all(r.images == 1 for r in by_mode["single"])
    assert all(r.images == 2 for r in by_mode["best_of_n"])
    assert all(r.vlm_calls == 2 for r in by_mode["best_of_n"])  # both candidates judged
    assert all(r.detector_accuracy is not None for r in rows)  # the tiny OWLv2 checked every final image
    out = tmp_path / "bench"
    table = (out / "results.md").read_text()
    assert "| single |" in table and "| emage |" in table and "three red apples" in table
    with (out / "results.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 12
    gallery = (out / "gallery.html").read_text()
    assert gallery.count("<img") == 12 and len(list((out / "images").iterdir())) == 12
    overall = json.loads((out / "results.json").read_text())["overall"]
    assert [o["mode"] for o in overall] == ["single", "best_of_n", "emage"]


def test_cli_bench_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAGE_")}
    run = [sys.executable, "-m", "emage_agent.adapters.cli", "bench"]
    missing = subprocess.run([*run, str(tmp_path / "none.jsonl")], env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "PROMPTS" in missing.stderr and "Traceback" not in missing.stderr
    modes = subprocess.run([*run, str(SHIPPED), "--modes", "single,worst"], env=env, capture_output=True, text=True)
    assert modes.returncode == 2 and "--modes" in modes.stderr
