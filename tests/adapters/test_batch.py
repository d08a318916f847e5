"""``emage-agent batch`` as a person runs it: real processes, tiny models, the stand-in Gemini."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from emage_agent.adapters.batch.items import read_items
from tests.adapters.test_cli import cli_env, emage
from tests.support.fake_gemini import Reply, evaluation_reply, invalid_argument

STYLE = {"category": "style", "severity": 0.8, "description": "the car should be blue", "target": "car"}
SMALL = ["--width", "64", "--height", "64", "--steps", "2", "--seed", "3", "--planner", "selector"]
PROMPTS = ["a red fox", "a blue car", "a green tree", "a yellow sun", "a white cat"]


@pytest.fixture
def cli_settings(tiny_settings: Any, gemini_settings: Any) -> Any:
    gemini = {k: v for k, v in gemini_settings.model_dump().items() if k.startswith("gemini_")}
    return tiny_settings.model_copy(update=gemini)


class Judge:
    """Scores each prompt's first image 0.5 (one issue) and every later one 0.9; 'CURSED' prompts are refused."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.seen: dict[str, int] = {}
        self.in_flight = 0

    def __call__(self, request: Any) -> Any:
        if request.purpose != "evaluate":
            return None
        text = request.text()
        if "CURSED" in text:
            return invalid_argument("the request was refused")
        key = next((p for p in PROMPTS if p in text), text[:40])
        self.seen[key] = self.seen.get(key, 0) + 1
        reply = evaluation_reply(0.5, [STYLE]) if self.seen[key] == 1 else evaluation_reply(0.9)
        return Reply(200, reply.body, delay_s=self.delay_s)


def write_input(tmp_path: Path) -> Path:
    lines = [json.dumps({"id": f"p{i}", "prompt": p}) for i, p in enumerate(PROMPTS)]
    lines.insert(2, '{"id": "oops", "prompt": ')  # malformed: reported by line number, skipped
    lines.append(json.dumps({"id": "cursed", "prompt": "a CURSED mirror", "size": "64x64"}))
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def sessions_of(out: Path) -> dict[str, list[Path]]:
    return {d.name: sorted(s for s in d.iterdir() if (s / "session.db").is_file()) for d in (out / "items").iterdir()}


def test_items_from_text_and_jsonl(tmp_path: Path) -> None:
    text = tmp_path / "p.txt"
    text.write_text("a fox\n\n# a comment\na car\n")
    items, bad = read_items(text)
    assert [(i.id, i.prompt, i.line) for i in items] == [("line-1", "a fox", 1), ("line-4", "a car", 4)] and not bad
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(
        '{"id": 7, "prompt": "x", "size": "128x64", "seed": 1}\n{"prompt": ""}\n{"id": 7, "prompt": "y"}\n'
        '{"prompt": "z", "colour": "red"}\n[1]\n{"id": "a/b c", "prompt": "w"}\n'
    )
    items, bad = read_items(jsonl)
    assert items[0].options == {"seed": 1, "width": 128, "height": 64}
    assert [b.line for b in bad] == [2, 3, 4, 5]
    assert "duplicate id '7'" in bad[1].message and "colour" in bad[2].message
    assert "/" not in items[1].folder and " " not in items[1].folder and items[1].folder != items[0].folder


def test_batch_isolates_failures_and_writes_results(cli_settings: Any, fake_gemini: Any, tmp_path: Path) -> None:
    fake_gemini.handler = Judge()
    out = tmp_path / "batch"
    args = ["batch", str(write_input(tmp_path)), "--out", str(out), *SMALL, "--iterations", "1", "--concurrency", "3"]
    result = emage(*args, "--json", env=cli_env(cli_settings), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "prompts.jsonl:3: skipped" in result.stderr and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "5 done, 1 failed" in last and "results.jsonl" in last and "1 input line(s) skipped" in last

    streamed = [json.loads(line) for line in result.stdout.splitlines()]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in streamed) == sorted(r["id"] for r in rows)
    assert [r["id"] for r in rows] == ["p0", "p1", "p2", "p3", "p4", "cursed"]  # input order
    by_id = {r["id"]: r for r in rows}
    assert by_id["cursed"]["status"] == "failed" and "refused" in by_id["cursed"]["error"]
    for r in rows[:5]:
        assert r["status"] == "done" and r["error"] is None
        assert r["score"] == 0.9 and r["stopped_because"] == "threshold" and r["steps"] == 2
        assert r["vlm_calls"] == 2  # its own two evaluations, not another session's
        assert Path(r["best_image"]).is_file() and r["gpu_seconds"] > 0
        summary = json.loads((Path(r["session_dir"]) / "summary.json").read_text())
        assert summary["original_prompt"] == r["prompt"] and summary["final_image"] == r["best_image"]
        assert (Path(r["session_dir"]) / "report.html").is_file()
    with open(out / "results.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [t["id"] for t in table] == [r["id"] for r in rows]
    assert [t["status"] for t in table] == [r["status"] for r in rows]
    assert float(table[0]["score"]) == 0.9 and table[0]["best_image"] == rows[0]["best_image"]

    page = (out / "index.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 5  # self-contained thumbnails, one per done item
    assert "a CURSED mirror" in page and "refused" in page
    for r in rows[:5]:
        link = os.path.relpath(r["session_dir"], out) + "/report.html"
        assert f'href="{link}"' in page and (out / link).is_file()
    assert "http://" not in page and "https://" not in page  # readable offline


def test_killed_batch_resumes_without_losing_or_repeating_steps_and_a_second_batch_is_refused(
    cli_settings: Any, fake_gemini: Any, tmp_path: Path
) -> None:
    judge = Judge(delay_s=1.5)
    fake_gemini.handler = judge
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "batch"
    args = ["batch", str(prompts), "--out", str(out), *SMALL, "--iterations", "1", "--concurrency", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "emage_agent.adapters.cli", *args, "--json"],
        env=cli_env(cli_settings),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and sum(judge.seen.values()) < 3:
        time.sleep(0.05)
    assert sum(judge.seen.values()) >= 3, proc.stderr.read() if proc.poll() is not None else "too slow"
    refused = emage(*args, env=cli_env(cli_settings), cwd=tmp_path, timeout=60)  # same folder, same time
    assert refused.returncode == 2
    assert re.search(r"another batch \(pid \d+\) is running", refused.stderr), refused.stderr
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL  # killed mid-batch, not finished
    judge.delay_s = 0.0

    second = emage(*args, env=cli_env(cli_settings), cwd=tmp_path)  # the lock died with its process
    assert second.returncode == 0, second.stderr
    assert re.search(r"done\s+line-1\s+score 0\.90", second.stderr), second.stderr  # the human display
    assert "5 done, 0 failed of 5 item(s)" in second.stderr.strip().splitlines()[-1]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == PROMPTS and all(r["status"] == "done" for r in rows)
    for name, found in sessions_of(out).items():
        assert len(found) == 1, f"{name} has {len(found)} sessions"
        with sqlite3.connect(found[0] / "session.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            steps = db.execute("SELECT step, tool FROM step ORDER BY step").fetchall()
        tools = [t for _, t in steps]
        assert tools[0] == "generate" and tools.count("generate") == 1 and len(tools) <= 2
        images = sorted(p.name for p in (found[0] / "images").iterdir())
        assert images == [f"step-{s:03d}.png" for s, _ in steps]  # one image per committed step, no orphans


@pytest.mark.parametrize(
    ("extra", "needle"),
    [(["--concurrency", "0"], "--concurrency"), (["--width", "100"], "--width")],
)
def test_bad_usage_exits_2(extra: list[str], needle: str, tmp_path: Path) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("a fox\n")
    env = {**os.environ, "GEMINI_API_KEY": "AIzaFAKE-batch-key", "EMAGE_DEVICE": "cpu"}
    result = emage("batch", str(prompts), "--out", str(tmp_path / "o"), *extra, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_bare_ray_flag_takes_the_default_address(tmp_path: Path) -> None:
    from emage_agent.adapters.cli import _bare_ray

    prompts = tmp_path / "p.txt"
    prompts.write_text("a fox\n")
    assert _bare_ray(["batch", "--ray", str(prompts), "--out", "o"]) == ["batch", "--ray=", str(prompts), "--out", "o"]
    assert _bare_ray(["batch", str(prompts), "--ray"]) == ["batch", str(prompts), "--ray="]
    assert _bare_ray(["batch", str(prompts), "--ray", "ray://h:10001"])[-1] == "ray://h:10001"
    assert _bare_ray(["run", "--ray"]) == ["run", "--ray"]


def test_ray_without_ray_installed_says_what_to_install(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")  # as if not installed
    prompts = tmp_path / "p.txt"
    prompts.write_text("a fox\n")
    path = os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "GEMINI_API_KEY": "AIzaFAKE-batch-key", "PYTHONPATH": path}
    result = emage("batch", str(prompts), "--out", str(tmp_path / "o"), "--ray", env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "pip install 'emage-agent[ray]'" in result.stderr and "Traceback" not in result.stderr


def test_missing_input_file_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "GEMINI_API_KEY": "AIzaFAKE-batch-key"}
    result = emage("batch", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o"), env=env, cwd=tmp_path)
    assert result.returncode == 2 and "nope.txt does not exist" in result.stderr
