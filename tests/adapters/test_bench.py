"""The quality harness on the tiny family and the stand-in Gemini: 4 prompts, 3 modes, table and gallery."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest

from emage_agent.adapters.bench import Bench, bootstrap_ci, detector_accuracy, load_prompts, parse_modes
from emage_agent.api import Agent
from emage_agent.core.detection import Detection, ObjectSpec
from emage_agent.core.errors import UserError
from emage_agent.executor import Executor
from tests.support.fake_gemini import Request, evaluation_reply
from tests.support.tiny_family import TinyFamily


@pytest.fixture
def cli_settings(tiny_settings: Any, gemini_settings: Any) -> Any:
    gemini = {k: v for k, v in gemini_settings.model_dump().items() if k.startswith("gemini_")}
    return tiny_settings.model_copy(update=gemini)


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
    results = json.loads((out / "results.json").read_text())
    overall = results["overall"]
    assert [o["mode"] for o in overall] == ["single", "best_of_n", "emage"]
    # model loading is a warm-up counted in no mode; each mode's mean has a bootstrap interval around it
    assert results["model_loading_gpu_seconds"] > 0 and bench.loading_seconds == results["model_loading_gpu_seconds"]
    for o in overall:
        low, high = o["mean_score_ci95"]
        assert low <= o["mean_score"] <= high
    assert "95% CI" in table and "model loading" in table
    # the gallery: a summary table, and each image links to its session's report
    assert "95% CI (bootstrap)" in gallery
    links = re.findall(r'href="([^"]+report\.html)"', gallery)
    assert len(links) == 12 and all((out / link).is_file() for link in links)


def test_bootstrap_interval_is_seeded_and_brackets_the_mean() -> None:
    values = [0.2, 0.4, 0.6, 0.8, 0.5, 0.7]
    low, high = bootstrap_ci(values)  # type: ignore[misc]
    assert low < sum(values) / len(values) < high and bootstrap_ci(values) == (low, high)
    assert bootstrap_ci([0.5]) is None
    narrow = bootstrap_ci([0.5] * 6)
    assert narrow == (0.5, 0.5)


def test_a_detector_that_cannot_load_is_reported_once_and_the_bench_goes_on(
    tiny_family: TinyFamily, tmp_path: Path, monkeypatch: Any
) -> None:
    from emage_agent.api import demo_agent

    monkeypatch.setenv("EMAGE_DEMO_CACHE", str(tiny_family.root))
    agent = demo_agent(tmp_path / "s")
    agent.settings = agent.settings.model_copy(update={"detector": str(tmp_path / "no-such-detector")})
    said: list[str] = []
    bench = Bench(
        agent, tmp_path / "bench", modes=["single", "emage"], iterations=1, seed=1,
        session_options={"width": 64, "height": 64, "steps": 2},
    )  # fmt: skip
    bench.say = said.append
    rows = bench.run(load_prompts(SHIPPED)[:2])
    assert len(rows) == 4 and all(r.image for r in rows) and all(r.detector_accuracy is None for r in rows)
    off = [line for line in said if line.startswith("detector off")]
    assert len(off) == 1 and "EMAGE_DETECTOR=none" in off[0]
    assert [line.split("]")[0] for line in said if line.startswith("[")] == ["[1/4", "[2/4", "[3/4", "[4/4"]


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


def test_cli_bench_shows_progress_from_the_start_and_keeps_loading_apart(
    cli_settings: Any, fake_gemini: Any, tmp_path: Path
) -> None:
    """``emage-agent bench`` as a person runs it: a line before any work, loading apart from each mode's GPU s."""
    import subprocess
    import sys
    import time

    from tests.adapters.test_cli import cli_env

    fake_gemini.handler = lambda request: evaluation_reply(0.5) if request.purpose == "evaluate" else None
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\n")
    out = tmp_path / "bench"
    args = ["bench", str(prompts), "--out", str(out), "--modes", "single,emage", "--iterations", "1"]
    args += ["--width", "64", "--height", "64", "--steps", "2", "--planner", "selector"]
    env = cli_env(cli_settings, EMAGE_DETECTOR="none", COLUMNS="200")
    proc = subprocess.Popen(
        [sys.executable, "-m", "emage_agent.adapters.cli", *args],
        env=env, cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    first = ""
    while not first.strip() and proc.poll() is None:
        first = proc.stderr.readline()
    # the first thing on screen says what happens (loading), while nothing is written yet
    assert re.search(r"bench\s+loading the models", first), first
    assert not (out / "results.json").exists()
    started = time.monotonic()
    stdout, rest = proc.communicate(timeout=180)
    err = first + rest
    assert proc.returncode == 0, err
    assert time.monotonic() - started < 120
    assert re.search(r"models loaded: the warm-up took [\d.]+ GPU s", err)
    assert re.search(r"\[1/2\] single: a red cube", err) and re.search(r"\[2/2\] emage: a red cube", err)
    results = json.loads((out / "results.json").read_text())
    loading = results["model_loading_gpu_seconds"]
    by_mode = {o["mode"]: o for o in results["overall"]}
    assert loading > 0 and f"model loading (warm-up, counted in no mode): {loading} GPU s" in stdout
    assert re.search(rf"single\s+mean score 0\.5.*GPU {by_mode['single']['gpu_seconds']} s", stdout), stdout
    # the single image's GPU seconds are its own, not the models' loading (the first image of a process)
    assert by_mode["single"]["gpu_seconds"] < loading
    gallery = (out / "gallery.html").read_text()
    links = re.findall(r'href="([^"]+report\.html)"', gallery)
    assert len(links) == 2 and all((out / link).is_file() for link in links)
    assert {str((out / link).parent.resolve()) for link in links} == {r["session_dir"] for r in results["rows"]}
