"""Round 3 from the command line: a locked database, a full disk at open, malformed list settings, SIGTERM
in a step, a decompression bomb, 16-bit and EXIF-rotated start pictures. Real ``emage-agent`` processes."""

from __future__ import annotations

import resource
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emage_agent.core.pictures import load_region_mask, load_start_image
from tests.reliability.support import emage, env, one_line_error, stored_session
from tests.support.scripted import scripted_agent


def test_a_locked_database_is_busy_not_damaged(tmp_path: Path) -> None:
    """Item 7: another process holding session.db: exit 3 "locked by another process", never "damaged"."""
    root = tmp_path / "sessions"
    session = stored_session(root)
    holder = sqlite3.connect(session / "session.db", isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE session SET status = status")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "emage_agent.adapters.cli", "resume", str(session)],
            env=env(root, EMAGE_DB_WAIT_S="0.5"),
            text=True,
            capture_output=True,
            timeout=120,
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    line = one_line_error(result)
    assert result.returncode == 3, result.stderr
    assert "locked by another process" in line and "damaged" not in line


def test_a_full_disk_at_open_is_full_not_damaged(tmp_path: Path) -> None:
    """Item 7: no room to write at open (a file size limit): exit 1, "disk", never "damaged" nor "saved"."""
    root = tmp_path / "sessions"
    session = stored_session(root)
    for extra in ("session.db-wal", "session.db-shm"):
        (session / extra).unlink(missing_ok=True)
    size = (session / "session.db").stat().st_size

    def no_growth() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))

    result = emage("resume", str(session), root=root, preexec_fn=no_growth)
    line = one_line_error(result)
    assert result.returncode == 1, result.stderr
    assert "disk" in line and "damaged" not in line and "session is saved" not in line
    assert (session / "session.db").stat().st_size == size


@pytest.mark.parametrize(("name", "value"), [("EMAGE_UI_ALLOWED_HOSTS", "*"), ("EMAGE_MCP_ALLOWED_HOSTS", "notjson")])
def test_a_malformed_list_setting_names_the_variable(tmp_path: Path, name: str, value: str) -> None:
    """Item 10: a list variable that is not JSON: exit 2 naming it, not "unexpected SettingsError"."""
    root = tmp_path / "sessions"
    result = subprocess.run(
        [sys.executable, "-m", "emage_agent.adapters.cli", "a red fox", "--out", str(root)],
        env=env(root, **{name: value}),
        text=True,
        capture_output=True,
        timeout=120,
    )
    line = one_line_error(result)
    assert result.returncode == 2, result.stderr
    assert name in line and "JSON" in line and "session is saved" not in line


SLOW_RESUME = """
import sys, time
import emage_agent.api as api
from tests.support.scripted import ScriptedEvaluator, ScriptedExecutor, ScriptedRewriter

class Slow(ScriptedExecutor):
    def run(self, tool, args, images=None, on_step=None):
        print("step", flush=True)
        time.sleep(30)
        return super().run(tool, args, images, on_step)

init = api.Agent.__init__
def scripted(self, settings=None, **kw):
    kw.update(executor=Slow(), evaluator=ScriptedEvaluator([0.5]), rewriter=ScriptedRewriter())
    kw.update(planner_factory=lambda: None)
    init(self, settings, **kw)
api.Agent.__init__ = scripted
from emage_agent.adapters.cli import main
sys.exit(main(["resume", sys.argv[1], "--iterations", "2"]))
"""


def test_sigterm_in_a_step_ends_like_ctrl_c(tmp_path: Path) -> None:
    """Item 11: SIGTERM mid-step: exit 130, status "interrupted", lock released, resume continues."""
    root = tmp_path / "sessions"
    session = stored_session(root)
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_RESUME, str(session)],
        env=env(root),
        cwd=str(Path(__file__).resolve().parents[2]),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "step"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.monotonic() - started < 20, err
    assert "terminated" in err and "Traceback" not in err
    reopened = scripted_agent(root, [0.95]).open(session)
    assert reopened.store.info.status == "interrupted"
    with reopened.store.writing():  # the lock was released
        pass
    summary = reopened.run(1)
    assert summary["stopped_because"] == "threshold"
    reopened.store.close()


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width`` x ``height``: what a bomb looks like before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


@pytest.mark.parametrize("flag", ["--image", "--mask"])
def test_a_decompression_bomb_is_bad_input_before_any_session(tmp_path: Path, flag: str) -> None:
    """Item 9: a 40000x40000 picture: exit 2 naming it and its size; no "unexpected", no "session is saved"."""
    root = tmp_path / "sessions"
    bomb = _png_header_only(tmp_path / "bomb.png", 40000, 40000)
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(good)
    pictures = ["--image", str(bomb)] if flag == "--image" else ["--image", str(good), "--mask", str(bomb)]
    result = emage("a red fox", *pictures, "--out", str(root), root=root)
    line = one_line_error(result)
    assert result.returncode == 2, result.stderr
    assert "40000x40000" in line and "unexpected" not in line and "saved" not in line
    assert not root.exists() or not [p for p in root.iterdir() if not p.name.startswith(".")]


def test_a_16_bit_picture_keeps_its_tones(tmp_path: Path) -> None:
    """Item 8: a 16-bit grey PNG comes in with its tones (it was 99% white: ``convert('RGB')`` clipped it)."""
    ramp = (np.linspace(0, 65535, 128 * 128).reshape(128, 128)).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    image, _note = load_start_image(path)
    grey = np.asarray(image.convert("L"), dtype=float)
    expected = ramp.astype(float) / 257
    assert abs(grey - expected).max() <= 2
    mask = load_region_mask(path, image.size)  # the upper half of the ramp is white, not the whole picture
    assert 0.4 < np.asarray(mask).astype(bool).mean() < 0.6


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """Item 8: a phone photo stored sideways with EXIF orientation 6 comes in upright (as viewers show it)."""
    stored = Image.new("RGB", (128, 64), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 64, 64))  # red on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif, quality=95)
    image, _note = load_start_image(path)
    assert image.size == (64, 128)
    top = image.getpixel((32, 16))
    assert top[0] > 200 and top[2] < 60, top  # red is on top once rotated clockwise
    mask_source = tmp_path / "mask.png"
    mask = Image.new("L", (128, 64), 0)
    mask.paste(255, (0, 0, 64, 64))
    exif_mask = Image.Exif()
    exif_mask[0x0112] = 6
    mask.save(mask_source, exif=exif_mask)
    region = load_region_mask(mask_source, image.size)
    assert region.getpixel((32, 16)) == 255 and region.getpixel((32, 112)) == 0
