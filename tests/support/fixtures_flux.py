"""Fixtures for the tiny random-weight FLUX.1 family: built once per test session, on disk.

- ``tiny_family``: the model directories (hub layout) of ``tests.support.tiny_family.TinyFamily``.
- ``tiny_settings``: ``Settings`` pointing every model at them, on the CPU in float32, with
  no ``.env`` and no token; derive variants with ``tiny_settings.model_copy(update={...})``.
- ``executor``: one ``Executor`` shared by the whole session (models load once). Tests that
  count loads from zero should build their own ``Executor(tiny_settings)``.
- ``tiny_image``: a 64x64 RGB picture with edges and a gradient, for edits and masks.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emage_agent.core.settings import Settings
from tests.support.tiny_family import TinyFamily, build_tiny_family


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory: pytest.TempPathFactory) -> TinyFamily:
    return build_tiny_family(tmp_path_factory.mktemp("tiny-flux-family"))


@pytest.fixture(scope="session")
def tiny_settings(tiny_family: TinyFamily, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return tiny_family.settings(hf_token=None, residency="auto", session_root=tmp_path_factory.mktemp("sessions"))


@pytest.fixture(scope="session")
def executor(tiny_settings: Settings) -> Iterator[object]:
    from emage_agent.executor import Executor

    shared = Executor(tiny_settings)
    yield shared
    shared.close()


@pytest.fixture(scope="session")
def tiny_image():
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:64, 0:64]
    pixels = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)
    pixels[16:48, 20:44] = (230, 40, 40)  # a red block: strong edges for Canny, a target for masks
    return Image.fromarray(pixels)
