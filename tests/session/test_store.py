"""The session store against real SQLite, real files and a real ``kill -9``."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from emage_agent import session as session_mod
from emage_agent.core.errors import UserError
from emage_agent.core.evaluation import Evaluation, Issue
from emage_agent.session import SessionStore, StepRecord
from emage_agent.session.files import new_session_id
from emage_agent.session.report import write_report
from emage_agent.session.schema import MIGRATIONS

REPO = Path(__file__).resolve().parents[2]
FAKE_KEY = "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW"  # shape of a Google API key, not a real one
SUMMARY_KEYS = {
    "session_id",
    "session_dir",
    "final_image",
    "final_prompt",
    "original_prompt",
    "satisfaction_score",
    "best_step",
    "iterations",
    "stopped_because",
    "threshold_used",
    "speed",
    "history",
    "vlm",
}
HISTORY_KEYS = {"step", "tool", "args", "satisfaction_score", "image", "vetoes", "rolled_back"}


def img(color: int = 0, size: tuple[int, int] = (32, 24)) -> Image.Image:
    return Image.new("RGB", size, (color, 255 - color, 40))


def ev(score: float) -> Evaluation:
    return Evaluation(satisfaction_score=score, summary=f"scored {score}")


def check_consistent(session_dir: Path) -> None:
    """The database passes SQLite's own checks and every artifact it names is a readable PNG."""
    conn = sqlite3.connect(session_dir / "session.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        steps = [r[0] for r in conn.execute("SELECT step FROM step ORDER BY step")]
        assert steps == list(range(1, len(steps) + 1))
        for rel, w, h in conn.execute("SELECT path, width, height FROM artifact"):
            with Image.open(session_dir / rel) as im:
                im.load()
                assert im.size == (w, h)
    finally:
        conn.close()


@pytest.fixture
def store(tmp_path: Path):
    s = SessionStore.create(tmp_path, "a red cube on a blue sphere", {"iterations": 3, "threshold": 0.85, "seed": 7})
    yield s
    s.close()


def test_create_open_round_trip(tmp_path: Path, store: SessionStore) -> None:
    assert store.dir.parent == tmp_path.resolve() and store.dir.name == store.id
    assert (store.dir / "session.db").is_file() and (store.dir / "summary.json").is_file()
    picture = img(10, (48, 32))
    n = store.commit_step(StepRecord(tool="generate", args={"seed": 7}, evaluation=ev(0.6)), {"image": picture})
    assert n == 1
    before = store.step(1)
    store.close()

    again = SessionStore.open(store.dir)
    info = again.info
    assert (info.id, info.original_prompt, info.prompt) == (
        store.id,
        "a red cube on a blue sphere",
        info.current_prompt,
    )
    assert info.options == {"iterations": 3, "threshold": 0.85, "seed": 7}
    assert (info.head_step, info.best_step, info.status, info.schema_version) == (1, 1, "running", len(MIGRATIONS))
    assert again.step(1) == before and before.score == 0.6 and before.prompt == info.original_prompt
    art = again.image_of(1)
    assert art is not None and (art.id, art.path, art.width, art.height) == ("s1-image", "images/step-001.png", 48, 32)
    assert again.load_image("s1-image").tobytes() == picture.tobytes()
    again.close()


def test_session_ids_sort_by_time_and_are_unique() -> None:
    ids = []
    for _ in range(5):
        ids.append(new_session_id())
        time.sleep(0.002)
    assert ids == sorted(ids)
    assert len({new_session_id() for _ in range(2000)}) == 2000


def test_open_refuses_what_is_not_a_session(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not an EMage session"):
        SessionStore.open(tmp_path)
    (tmp_path / "session.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserError, match="not a readable session database"):
        SessionStore.open(tmp_path)


def test_migrations_run_once(store: SessionStore) -> None:
    store.close()
    SessionStore.open(store.dir).close()
    conn = sqlite3.connect(store.dir / "session.db")
    assert [r[0] for r in conn.execute("SELECT version FROM schema_version")] == list(range(1, len(MIGRATIONS) + 1))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_crash_between_files_and_commit_leaves_no_step(store: SessionStore, monkeypatch) -> None:
    store.commit_step(StepRecord(tool="generate", evaluation=ev(0.5)), {"image": img(1)})

    def boom(*_a, **_k):
        raise RuntimeError("simulated crash after the files, before the commit")

    monkeypatch.setattr(SessionStore, "_insert_artifacts", staticmethod(boom))
    with pytest.raises(RuntimeError, match="simulated crash"):
        store.commit_step(StepRecord(tool="inpaint"), {"image": img(2), "mask": img(3).convert("L")})
    monkeypatch.undo()
    assert [s.step for s in store.steps()] == [1] and store.info.head_step == 1
    assert (store.dir / "images/step-002.png").exists()  # orphan file, no row: harmless
    # a temp file from a writer that died mid-write is cleaned on open; a live writer's is kept
    dead = store.dir / "images" / ".step-009.png.999999999.abcd.tmp"
    live = store.dir / "images" / f".step-010.png.{os.getpid()}.abcd.tmp"
    dead.write_bytes(b"half a png")
    live.write_bytes(b"half a png")
    store.close()
    again = SessionStore.open(store.dir)
    assert not dead.exists() and live.exists()
    live.unlink()
    assert again.commit_step(StepRecord(tool="inpaint"), {"image": img(4)}) == 2
    assert again.load_image("s2-image").tobytes() == img(4).tobytes()  # the orphan was replaced
    check_consistent(again.dir)
    again.close()


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from PIL import Image
    from emage_agent.core.evaluation import Evaluation
    from emage_agent.session import SessionStore, StepRecord
    store = SessionStore.open(Path(sys.argv[1]))
    i = 0
    while True:
        i += 1
        im = Image.effect_noise((96, 64), 40 + i % 50).convert("RGB")
        rec = StepRecord(tool="generate", args={"i": i}, evaluation=Evaluation(satisfaction_score=(i % 10) / 10))
        n = store.commit_step(rec, images={"image": im, "mask": im.convert("L")})
        store.record_calls(n, [{"purpose": "evaluate", "model": "m", "latency_s": 0.1, "ok": True}])
        print(n, flush=True)
    """
)


def test_kill_9_loses_at_most_the_step_in_flight(store: SessionStore) -> None:
    store.close()
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for round_no in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILL_SCRIPT, str(store.dir)], stdout=subprocess.PIPE, text=True, env=env
        )
        committed = [int(proc.stdout.readline()) for _ in range(3 + round_no * 2)]
        time.sleep(rng.uniform(0, 0.03))  # land the kill somewhere inside a later step
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()

        check_consistent(store.dir)
        reopened = SessionStore.open(store.dir)
        steps = reopened.steps()
        assert steps[-1].step >= committed[-1]
        assert {s.step for s in steps} >= set(committed)
        for s in steps:
            assert {a.role for a in s.artifacts} == {"image", "mask"}
            assert all((reopened.dir / a.path).is_file() for a in s.artifacts)
        assert reopened.info.head_step == steps[-1].step
        summary = json.loads((reopened.dir / "summary.json").read_text())
        assert len(summary["history"]) in (len(steps) - 1, len(steps))  # rewritten after the commit
        assert all(Path(h["image"]).is_file() for h in summary["history"])
        assert not [p for p in reopened.dir.rglob("*.tmp")]
        reopened.close()


def test_revert_and_undo_move_the_head_and_keep_history(store: SessionStore) -> None:
    for i in range(1, 4):
        store.commit_step(StepRecord(tool="generate", prompt=f"prompt {i}", evaluation=ev(i / 10)), {"image": img(i)})
    assert [s.parent for s in store.steps()] == [None, 1, 2]
    store.revert(1)
    assert store.head().step == 1 and store.info.prompt == "prompt 1"
    assert [s.step for s in store.steps()] == [1, 2, 3]
    n = store.commit_step(StepRecord(tool="canny_edit"), {"image": img(9)})
    assert store.step(n).parent == 1 and store.step(n).prompt == "prompt 1"  # a new branch from step 1
    assert [s.step for s in store.lineage()] == [1, 4] and [s.step for s in store.lineage(3)] == [1, 2, 3]
    store.revert(3)
    store.undo()
    assert store.head().step == 2
    store.undo()
    assert store.head().step == 1
    with pytest.raises(UserError, match="nothing to undo"):
        store.undo()
    with pytest.raises(UserError, match="no step 42"):
        store.revert(42)
    assert len(store.steps()) == 4


def test_best_step_is_never_lost(store: SessionStore) -> None:
    store.commit_step(StepRecord(tool="generate", prompt="first"), {"image": img(1)})
    store.attach_evaluation(1, ev(0.4))  # evaluation arrives after the image is safe
    store.commit_step(StepRecord(tool="canny_edit", prompt="second", evaluation=ev(0.9)), {"image": img(2)})
    store.commit_step(StepRecord(tool="inpaint", prompt="third", evaluation=ev(0.3)), {"image": img(3)})
    store.mark_rolled_back(3)
    store.revert(1)
    store.commit_step(StepRecord(tool="make_mask", prompt="fourth"), {"mask": img(4).convert("L")})
    store.attach_evaluation(4, ev(0.7))
    assert store.best().step == 2 and store.info.best_step == 2
    summary = store.summary()
    assert summary["best_step"] == 2 and summary["satisfaction_score"] == 0.9
    assert summary["final_image"] == str(store.dir / "images/step-002.png")
    assert summary["final_prompt"] == "second"
    store.commit_step(StepRecord(tool="generate", evaluation=ev(0.9)), {"image": img(5)})
    assert store.best().step == 2  # ties keep the earliest


def test_summary_matches_the_spec_and_the_files(store: SessionStore) -> None:
    store.commit_step(StepRecord(tool="generate", args={"seed": 1}, evaluation=ev(0.5)), {"image": img(1)})
    store.commit_step(StepRecord(tool="rewrite_prompt", prompt="a RED cube", args={"focus": "color"}))
    store.commit_step(
        StepRecord(
            tool="generate",
            prompt="a RED cube",
            evaluation=ev(0.8),
            vetoes=[{"tool": "inpaint", "reason": "no mask yet"}],
        ),
        {"image": img(2)},
    )
    store.commit_step(StepRecord(tool="canny_edit", evaluation=ev(0.6), rolled_back=True), {"image": img(3)})
    store.set_status("done", stopped_because="threshold")
    on_disk = json.loads((store.dir / "summary.json").read_text())
    assert on_disk == store.summary()
    assert set(on_disk) == SUMMARY_KEYS
    assert on_disk["session_id"] == store.id and on_disk["session_dir"] == str(store.dir)
    assert on_disk["original_prompt"] == "a red cube on a blue sphere" and on_disk["final_prompt"] == "a RED cube"
    assert (on_disk["best_step"], on_disk["satisfaction_score"], on_disk["iterations"]) == (3, 0.8, 4)
    assert on_disk["stopped_because"] == "threshold" and Path(on_disk["final_image"]).is_file()
    assert [h["step"] for h in on_disk["history"]] == [1, 2, 3, 4]
    for h in on_disk["history"]:
        assert set(h) == HISTORY_KEYS
        assert h["image"] is None or (Path(h["image"]).is_absolute() and Path(h["image"]).is_file())
    assert on_disk["history"][1] == {
        "step": 2,
        "tool": "rewrite_prompt",
        "args": {"focus": "color"},
        "satisfaction_score": None,
        "image": None,
        "vetoes": [],
        "rolled_back": False,
    }
    assert on_disk["history"][2]["vetoes"] == [{"tool": "inpaint", "reason": "no mask yet"}]
    assert on_disk["history"][3]["rolled_back"] is True


def test_artifacts_lookup(store: SessionStore) -> None:
    assert store.latest("mask") is None and store.head() is None and store.best() is None
    store.commit_step(StepRecord(tool="generate"), {"image": img(1)})
    store.commit_step(StepRecord(tool="make_mask"), {"mask": img(2).convert("L")})
    store.commit_step(StepRecord(tool="canny_edit"), {"image": img(3), "control": img(4)})
    assert store.latest("mask").id == "s2-mask" and store.latest("image").id == "s3-image"
    assert store.artifact("s3-control").path == "control/step-003.png"
    assert store.artifact_path("s2-mask") == store.dir / "masks/step-002.png"
    assert store.load_image("s2-mask").mode == "L"
    assert store.image_of(2) is None and store.current_image(2).id == "s1-image"
    for bad in ("s9-image", "nonsense", "../session.db"):
        with pytest.raises(UserError, match="no artifact"):
            store.load_image(bad)
    with pytest.raises(UserError, match="unknown artifact role"):
        store.commit_step(StepRecord(tool="generate"), {"thumbnail": img(5)})
    assert len(store.steps()) == 3


def test_state_counters_and_calls(store: SessionStore) -> None:
    store.commit_step(StepRecord(tool="generate", timings={"tool_s": 1.5}, tokens={"input": 10}), {"image": img()})
    store.add_usage(vlm_calls=2, gpu_seconds=1.5)
    store.add_usage(gpu_seconds=0.5)
    store.update_options({"iterations": 5})
    store.set_prompt("a new prompt")
    store.record_calls(1, [{"purpose": "evaluate", "model": "gemini-x", "latency_s": 0.4, "attempts": 2, "ok": True}])
    store.record_calls(None, [{"purpose": "plan", "model": "gemini-x", "ok": False, "error": "503", "shard": 3}])
    info = store.info
    assert (info.vlm_calls, info.gpu_seconds, info.options["iterations"], info.prompt) == (2, 2.0, 5, "a new prompt")
    calls = store.calls()
    assert [c["purpose"] for c in calls] == ["evaluate", "plan"] and calls[1]["extra"] == {"shard": 3}
    assert store.calls(1)[0]["attempts"] == 2 and calls[1]["ok"] is False
    with pytest.raises(UserError, match="unknown status"):
        store.set_status("exploded")
    with pytest.raises(UserError, match="bad VLM call record"):
        store.record_calls(1, [{"model": "no purpose"}])


def test_no_api_key_ever_reaches_the_store(tmp_path: Path) -> None:
    key = FAKE_KEY
    store = SessionStore.create(tmp_path, f"prompt {key}", {"gemini_api_key": key, "nested": {"k": [key]}})
    assert store.info.original_prompt == "prompt [redacted]" and store.info.options["gemini_api_key"] == "[redacted]"
    store.set_prompt(f"a cat {key}")
    store.commit_step(
        StepRecord(
            tool="generate",
            args={"prompt": f"cat {key}", "nested": [{"k": key}]},
            error=f"HTTP 400 for url https://example.invalid/v1?key={key}",
            decision={"reason": key},
            feedback=key,
            note=key,
            evaluation=Evaluation(
                satisfaction_score=0.2, summary=key, issues=[Issue(category="object", severity=0.5, description=key)]
            ),
            vetoes=[{"tool": "inpaint", "reason": key}],
        ),
        {"image": img()},
    )
    store.attach_evaluation(1, ev(0.3).model_copy(update={"summary": f"leak {key}"}))
    store.record_calls(1, [{"purpose": "evaluate", "error": f"bad key {key}", "ok": False, "url": f"?key={key}"}])
    store.set_status("failed", stopped_because=f"failure: {key}")
    store.update_options({"api_key": key})
    rec = store.step(1)
    assert "[redacted]" in rec.args["prompt"] and "[redacted]" in rec.error
    write_report(store)
    files = [p for p in store.dir.rglob("*") if p.is_file()]
    assert any(p.name == "session.db-wal" for p in files)  # checked while the WAL still holds the data
    assert [p for p in files if b"AIza" in p.read_bytes()] == []
    store.close()
    leaked = [p for p in store.dir.rglob("*") if p.is_file() and b"AIza" in p.read_bytes()]
    assert leaked == []
    assert session_mod.scrub({"x": ["hf_" + "a" * 34]}) == {"x": ["[redacted]"]}


def test_a_newer_schema_is_refused(store: SessionStore) -> None:
    store.close()
    conn = sqlite3.connect(store.dir / "session.db")
    conn.execute("INSERT INTO schema_version VALUES (?, 'later')", (len(MIGRATIONS) + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(UserError, match="upgrade"):
        SessionStore.open(store.dir)
