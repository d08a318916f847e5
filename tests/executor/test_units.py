"""The executor's pure parts: device choice, mask geometry, compositing."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from emage_agent.core.errors import UserError
from emage_agent.core.settings import Settings
from emage_agent.executor import resolve_device
from emage_agent.executor.devices import resolve_dtype
from emage_agent.executor.inpainting import paste_back
from emage_agent.executor.loading import weight_bytes
from emage_agent.executor.masks import box_pixels, clean, grow_and_feather
from emage_agent.executor.models import PromptCache


def test_device_cpu_is_taken_at_its_word() -> None:
    import torch

    settings = Settings(_env_file=None, device="cpu")
    assert resolve_device(settings) == "cpu"
    assert resolve_dtype(settings, "cpu") is torch.float32
    assert resolve_dtype(Settings(_env_file=None, dtype="auto"), "cuda") is torch.bfloat16
    assert resolve_dtype(Settings(_env_file=None, dtype="float16"), "cpu") is torch.float16


def test_auto_device_without_cuda_is_a_user_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(UserError) as info:
        resolve_device(Settings(_env_file=None, device="auto"))
    assert info.value.field == "EMAGE_DEVICE"
    assert "no CUDA GPU found; set EMAGE_DEVICE=cpu to run on the CPU (hours for the 12B models)" in str(info.value)
    with pytest.raises(UserError, match="EMAGE_DEVICE"):
        resolve_device(Settings(_env_file=None, device="cuda"))


def test_importing_the_executor_loads_no_heavy_library() -> None:
    code = (
        "import sys, emage_agent.executor as e; e.Executor, e.ToolOutput;"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_prompt_cache_evicts_the_least_recently_used() -> None:
    cache = PromptCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (1, 3)


def test_weight_bytes_counts_the_weights_a_load_reads(tmp_path) -> None:
    folder = tmp_path / "transformer"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "diffusion_pytorch_model-00001-of-00002.safetensors").write_bytes(b"x" * 100)
    (folder / "diffusion_pytorch_model-00002-of-00002.safetensors").write_bytes(b"x" * 50)
    (folder / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"x" * 75)  # a variant: not read
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"x" * 1000)  # safetensors win
    assert weight_bytes(str(tmp_path), "transformer") == 150
    assert weight_bytes("no-such-org/no-such-repo", "transformer") == 0


def test_box_pixels_round_outwards_and_never_vanish() -> None:
    assert box_pixels([250, 250, 750, 750], 64, 64) == (16, 16, 48, 48)
    assert box_pixels([0, 0, 1000, 1000], 64, 32) == (0, 0, 32, 64)
    top, left, bottom, right = box_pixels([10, 10, 11, 11], 64, 64)
    assert bottom - top >= 1 and right - left >= 1
    assert box_pixels([999, 999, 1000, 1000], 64, 64) == (63, 63, 64, 64)


def test_clean_fills_holes_and_drops_specks() -> None:
    binary = np.zeros((200, 200), dtype=np.uint8)
    binary[50:150, 50:150] = 255
    binary[90:110, 90:110] = 0  # a hole inside the object
    binary[5, 5] = 255  # a speck
    cleaned = clean(binary)
    assert cleaned[100, 100] == 255
    assert cleaned[5, 5] == 0
    assert cleaned[60:140, 60:140].all()
    assert not cleaned[:40].any()


def test_grow_and_feather_keep_the_core_and_soften_outwards() -> None:
    hard = np.zeros((100, 100), dtype=np.uint8)
    hard[40:60, 40:60] = 255
    grown = grow_and_feather(hard, dilate=5, feather=0)
    assert grown[35:65, 40:60].all() and grown[40:60, 35:65].all()
    assert not grown[:30].any()
    soft = grow_and_feather(hard, dilate=0, feather=6)
    assert (soft[40:60, 40:60] == 255).all()
    assert 0 < soft[50, 37] < 255  # the soft edge lies outside the object
    assert soft[50, 10] == 0


def test_paste_back_keeps_every_pixel_outside_the_mask() -> None:
    rng = np.random.default_rng(0)
    original = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    generated = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    weights = np.zeros((64, 64), dtype=np.uint8)
    weights[10:40, 20:50] = 255
    weights[10:40, 50:54] = 90  # a soft edge
    out = np.asarray(paste_back(original, generated, Image.fromarray(weights)))
    outside = weights == 0
    assert np.array_equal(out[outside], np.asarray(original)[outside])
    assert np.array_equal(out[20:30, 30:40], np.asarray(generated)[20:30, 30:40])  # the core is the new pixels


class _Probe:
    """A stand-in model class: records what ``from_pretrained`` was asked for."""

    seen: dict = {}

    @classmethod
    def from_pretrained(cls, source: str, **kwargs: object) -> _Probe:
        cls.seen = {"source": source, **kwargs}
        return cls()


def test_loader_passes_the_token_and_dtype_but_never_logs_the_token(tmp_path, caplog) -> None:
    import logging

    import torch

    from emage_agent.executor.loading import Loader
    from emage_agent.executor.types import ExecutorCounters

    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"x" * 64)
    counters = ExecutorCounters()
    loader = Loader(Settings(_env_file=None, hf_token="hf_do_not_print"), counters)
    with caplog.at_level(logging.DEBUG):
        loader.load("vae", _Probe, str(tmp_path), field="EMAGE_BASE_MODEL", subfolder="vae", dtype=torch.float32)
    assert _Probe.seen == {
        "source": str(tmp_path),
        "subfolder": "vae",
        "token": "hf_do_not_print",
        "torch_dtype": torch.float32,
    }
    assert "hf_do_not_print" not in caplog.text
    assert counters.loads == {"vae": 1} and counters.bytes_read == 64
    Loader(Settings(_env_file=None), counters).load("tokenizer", _Probe, "org/repo", field="F", weights=False)
    assert "token" not in _Probe.seen and counters.bytes_read == 64
