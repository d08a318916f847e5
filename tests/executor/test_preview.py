"""Live previews: the real tiny FLUX pipelines hand a small picture of the image forming to a ``StepWatcher``."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from emage_agent.core.ports import StepWatcher
from emage_agent.executor import Executor
from emage_agent.executor.preview import FLUX_RGB, to_rgb, unpack


def test_a_step_watcher_gets_previews_and_a_plain_callback_only_progress(executor: Executor) -> None:
    steps: list[tuple[int, int]] = []
    previews: list[bytes] = []
    watcher = StepWatcher(lambda i, n: steps.append((i, n)), previews.append)
    executor.run("generate", {"prompt": "a fox", "seed": 1, "width": 96, "height": 64, "steps": 4}, on_step=watcher)
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert len(previews) == 2  # every second step; the last is one of them
    first, last = (Image.open(io.BytesIO(p)) for p in previews)
    assert first.format == "PNG" and first.mode == "RGB" and first.width / first.height == pytest.approx(96 / 64)
    assert first.tobytes() != last.tobytes()  # the picture changes as diffusion goes on
    assert len(set(last.getdata())) > 4  # more than a flat fill


def test_packed_latents_unpack_to_their_channels_and_flux_factors_apply() -> None:
    channels = torch.arange(16, dtype=torch.float32).view(16, 1, 1).expand(16, 4, 6)
    packed = channels.view(1, 16, 2, 2, 3, 2).permute(0, 2, 4, 1, 3, 5).reshape(1, 6, 64)  # diffusers' packing
    unpacked = unpack(packed, height=32, width=48, vae_scale=8)
    assert unpacked is not None and torch.equal(unpacked, channels)
    assert unpack(packed, height=64, width=64, vae_scale=8) is None  # another size: no preview, no guess
    one = torch.zeros(16, 2, 2)
    one[4] = 1.0  # channel 4 is warm in FLUX's factors: more red than blue
    r, g, b = to_rgb(one).getpixel((0, 0))
    assert FLUX_RGB[4][0] > FLUX_RGB[4][2] and r > b
