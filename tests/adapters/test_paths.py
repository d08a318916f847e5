"""Path safety for arguments from untrusted clients: real files, real symlinks, no mocks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from emage_agent.adapters.paths import ImageRef, inside_root, is_artifact_id, resolve_image_arg, resolve_session_dir
from emage_agent.core.errors import UserError


@pytest.fixture()
def layout(tmp_path: Path) -> dict[str, Path]:
    """A session root with one session and an image, plus a secret file outside the root."""
    root = tmp_path / "sessions"
    session = root / "abc123"
    session.mkdir(parents=True)
    image = session / "s1-image.png"
    image.write_bytes(b"\x89PNG fake")
    (session / "notes.txt").write_text("not an image")
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"\x89PNG secret")
    outside_dir = tmp_path / "elsewhere"
    outside_dir.mkdir()
    return {"root": root, "session": session, "image": image, "outside": outside, "outside_dir": outside_dir}


def _refused(fn, field: str) -> str:
    with pytest.raises(UserError) as info:
        fn()
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    return str(info.value)


def test_artifact_ids_pass_through_without_touching_disk(layout):
    ref = resolve_image_arg("s3-image", layout["root"], field="image")
    assert ref == ImageRef(artifact_id="s3-image")
    assert resolve_image_arg("current", layout["root"], field="image").artifact_id == "current"
    assert is_artifact_id("latest") and not is_artifact_id("a/b") and not is_artifact_id("x.png")
    assert not is_artifact_id("..") and not is_artifact_id("")


def test_artifact_existence_is_checked_when_a_lookup_is_given(layout):
    known = {"s1-image"}.__contains__
    assert resolve_image_arg("s1-image", layout["root"], field="mask", has_artifact=known).artifact_id == "s1-image"
    message = _refused(lambda: resolve_image_arg("s9-mask", layout["root"], field="mask", has_artifact=known), "mask")
    assert "s9-mask" in message


def test_files_inside_the_root_resolve_relative_or_absolute(layout):
    rel = resolve_image_arg("abc123/s1-image.png", layout["root"], field="image")
    absolute = resolve_image_arg(str(layout["image"]), layout["root"], field="image")
    assert rel.path == absolute.path == layout["image"].resolve()
    assert rel.artifact_id is None


@pytest.mark.parametrize(
    "value",
    ["../secret.png", "abc123/../../secret.png", "abc123/../abc123/s1-image.png", "..\\secret.png"],
)
def test_dotdot_is_refused_even_when_it_stays_inside(layout, value):
    assert "'..'" in _refused(lambda: resolve_image_arg(value, layout["root"], field="image"), "image")


def test_absolute_paths_outside_the_root_are_refused(layout):
    message = _refused(lambda: resolve_image_arg(str(layout["outside"]), layout["root"], field="image"), "image")
    assert "outside the session root" in message
    _refused(lambda: resolve_image_arg("/etc/passwd", layout["root"], field="mask"), "mask")


def test_symlink_out_of_the_root_is_refused(layout):
    link = layout["session"] / "escape.png"
    link.symlink_to(layout["outside"])
    message = _refused(lambda: resolve_image_arg("abc123/escape.png", layout["root"], field="image"), "image")
    assert "outside the session root" in message
    dir_link = layout["root"] / "linked"
    dir_link.symlink_to(layout["outside_dir"], target_is_directory=True)
    (layout["outside_dir"] / "x.png").write_bytes(b"x")
    _refused(lambda: resolve_image_arg("linked/x.png", layout["root"], field="image"), "image")
    _refused(lambda: resolve_session_dir("linked", layout["root"]), "session_id")


def test_symlink_within_the_root_is_followed(layout):
    link = layout["root"] / "alias.png"
    link.symlink_to(layout["image"])
    assert resolve_image_arg("alias.png", layout["root"], field="image").path == layout["image"].resolve()


def test_symlinked_root_itself_is_fine(tmp_path, layout):
    alias_root = tmp_path / "root-alias"
    alias_root.symlink_to(layout["root"], target_is_directory=True)
    ref = resolve_image_arg(str(alias_root / "abc123" / "s1-image.png"), alias_root, field="image")
    assert ref.path == layout["image"].resolve()


def test_non_files_and_non_images_are_refused(layout):
    directory = str(layout["session"])
    assert "not a regular file" in _refused(
        lambda: resolve_image_arg(directory, layout["root"], field="image"), "image"
    )
    assert "not an image" in _refused(
        lambda: resolve_image_arg("abc123/notes.txt", layout["root"], field="image"), "image"
    )
    assert "does not exist" in _refused(
        lambda: resolve_image_arg("abc123/missing.png", layout["root"], field="image"), "image"
    )
    if os.path.exists("/dev/null"):
        _refused(lambda: inside_root("/dev/null", "/dev", field="image"), "image")


@pytest.mark.parametrize("value", ["", "   ", "a\x00b.png"])
def test_empty_or_nul_values_are_refused(layout, value):
    _refused(lambda: resolve_image_arg(value, layout["root"], field="image"), "image")


def test_symlink_loop_is_refused(layout):
    loop = layout["root"] / "loop.png"
    loop.symlink_to(loop)
    _refused(lambda: resolve_image_arg("loop.png", layout["root"], field="image"), "image")


def test_session_dirs(layout):
    assert resolve_session_dir("abc123", layout["root"]) == layout["session"].resolve()
    assert resolve_session_dir(layout["session"], layout["root"]) == layout["session"].resolve()
    assert "root itself" in _refused(lambda: resolve_session_dir(str(layout["root"]), layout["root"]), "session_id")
    _refused(lambda: resolve_session_dir("../elsewhere", layout["root"]), "session_id")
    _refused(lambda: resolve_session_dir(str(layout["outside_dir"]), layout["root"]), "session_id")
    _refused(lambda: resolve_session_dir("nope", layout["root"]), "session_id")
    _refused(lambda: resolve_session_dir("abc123/s1-image.png", layout["root"], field="session"), "session")
