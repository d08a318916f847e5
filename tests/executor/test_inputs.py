"""Bad inputs fail before any model work, with InvalidArgument naming the field to fix."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from emage_agent.core.errors import InvalidArgument
from emage_agent.executor import Executor


@pytest.fixture
def fresh(tiny_settings) -> Executor:
    """An executor that has loaded nothing, so a test can show a failure loaded nothing either."""
    return Executor(tiny_settings)


def _rgb(width: int = 64, height: int = 64) -> Image.Image:
    return Image.new("RGB", (width, height), (120, 30, 200))


def _mask(width: int = 64, height: int = 64, mode: str = "L") -> Image.Image:
    mask = Image.new(mode, (width, height), 0)
    mask.paste(255 if mode == "L" else (255, 255, 255), (8, 8, 40, 40))
    return mask


def _corrupt_png() -> Image.Image:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return Image.open(io.BytesIO(buffer.getvalue()[:400]))  # opens (header intact), cannot be decoded


EDIT = {"prompt": "a blue fox", "steps": 1}
CASES: list[tuple[str, str, dict[str, Any], dict[str, Any] | None, str]] = [
    ("size-not-multiple", "generate", {"prompt": "x", "width": 100}, None, "width"),
    ("size-too-small", "generate", {"prompt": "x", "height": 32}, None, "height"),
    ("steps-out-of-range", "generate", {"prompt": "x", "steps": 0}, None, "steps"),
    ("guidance-out-of-range", "generate", {"prompt": "x", "guidance": 31}, None, "guidance"),
    ("prompt-missing", "generate", {}, None, "prompt"),
    ("strength-out-of-range", "canny_edit", {**EDIT, "strength": 1.5}, {"image": _rgb()}, "strength"),
    ("unknown-argument", "inpaint", {**EDIT, "radius": 3}, None, "radius"),
    (
        "thresholds-reversed",
        "canny_edit",
        {**EDIT, "low_threshold": 200, "high_threshold": 100},
        None,
        "high_threshold",
    ),
    ("thresholds-equal", "canny_edit", {**EDIT, "low_threshold": 80, "high_threshold": 80}, None, "high_threshold"),
    ("image-missing", "depth_edit", EDIT, None, "image"),
    ("image-is-a-path", "canny_edit", EDIT, {"image": "current.png"}, "image"),
    ("image-corrupt", "depth_edit", EDIT, {"image": _corrupt_png()}, "image"),
    ("image-16-bit", "canny_edit", EDIT, {"image": Image.new("I;16", (64, 64))}, "image"),
    ("image-float", "inpaint", EDIT, {"image": Image.new("F", (64, 64)), "mask": _mask()}, "image"),
    ("edit-size-not-multiple", "canny_edit", EDIT, {"image": _rgb(72, 64)}, "image"),
    ("edit-size-too-small", "depth_edit", EDIT, {"image": _rgb(48, 48)}, "image"),
    ("mask-missing", "inpaint", EDIT, {"image": _rgb()}, "mask"),
    ("mask-wrong-size", "inpaint", EDIT, {"image": _rgb(), "mask": _mask(64, 80)}, "mask"),
    ("mask-wrong-mode", "inpaint", EDIT, {"image": _rgb(), "mask": _mask(mode="RGB")}, "mask"),
    ("mask-empty", "inpaint", EDIT, {"image": _rgb(), "mask": Image.new("L", (64, 64), 0)}, "mask"),
    ("mask-corrupt", "inpaint", EDIT, {"image": _rgb(), "mask": _corrupt_png()}, "mask"),
    ("mask-needs-target-or-box", "make_mask", {}, {"image": _rgb()}, "target"),
    ("mask-box-empty", "make_mask", {"box": [500, 100, 400, 900]}, {"image": _rgb()}, "box"),
    ("mask-box-short", "make_mask", {"box": [1, 2, 3]}, {"image": _rgb()}, "box"),
    ("rewrite-prompt-is-gemini", "rewrite_prompt", {"focus": "the fox"}, None, "tool"),
    ("unknown-tool", "upscale", {}, None, "tool"),
]


@pytest.mark.parametrize(("tool", "args", "images", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_names_the_field_before_any_model_loads(
    fresh: Executor, tool: str, args: dict[str, Any], images: dict[str, Any] | None, field: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        fresh.run(tool, args, images)
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith(f"{field}: ")
    assert fresh.counters.loads == {} and fresh.counters.bytes_read == 0


def test_rewrite_prompt_explains_who_runs_it(fresh: Executor) -> None:
    with pytest.raises(InvalidArgument, match="the VLM"):
        fresh.run("rewrite_prompt", {})


def test_thresholds_error_states_the_rule(fresh: Executor) -> None:
    with pytest.raises(InvalidArgument, match=r"must exceed low_threshold \(200\)"):
        fresh.run("canny_edit", {"prompt": "x", "low_threshold": 200, "high_threshold": 150}, {"image": _rgb()})


def test_edit_size_error_suggests_a_valid_size(fresh: Executor) -> None:
    with pytest.raises(InvalidArgument, match="multiples of 16.*64x64"):
        fresh.run("canny_edit", {"prompt": "x"}, {"image": _rgb(72, 70)})
