"""Starting a session from the user's own picture (and region mask): API, checks and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from emage_agent.api import Agent
from emage_agent.core.errors import UserError
from emage_agent.core.pictures import accepted_size, load_region_mask, load_start_image
from tests.loop.test_session_loop import CANNY, STYLE, Script
from tests.support.fake_gemini import function_call_reply


@pytest.mark.parametrize(
    ("size", "expected"),
    [((64, 64), (64, 64)), ((1000, 750), (992, 752)), ((4096, 2048), (2048, 1024)), ((30, 90), (64, 192))],
)
def test_accepted_size_keeps_the_aspect_in_bounds(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert accepted_size(*size) == expected


def test_picture_checks_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        load_start_image(tmp_path / "missing.png")
    assert err.value.field == "image" and "not a file" in str(err.value)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a picture")
    with pytest.raises(UserError, match="cannot be read"):
        load_start_image(junk)
    odd = tmp_path / "odd.png"
    Image.new("RGBA", (100, 70), (10, 20, 30, 255)).save(odd)
    image, note = load_start_image(odd)
    assert image.mode == "RGB" and image.size == (96, 64) and "resized to 96x64" in note
    black = Image.new("L", (96, 64), 0)
    with pytest.raises(UserError, match="all black") as err:
        load_region_mask(black, (96, 64))
    assert err.value.field == "mask"


@pytest.fixture
def agent(tiny_settings: Any, gemini_settings: Any, executor: Any, tmp_path: Path) -> Agent:
    gemini = {k: v for k, v in gemini_settings.model_dump().items() if k.startswith("gemini_")}
    return Agent(tiny_settings.model_copy(update={**gemini, "session_root": tmp_path / "s"}), executor=executor)


def test_session_starts_from_the_picture_and_repairs_only_the_region(
    agent: Agent, fake_gemini: Any, tiny_image: Image.Image, tmp_path: Path
) -> None:
    picture = tmp_path / "mine.png"
    tiny_image.resize((70, 64)).save(picture)  # 70 is no multiple of 16: resized, and the session says so
    region = Image.new("L", (70, 64), 0)
    region.paste(255, (0, 0, 35, 64))  # the left half may change
    mask = tmp_path / "region.png"
    region.save(mask)
    script = Script(fake_gemini, evals=[(0.5, [STYLE]), (0.9, [])], plans=[function_call_reply(CANNY)])
    events: list[Any] = []
    agent.on_event = events.append
    session = agent.start("a red fox on a blue car", image=picture, mask=mask, steps=2, seed=3)
    assert script.seen["evaluate"] == 1  # the picture was judged before any repair
    summary = session.run()
    assert [h["tool"] for h in summary["history"]] == ["upload", "canny_edit"]
    first = Image.open(summary["history"][0]["image"])
    repaired = Image.open(summary["history"][1]["image"])
    assert first.size == repaired.size == (64, 64)
    assert any("resized to 64x64" in e.message for e in events if e.kind == "warning")
    before, after = np.asarray(first), np.asarray(repaired)
    assert np.array_equal(before[:, 40:], after[:, 40:])  # outside the region: untouched
    assert not np.array_equal(before[:, :28], after[:, :28])
    assert session.store.info.options["region"].endswith("-mask")


def test_mask_without_image_is_refused(agent: Agent, tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        agent.start("a fox", mask=tmp_path / "m.png")
    assert err.value.field == "mask"


def test_cli_starts_from_an_image(tiny_settings: Any, gemini_settings: Any, fake_gemini: Any, tmp_path: Path) -> None:
    import json

    from tests.adapters.test_cli import cli_env, emage

    gemini = {k: v for k, v in gemini_settings.model_dump().items() if k.startswith("gemini_")}
    settings = tiny_settings.model_copy(update=gemini)
    Script(fake_gemini, evals=[(0.9, [])])
    picture = tmp_path / "mine.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(picture)
    result = emage(
        "a red square", "--image", str(picture), "--out", str(tmp_path / "s"), "--json",
        env=cli_env(settings), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [h["tool"] for h in summary["history"]] == ["upload"]
    assert summary["satisfaction_score"] == 0.9
    bad = emage("a red square", "--image", str(tmp_path / "nope.png"), env=cli_env(settings), cwd=tmp_path)
    assert bad.returncode == 2 and "not a file" in bad.stderr and "Traceback" not in bad.stderr
