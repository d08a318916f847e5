"""The terminal tells the truth as it goes: real ``emage-agent`` processes on ``--demo`` (tiny random-weight
models, scripted judge), chat under a pty, Ctrl-C as SIGINT.

``EMAGE_DEMO_CACHE`` points the demo at the test session's tiny family, so nothing is built twice.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

SMALL = ["--width", "64", "--height", "64", "--steps", "2", "--seed", "3"]
SLOW = ["--width", "128", "--height", "128", "--steps", "100", "--seed", "3"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
RESUME = re.compile(r"continue it with: emage-agent resume ([^\s)]+)")


@pytest.fixture
def demo_env(tiny_family: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAGE_")}
    env.update(EMAGE_DEMO_CACHE=str(tiny_family.root), OMP_NUM_THREADS="1", COLUMNS="200")
    return env


def emage(*args: str, env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emage_agent.adapters.cli", *args],
        env=env, cwd=cwd, text=True, capture_output=True, timeout=timeout,
    )  # fmt: skip


def sessions(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


class Process:
    """A CLI process whose stderr is read line by line as it comes, so a test can act at a given moment."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "emage_agent.adapters.cli", *args],
            env=env, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.err = ""

    def wait_for(self, pattern: str, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            if re.search(pattern, self.err):
                return self.err
            ready, _, _ = select.select([self.proc.stderr], [], [], 1.0)
            if ready:
                line = self.proc.stderr.readline()
                if not line and self.proc.poll() is not None:
                    break
                self.err += line
        raise AssertionError(f"never saw {pattern!r}; stderr so far:\n{self.err}")

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        out, rest = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, self.err + rest


def test_demo_runs_the_whole_flow_labelled_and_quiet(demo_env: dict[str, str], tmp_path: Path) -> None:
    result = emage(
        "--demo", "a red cube on a blue sphere", *SMALL, "--out", str(tmp_path / "s"), env=demo_env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    err_lines = [line for line in result.stderr.splitlines() if line.strip()]
    # EMage's lines come first and alone: no library warning or bar in front of them (or anywhere)
    assert err_lines[0].startswith("DEMO:") and err_lines[1].split()[0] == "session"
    for noise in ("_pytree", "torchao", "bitsandbytes", "torchvision", "Writing model shards", "Traceback"):
        assert noise not in result.stderr, noise
    # what the run did, as it went: the judge's issues, what runs next and why, the stop
    assert re.search(r"issue\s+\[object 0\.7\] the cube is hard to make out", result.stderr)
    assert re.search(r"next\s+generate", result.stderr) and re.search(r"next\s+\w+_?\w*\s+\(", result.stderr)
    assert "rollback" in result.stderr and re.search(r"stopped\s+stopped: score 0\.84", result.stderr)
    # the ending: labelled DEMO, counts, and the exact resume command naming the folder
    assert result.stdout.startswith("DEMO: ")
    session = Path(RESUME.search(result.stdout).group(1))  # type: ignore[union-attr]
    assert session.parent == (tmp_path / "s").resolve()
    summary = json.loads((session / "summary.json").read_text())
    assert summary["demo"] is True and summary["stopped_because"] == "threshold"
    assert (summary["iterations"], summary["steps"]) == (3, len(summary["history"]))
    assert f"Iterations: 3 ({summary['steps']} steps)" in result.stdout
    assert "DEMO session" in (session / "report.html").read_text()
    # the libraries' messages and every screen line are in the session's log instead
    log = (session / "emage.log").read_text()
    assert "emage_agent.progress: issue [object 0.7] the cube is hard to make out" in log


def test_ctrl_c_during_the_first_image_keeps_no_folder_and_says_so_in_json(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "s"
    run = Process(["--demo", "a red cube", *SLOW, "--out", str(out), "--json"], demo_env, tmp_path)
    # --json is quiet: wait for the folder (it exists from the first second) instead of a line
    deadline = time.monotonic() + 240
    while not sessions(out) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sessions(out), "no session folder appeared"
    run.proc.send_signal(signal.SIGINT)
    code, stdout, stderr = run.finish()
    assert code == 130
    ending = json.loads(stdout)
    assert ending["status"] == "interrupted" and ending["exit_code"] == 130 and ending["session"] is None
    assert "no step was finished, so no session was kept" in ending["error"]
    assert "interrupted (no step was finished" in stderr and "Traceback" not in stderr
    assert sessions(out) == []  # nothing half-made left behind


def test_ctrl_c_after_the_first_step_names_the_folder_and_the_resume_command(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "s"
    run = Process(["--demo", "a red cube on a blue sphere", *SLOW, "--out", str(out)], demo_env, tmp_path)
    err = run.wait_for(r"score\s+step 1: score")
    first_line = next(line for line in err.splitlines() if line.strip() and not line.startswith("DEMO"))
    assert first_line.split()[0] == "session"  # the session path came first, before any work
    run.proc.send_signal(signal.SIGINT)
    code, _, stderr = run.finish()
    assert code == 130, stderr
    [session] = sessions(out)
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("emage-agent: interrupted (the session is saved in ")
    assert f"emage-agent resume {session}" in last
    # and that command continues it
    resumed = emage("resume", str(session), "--iterations", "0", "--json", env=demo_env, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["session_dir"] == str(session)


def test_a_failure_with_json_prints_one_object(demo_env: dict[str, str], tmp_path: Path) -> None:
    result = emage("resume", str(tmp_path / "nowhere"), "--json", env=demo_env, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    ending = json.loads(result.stdout)
    assert ending["status"] == "error" and ending["session"] is None and "nowhere" in ending["error"]


# ---- chat under a pty -------------------------------------------------------------------------------
class Chat:
    """``emage-agent chat`` with stdin and stdout on a pty (as a person types), stderr on a pipe."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "emage_agent.adapters.cli", "chat", *args],
            env=env, cwd=cwd, stdin=slave, stdout=slave, stderr=subprocess.PIPE,
        )  # fmt: skip
        os.close(slave)
        self.out = ""

    def expect(self, pattern: str, timeout: float = 240, since: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.out[since:]):
                return self.out
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if ready:
                try:
                    self.out += ANSI.sub("", os.read(self.master, 65536).decode("utf-8", "replace"))
                except OSError:
                    break
        raise AssertionError(f"never saw {pattern!r} on stdout:\n{self.out}")

    def say(self, line: str, then: str = r"you> $") -> str:
        start = len(self.out)
        os.write(self.master, (line + "\n").encode())
        self.expect(r"you> \s*$" if then == r"you> $" else then, since=start + len(line))
        return self.out[start:]

    def close(self) -> tuple[int, str]:
        code = self.proc.wait(timeout=120)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode("utf-8", "replace")
        os.close(self.master)
        return code, err


def test_chat_numbers_steps_alike_and_continues_sessions_made_every_way(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "s"
    # a session made by run (the CLI's own entry, in this process: no second start-up to wait for)
    from emage_agent.adapters import cli
    from emage_agent.api import demo_agent

    assert cli.main(["--demo", "a red cube", *SMALL, "--iterations", "1", "--out", str(out), "--json"]) == 0
    [by_run] = sessions(out)
    # a session made by the tool path MCP and the UI use (Agent.run_tool)
    made = demo_agent(out).run_tool("generate", {"prompt": "a fox", "width": 64, "height": 64, "steps": 2})
    by_tool = Path(made["session_dir"])

    # a new chat: options of run are taken; the prompt is on stdout (a pty), progress on stderr
    chat = Chat(
        ["--demo", "a red cube on a blue sphere", *SMALL, "--iterations", "1", "--out", str(out)], demo_env, tmp_path
    )
    chat.expect(r"you> \s*$")
    assert re.search(r"step 1 \(generate\): score 0\.46", chat.out)
    text = chat.say("the cube should be larger")
    # the live score and the status name the step the history lists with that score
    status = re.search(r"step (\d+) \([^)]*\): score (0\.\d\d)", text)
    assert status, text
    history = chat.say("history")
    row = re.search(rf"^\s*{status.group(1)}[\s│]+\S+[\s│]+{status.group(2)}", history, re.M)
    assert row, history
    undone = chat.say("undo")
    now = re.search(r"now at step (\d+)", undone).group(1)  # type: ignore[union-attr]
    assert re.search(rf"step {now} \(", undone.split("now at step", 1)[1]), undone
    chat.say("quit", then=r"continue later with: emage-agent chat --session (\S+)")
    code, err = chat.close()
    assert code == 0, err
    assert re.search(r"session\s+\S+", err) and "Traceback" not in err
    by_chat = Path(re.search(r"continue later with: emage-agent chat --session (\S+)", chat.out).group(1))  # type: ignore[union-attr]

    for session in (by_run, by_chat, by_tool):
        again = Chat(["--session", str(session), "--demo", "--threshold", "0.9"], demo_env, tmp_path)
        again.expect(r"you> \s*$")
        before = len(json.loads((session / "summary.json").read_text())["history"])
        again.say("more")
        again.say("quit", then=r"continue later with")
        code, err = again.close()
        assert code == 0 and "ValidationError" not in err + again.out, err + again.out
        summary = json.loads((session / "summary.json").read_text())
        assert len(summary["history"]) > before, session


def test_chat_ctrl_c_while_working_saves_and_keeps_the_conversation(demo_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "s"
    args = ["--demo", "a red cube", *SLOW, "--threshold", "0.99", "--out", str(out)]
    chat = Chat(args, demo_env, tmp_path)
    chat.expect(r"you> \s*$")
    os.write(chat.master, b"more 20\n")
    time.sleep(3)
    chat.proc.send_signal(signal.SIGINT)
    start = len(chat.out)
    text = chat.expect(r"interrupted; the session is saved in .*continue: emage-agent chat --session", since=start)
    chat.expect(r"you> \s*$", since=start)
    chat.say("quit", then=r"continue later with")
    code, _ = chat.close()
    assert code == 0 and "interrupted" in text


def test_ui_demo_runs_are_marked_and_planned_by_rules(tiny_family: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """``ui --demo``: the studio's runs use the demo agent; their sessions say DEMO in summary and report."""
    from emage_agent.adapters.ui import Studio
    from emage_agent.api import demo_agent

    monkeypatch.setenv("EMAGE_DEMO_CACHE", str(tiny_family.root))
    studio = Studio(demo_agent(tmp_path), tmp_path)
    run = studio.start("a red cube on a blue sphere", {"width": 64, "height": 64, "steps": 2, "iterations": 1})
    assert run.done.wait(300)
    [session] = [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    summary = json.loads((session / "summary.json").read_text())
    assert summary["demo"] is True and summary["iterations"] == 1 and summary["stopped_because"] == "iteration_limit"
    assert "DEMO session" in (session / "report.html").read_text()


def test_doctor_checks_offline_gives_each_problem_its_fix_and_fits_80_columns(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMAGE_", "GEMINI", "GOOGLE", "HF_TOKEN"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), COLUMNS="80", EMAGE_DETECTOR="google/owlv2-x")
    human = emage("doctor", env=env, cwd=tmp_path, timeout=120)
    assert human.returncode == 2
    table = [line for line in human.stdout.splitlines() if line[:1] in "┏┃┡│└"]
    assert table and max(len(line) for line in table) <= 80
    fixes = human.stdout.split("Not ready. To fix:", 1)[1]
    assert "- EMAGE_BASE_MODEL: download it once while online (unset HF_HUB_OFFLINE)" in fixes
    assert "base_model" not in fixes  # the rows' names, not internal ones
    report = json.loads(emage("doctor", "--json", env=env, cwd=tmp_path, timeout=120).stdout)
    assert report["ready"] is False and "EMAGE_BASE_MODEL" in report["problems"]
    assert all(report["fixes"][p] for p in report["problems"])  # every problem has its fix
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["HF_TOKEN"]["status"] == "not set" and "licence" in checks["HF_TOKEN"]["fix"]
    assert "EMAGE_DETECTOR=none" in checks["EMAGE_DETECTOR"]["fix"]  # optional: says how to run without it
    assert "EMAGE_DETECTOR" not in report["problems"]


@pytest.fixture
def cli_settings(tiny_settings: Any, gemini_settings: Any) -> Any:
    gemini = {k: v for k, v in gemini_settings.model_dump().items() if k.startswith("gemini_")}
    return tiny_settings.model_copy(update=gemini)


def test_chat_continues_sessions_made_by_batch_and_by_the_ui(
    cli_settings: Any, fake_gemini: Any, tmp_path: Path
) -> None:
    """``chat --session`` on a session ``emage-agent batch`` made (a process) and on one the UI made (an
    upload, ``Agent.create`` with a picture): the history is shown, feedback is taken and stored."""
    from PIL import Image

    from emage_agent.api import Agent
    from tests.adapters.test_cli import cli_env
    from tests.loop.test_session_loop import CANNY, STYLE
    from tests.support.fake_gemini import evaluation_reply, function_call_reply

    def judge(request: Any) -> Any:
        if request.purpose == "evaluate":
            return evaluation_reply(0.5, [STYLE], summary="the car is red")
        return function_call_reply(CANNY) if request.purpose == "plan" else None

    fake_gemini.handler = judge
    env = cli_env(cli_settings, COLUMNS="200")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox on a blue car\n")
    batch = emage(
        "batch", str(prompts), "--out", str(tmp_path / "b"), *SMALL, "--iterations", "0", env=env, cwd=tmp_path
    )
    assert batch.returncode == 0, batch.stderr
    [row] = [json.loads(line) for line in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    by_batch = Path(row["session_dir"])
    picture = tmp_path / "mine.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(picture)
    by_ui = Agent(cli_settings, root=tmp_path / "ui").create("a red fox on a blue car", image=picture).dir

    for session, first_tool in ((by_batch, "generate"), (by_ui, "upload")):
        chat = Chat(["--session", str(session)], env, tmp_path)
        chat.expect(r"you> \s*$")
        assert f"session: {session}" in chat.out and re.search(rf"step 1 \({first_tool}\)", chat.out), chat.out
        history = chat.say("history")
        assert re.search(rf"^\s*1[\s│]+{first_tool}\b", history, re.M), history
        answer = chat.say("the car should be blue")
        assert re.search(r"step \d+ \(canny_edit[^)]*\): score 0\.50", answer), answer
        history = chat.say("history")
        assert "you: the car should be blue" in history and "canny_edit" in history, history
        chat.say("quit", then=r"continue later with")
        code, err = chat.close()
        assert code == 0 and "Traceback" not in err + chat.out, err + chat.out
        summary = json.loads((session / "summary.json").read_text())
        assert [h["tool"] for h in summary["history"]][:1] == [first_tool]
        assert "canny_edit" in [h["tool"] for h in summary["history"]], summary["history"]
