"""The UI's guards: no open port without a password, a wrong password refused, no paths, checked uploads,
nothing served from outside the sessions folder. The refusals of the command run as real processes;
the served page is the real Gradio app on loopback, asked over HTTP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from emage_agent.adapters.ui import Studio, resolve_auth
from emage_agent.adapters.ui.guards import check_session_id, check_step, check_text, check_upload
from emage_agent.core.errors import UserError
from tests.support.scripted import scripted_agent

pytest.importorskip("gradio")
OPTIONS = {"width": 64, "height": 64, "steps": 2, "planner": "selector", "iterations": 1}


def ui(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EMAGE_UI_AUTH"} | (env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "emage_agent.adapters.cli", "ui", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "example.org"])
def test_non_loopback_without_a_password_is_refused_in_one_line(host: str, tmp_path: Path) -> None:
    result = ui("--host", host, "--out", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to serve the UI on" in lines[0] and "--auth" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())


def test_a_malformed_password_is_refused_without_echoing_it(tmp_path: Path) -> None:
    result = ui("--host", "0.0.0.0", "--auth", "onlyuser-s3cr3t", "--out", str(tmp_path))
    assert result.returncode == 2 and "USER:PASS" in result.stderr and "s3cr3t" not in result.stderr
    result = ui("--host", "0.0.0.0", "--out", str(tmp_path), env_extra={"EMAGE_UI_AUTH": "nopass:"})
    assert result.returncode == 2 and "EMAGE_UI_AUTH" in result.stderr


def test_auth_rules() -> None:
    assert resolve_auth("127.0.0.1", None, None) is None
    assert resolve_auth("localhost", None, None) is None
    assert resolve_auth("::1", None, None) is None
    assert resolve_auth("0.0.0.0", None, "ann:pw:with:colons") == ("ann", "pw:with:colons")
    assert resolve_auth("0.0.0.0", "bob:x", "ann:y") == ("bob", "x")  # the flag wins over the environment


@pytest.mark.parametrize(
    "value", ["/etc/passwd", "../../etc/passwd", "~/.ssh/id_rsa", "C:\\Windows\\win.ini", "./session.db", "file:///x"]
)
def test_paths_in_text_fields_are_refused(value: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="file path"):
        check_text(value, "prompt")
    studio = Studio(scripted_agent(tmp_path), tmp_path)
    with pytest.raises(UserError, match="prompt: "):
        studio.start(value, OPTIONS)
    with pytest.raises(UserError, match="session: "):
        check_session_id(value, tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name != ".ui"]  # nothing was created


def test_words_that_mention_slashes_are_still_prompts() -> None:
    assert check_text("a fox and/or a cat, 50/50 light", "prompt") == "a fox and/or a cat, 50/50 light"


def test_session_and_step_names_from_the_browser(tmp_path: Path) -> None:
    studio = Studio(scripted_agent(tmp_path, [0.9]), tmp_path)
    run = studio.start("a red fox", OPTIONS)
    assert run.done.wait(20) and run.error is None
    assert check_session_id(run.session_id, tmp_path) == (tmp_path / run.session_id).resolve()
    outside = tmp_path.parent / "elsewhere"
    (outside / "x").mkdir(parents=True, exist_ok=True)
    (outside / "x" / "session.db").write_bytes(b"")
    for bad in ("../elsewhere/x", str(outside / "x"), f"{run.session_id}/images", "nope", ".ui", ""):
        with pytest.raises(UserError, match="session: "):
            check_session_id(bad, tmp_path)
    assert check_step(2) == 2 and check_step("3") == 3
    for bad in (0, -1, 1.5, "../1", "1; rm", True, None):
        with pytest.raises(UserError, match="step: "):
            check_step(bad)
    with pytest.raises(UserError, match="session: "):
        studio.revert("../elsewhere/x", 1)


def save(path: Path, size: tuple[int, int], fmt: str = "PNG", mode: str = "RGB") -> Path:
    Image.new(mode, size, (10, 20, 30) if mode == "RGB" else 0).save(path, format=fmt)
    return path


def test_uploads_are_checked(tmp_path: Path) -> None:
    good = check_upload(save(tmp_path / "ok.png", (64, 96)), "start image")
    assert good is not None and good.size == (64, 96) and good.mode == "RGB"
    assert check_upload(None, "start image") is None
    cases = {
        "gif": (save(tmp_path / "a.gif", (64, 64), "GIF", "P"), "GIF"),
        "odd": (save(tmp_path / "odd.png", (100, 64)), "multiples of 16"),
        "tiny": (save(tmp_path / "tiny.png", (32, 32)), "64 to 2048"),
        "huge": (save(tmp_path / "huge.png", (4096, 64)), "64 to 2048"),
    }
    (tmp_path / "fake.png").write_text("not an image")
    cases["fake"] = (tmp_path / "fake.png", "not a readable image")
    big = tmp_path / "big.png"
    with big.open("wb") as f:
        f.truncate(21 * 1024 * 1024)
    cases["big"] = (big, "larger than 20 MB")
    cases["missing"] = (tmp_path / "gone.png", "did not arrive")
    for path, message in cases.values():
        with pytest.raises(UserError, match=message):
            check_upload(path, "start image")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Studio]]:
    from emage_agent.adapters.ui.app import serve

    studio = Studio(scripted_agent(tmp_path / "sessions", [0.9]), tmp_path / "sessions")
    demo, url = serve(studio, port=free_port(), auth=("ann", "right-horse"), block=False, defaults=OPTIONS)
    try:
        yield url.rstrip("/"), studio
    finally:
        demo.close()


def test_a_wrong_password_is_refused_and_the_right_one_admitted(served: tuple[str, Studio]) -> None:
    url, _studio = served
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/config").status_code == 401  # nothing of the app without signing in
        wrong = client.post("/login", data={"username": "ann", "password": "wrong-horse"})
        assert wrong.status_code == 400 and "right-horse" not in wrong.text
        assert client.get("/config").status_code == 401
        right = client.post("/login", data={"username": "ann", "password": "right-horse"})
        assert right.status_code == 200
        config = client.get("/config")
        assert config.status_code == 200 and '"Prompt"' in config.text


def test_nothing_outside_the_sessions_folder_is_served(served: tuple[str, Studio], tmp_path: Path) -> None:
    url, studio = served
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret words")
    run = studio.start("a red fox", OPTIONS)
    assert run.done.wait(20)
    inside = next((studio.root / run.session_id / "images").glob("*.png"))
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.post("/login", data={"username": "ann", "password": "right-horse"}).status_code == 200
        for path in (secret, Path("/etc/passwd"), inside, studio.root / run.session_id / "session.db"):
            response = client.get(f"/gradio_api/file={path}")
            assert response.status_code in (403, 404), (path, response.status_code)
            assert "top secret" not in response.text and "root:" not in response.text
    assert os.environ["GRADIO_TEMP_DIR"].startswith(str(studio.root))  # what the page shows is copied in here


@pytest.mark.parametrize("bind", ["127.0.0.1", "127.0.0.2"])
def test_a_foreign_host_or_origin_is_refused(bind: str, tmp_path: Path) -> None:
    """DNS rebinding: a page whose name points at the loopback address cannot drive the UI from a browser."""
    from emage_agent.adapters.ui.app import serve

    studio = Studio(scripted_agent(tmp_path / "sessions", [0.9]), tmp_path / "sessions")
    port = free_port()
    demo, url = serve(studio, host=bind, port=port, allowed_hosts=["studio.lan"], block=False, defaults=OPTIONS)
    own = f"{bind}:{port}"
    try:
        with httpx.Client(base_url=url.rstrip("/"), timeout=10) as client:
            for host in ("attacker.example", f"attacker.example:{port}", f"studio.lan:{port + 1}"):
                refused = client.get("/config", headers={"Host": host})
                assert refused.status_code == 421 and '"Prompt"' not in refused.text, host
                assert client.post("/gradio_api/queue/join", json={}, headers={"Host": host}).status_code == 421
            foreign = client.get("/config", headers={"Host": own, "Origin": f"http://attacker.example:{port}"})
            assert foreign.status_code == 403 and '"Prompt"' not in foreign.text
            for host, origin in ((own, f"http://{own}"), (f"studio.lan:{port}", f"http://studio.lan:{port}")):
                page = client.get("/config", headers={"Host": host, "Origin": origin})
                assert page.status_code == 200 and '"Prompt"' in page.text, host
            other_loopback = client.get("/config", headers={"Host": f"127.0.0.3:{port}"})
            assert other_loopback.status_code == 421  # only the address bound, not every loopback one
    finally:
        demo.close()


def test_without_gradio_the_command_says_what_to_install(tmp_path: Path) -> None:
    code = "import sys; sys.modules['gradio'] = None; from emage_agent.adapters.cli import main; sys.exit(main(['ui']))"
    env = {k: v for k, v in os.environ.items() if k != "EMAGE_UI_AUTH"}
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, text=True, capture_output=True)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "emage-agent: error: ui: the web UI needs Gradio; install it with: pip install -e '.[ui]'"
    )


def test_the_command_serves_the_page_on_loopback(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAGE_")}
    env |= {"GEMINI_API_KEY": "fake-key-for-the-page", "EMAGE_DEVICE": "cpu", "GRADIO_ANALYTICS_ENABLED": "False"}
    env["EMAGE_UI_ALLOWED_HOSTS"] = '["studio.lan"]'
    out = tmp_path / "sessions"
    proc = subprocess.Popen(
        [sys.executable, "-m", "emage_agent.adapters.cli", "ui", "--out", str(out), "--port", str(port)],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        page = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/config", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.3)
        assert page is not None and page.status_code == 200, proc.poll()
        assert '"Prompt"' in page.text and '"Steps (newest first)"' in page.text and '"History"' in page.text
        assert (out / ".ui" / "cache").is_dir()
        named = httpx.get(f"http://127.0.0.1:{port}/config", headers={"Host": f"studio.lan:{port}"}, timeout=5)
        assert named.status_code == 200  # EMAGE_UI_ALLOWED_HOSTS reaches the server
        foreign = httpx.get(f"http://127.0.0.1:{port}/config", headers={"Host": "attacker.example"}, timeout=5)
        assert foreign.status_code == 421
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"EMage UI on http://127.0.0.1:{port}" in err and "fake-key-for-the-page" not in err


def test_the_cli_and_the_ui_runs_load_no_gradio(tmp_path: Path) -> None:
    code = "import sys, emage_agent.adapters.cli, emage_agent.adapters.ui; print('gradio' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], text=True, capture_output=True, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr
