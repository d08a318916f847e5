"""The executor end to end: the real diffusers and transformers pipelines on the tiny family."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from emage_agent.core.errors import ExecutionFailure, ModelMistake, UserError
from emage_agent.executor import Executor, ToolOutput
from emage_agent.executor.control import canny_map
from emage_agent.executor.types import ExecutorCounters

FAST = {"steps": 2}
SMALL = {"width": 64, "height": 64, **FAST}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def test_generate_is_reproducible_from_its_seed(executor: Executor) -> None:
    first = executor.run("generate", {"prompt": "a red fox on a car", "seed": 7, **SMALL})
    again = executor.run("generate", {"prompt": "a red fox on a car", "seed": 7, **SMALL})
    other = executor.run("generate", {"prompt": "a red fox on a car", "seed": 8, **SMALL})
    assert isinstance(first, ToolOutput) and first.tool == "generate" and first.seed == 7
    assert first.image.size == (64, 64) and first.image.mode == "RGB"
    assert np.array_equal(pixels(first.image), pixels(again.image))
    assert not np.array_equal(pixels(first.image), pixels(other.image))
    assert first.seconds > 0


def test_generate_without_seed_reports_the_one_it_used(executor: Executor) -> None:
    out = executor.run("generate", {"prompt": "a lighthouse", "width": 80, "height": 64, **FAST})
    assert out.image.size == (80, 64)
    assert out.seed is not None and 0 <= out.seed < 2**32
    replay = executor.run("generate", {"prompt": "a lighthouse", "width": 80, "height": 64, "seed": out.seed, **FAST})
    assert np.array_equal(pixels(out.image), pixels(replay.image))


def test_on_step_reports_progress_and_may_cancel(executor: Executor) -> None:
    steps: list[tuple[int, int]] = []
    executor.run("generate", {"prompt": "a fox", "seed": 1, **SMALL}, on_step=lambda i, n: steps.append((i, n)))
    assert steps == [(1, 2), (2, 2)]

    class Cancelled(Exception):
        pass

    def cancel(step: int, total: int) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):  # the caller's own exception, not wrapped as a failure
        executor.run("generate", {"prompt": "a fox", "seed": 1, **SMALL}, on_step=cancel)


def test_embedding_cache_encodes_a_prompt_once(executor: Executor) -> None:
    prompt = "an embedding cache test prompt"
    executor.run("generate", {"prompt": prompt, "seed": 1, **SMALL})
    before = executor.counters
    executor.run("generate", {"prompt": prompt, "seed": 2, **SMALL})
    after_hit = executor.counters
    assert after_hit.embedding_hits == before.embedding_hits + 1
    assert after_hit.embedding_misses == before.embedding_misses
    executor.run("generate", {"prompt": prompt + " with a twist", "seed": 2, **SMALL})
    assert executor.counters.embedding_misses == before.embedding_misses + 1


def test_canny_edit_keeps_the_size_and_returns_its_edge_map(executor: Executor, tiny_image: Image.Image) -> None:
    args = {"prompt": "a blue block", "seed": 3, "strength": 0.6, "low_threshold": 50, "high_threshold": 150, **FAST}
    out = executor.run("canny_edit", args, {"image": tiny_image})
    assert out.image.size == tiny_image.size and out.seed == 3
    assert out.control.size == tiny_image.size
    assert np.array_equal(pixels(out.control), pixels(canny_map(tiny_image, 50, 150)))
    assert pixels(out.control).max() == 255  # the red block's outline was found
    again = executor.run("canny_edit", args, {"image": tiny_image})
    assert np.array_equal(pixels(out.image), pixels(again.image))


def test_depth_edit_keeps_the_size_and_returns_its_depth_map(executor: Executor, tiny_image: Image.Image) -> None:
    rgba = tiny_image.convert("RGBA")  # other modes are converted, not refused
    out = executor.run("depth_edit", {"prompt": "a blue block", "seed": 4, **FAST}, {"image": rgba})
    assert out.image.size == tiny_image.size and out.image.mode == "RGB"
    assert out.control.size == tiny_image.size and out.control.mode == "RGB"


def test_inpaint_leaves_every_pixel_outside_the_mask_unchanged(executor: Executor, tiny_image: Image.Image) -> None:
    made = executor.run("make_mask", {"box": [200, 250, 700, 800], "dilate": 2, "feather": 3}, {"image": tiny_image})
    out = executor.run(
        "inpaint", {"prompt": "a green ball", "seed": 5, **FAST}, {"image": tiny_image, "mask": made.mask}
    )
    before, after, mask = pixels(tiny_image), pixels(out.image), pixels(made.mask)
    assert out.image.size == tiny_image.size
    assert np.array_equal(after[mask == 0], before[mask == 0])
    assert (after[mask == 255] != before[mask == 255]).any()


def test_make_mask_covers_the_named_box(executor: Executor, tiny_image: Image.Image) -> None:
    out = executor.run("make_mask", {"box": [250, 125, 750, 500], "dilate": 0, "feather": 0}, {"image": tiny_image})
    expected = np.zeros((64, 64), dtype=bool)
    expected[16:48, 8:32] = True
    assert out.mask.mode == "L" and out.mask.size == (64, 64)
    assert np.array_equal(pixels(out.mask) > 0, expected)
    assert out.coverage == pytest.approx(expected.mean())
    assert out.note == "" and out.image is None and out.seed is None

    grown = executor.run("make_mask", {"box": [250, 125, 750, 500], "dilate": 4, "feather": 4}, {"image": tiny_image})
    assert (pixels(grown.mask)[expected] == 255).all()
    assert grown.coverage > out.coverage


def test_make_mask_segments_a_text_target_within_the_box(executor: Executor, tiny_image: Image.Image) -> None:
    # The tiny CLIPSeg answers 0.5 everywhere: above 0.4 the whole box is the target.
    args = {"target": "the red block", "box": [250, 250, 750, 750], "threshold": 0.4, "dilate": 0, "feather": 0}
    out = executor.run("make_mask", args, {"image": tiny_image})
    inside = np.zeros((64, 64), dtype=bool)
    inside[16:48, 16:48] = True
    mask = pixels(out.mask) > 0
    assert not mask[~inside].any()
    assert mask[inside].mean() > 0.95
    assert 0.2 < out.coverage <= 0.25


def test_make_mask_that_finds_nothing_tells_the_model_what_to_try(executor: Executor, tiny_image) -> None:
    with pytest.raises(ModelMistake) as info:
        executor.run(
            "make_mask", {"target": "a unicorn", "box": [0, 0, 500, 500], "threshold": 0.6}, {"image": tiny_image}
        )
    message = str(info.value)
    assert "'a unicorn'" in message and "0.60" in message and "lower threshold" in message and "box" in message


def test_make_mask_warns_when_it_covers_nearly_everything(executor: Executor, tiny_image: Image.Image) -> None:
    out = executor.run("make_mask", {"target": "everything", "threshold": 0.3}, {"image": tiny_image})
    assert out.coverage > 0.98
    assert out.note.startswith("warning:") and "box" in out.note


def test_counters_are_a_snapshot(executor: Executor) -> None:
    snapshot = executor.counters
    assert isinstance(snapshot, ExecutorCounters)
    snapshot.loads["vae"] = 99
    assert executor.counters.loads.get("vae") != 99


@pytest.fixture(scope="module")
def ran(tiny_settings, tiny_image):
    """A fresh executor that has run every tool once (make_mask twice)."""
    ex = Executor(tiny_settings)
    mask = ex.run("make_mask", {"box": [100, 100, 600, 600]}, {"image": tiny_image}).mask
    ex.run("generate", {"prompt": "a fox", "seed": 1, **SMALL})
    ex.run("canny_edit", {"prompt": "a fox", "seed": 1, **FAST}, {"image": tiny_image})
    ex.run("depth_edit", {"prompt": "a fox", "seed": 1, **FAST}, {"image": tiny_image})
    ex.run("inpaint", {"prompt": "a fox", "seed": 1, **FAST}, {"image": tiny_image, "mask": mask})
    ex.run("make_mask", {"target": "the fox", "threshold": 0.3}, {"image": tiny_image})
    yield ex
    ex.close()


class TestOneFamilyInMemory:
    """A fresh executor running every tool: each weight read once, the shared parts shared."""

    def test_every_pipeline_holds_the_very_same_encoders_and_vae(self, ran: Executor) -> None:
        pipelines = ran.models().loaded_pipelines()
        assert set(pipelines) == {"generate", "canny_edit", "depth_edit", "inpaint"}
        base = pipelines["generate"]
        for pipe in pipelines.values():
            for name in ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
                assert getattr(pipe, name) is getattr(base, name), name
        assert len({id(p.transformer) for p in pipelines.values()}) == 4
        assert type(pipelines["canny_edit"]).__name__ == "FluxControlImg2ImgPipeline"
        assert type(pipelines["inpaint"]).__name__ == "FluxFillPipeline"

    def test_each_weight_file_is_read_once(self, ran: Executor, tiny_family) -> None:
        counters = ran.counters
        weights = ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "depth_estimator", "segmenter")
        for component in weights + tuple(f"transformer:{v}" for v in ("base", "canny", "depth", "fill")):
            assert counters.loads[component] == 1, component
        files = [tiny_family.base / sub for sub in ("vae", "text_encoder", "text_encoder_2")]
        files += [getattr(tiny_family, v) / "transformer" for v in ("base", "canny", "depth", "fill")]
        files += [tiny_family.depth_estimator, tiny_family.segmenter]
        expected = sum(f.stat().st_size for folder in files for f in folder.glob("*.safetensors"))
        assert counters.bytes_read == expected
        assert counters.device == "cpu" and counters.residency == "resident"
        assert counters.bytes_moved == 0  # on the CPU nothing crosses a bus
        assert counters.tool_calls == {"make_mask": 2, "generate": 1, "canny_edit": 1, "depth_edit": 1, "inpaint": 1}
        assert all(seconds > 0 for seconds in counters.tool_seconds.values())

    def test_a_second_call_reads_nothing_from_disk(self, ran: Executor, tiny_image: Image.Image) -> None:
        before = ran.counters
        ran.run("generate", {"prompt": "a fox", "seed": 2, **SMALL})
        ran.run("canny_edit", {"prompt": "a fox", "seed": 2, **FAST}, {"image": tiny_image})
        ran.run("depth_edit", {"prompt": "a fox", "seed": 2, **FAST}, {"image": tiny_image})
        ran.run("make_mask", {"target": "the fox", "threshold": 0.3}, {"image": tiny_image})
        after = ran.counters
        assert after.bytes_read == before.bytes_read
        assert after.loads == before.loads
        assert after.embedding_hits == before.embedding_hits + 3


def test_make_mask_loads_no_flux_model(tiny_settings, tiny_image: Image.Image) -> None:
    ex = Executor(tiny_settings)
    ex.run("make_mask", {"target": "the block", "threshold": 0.3}, {"image": tiny_image})
    assert set(ex.counters.loads) == {"segmenter", "segmenter_processor"}
    ex.close()


def test_close_frees_models_and_a_later_run_loads_again(tiny_settings, tiny_image: Image.Image) -> None:
    with Executor(tiny_settings) as ex:
        ex.run("make_mask", {"target": "x", "threshold": 0.3}, {"image": tiny_image})
        ex.close()
        ex.run("make_mask", {"target": "x", "threshold": 0.3}, {"image": tiny_image})
        assert ex.counters.loads["segmenter"] == 2


def test_a_model_setting_that_cannot_load_names_its_variable(tiny_settings, tmp_path) -> None:
    ex = Executor(tiny_settings.model_copy(update={"base_model": str(tmp_path / "missing")}))
    with pytest.raises(UserError) as info:
        ex.run("generate", {"prompt": "a fox", "seed": 1, **SMALL})
    assert info.value.field == "EMAGE_BASE_MODEL"
    assert not isinstance(info.value, ExecutionFailure)


@pytest.mark.gpu
@pytest.mark.parametrize("residency", ["resident", "swap", "offload"])
def test_generate_on_cuda(tiny_settings, tiny_image: Image.Image, residency: str) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    settings = tiny_settings.model_copy(update={"device": "cuda", "dtype": "auto", "residency": residency})
    with Executor(settings) as ex:
        first = ex.run("generate", {"prompt": "a fox", "seed": 11, **SMALL})
        again = ex.run("generate", {"prompt": "a fox", "seed": 11, **SMALL})
        ex.run("canny_edit", {"prompt": "a fox", "seed": 11, **FAST}, {"image": tiny_image})
        counters = ex.counters
    assert first.image.size == (64, 64)
    assert np.array_equal(pixels(first.image), pixels(again.image))
    assert counters.device == "cuda" and counters.residency == residency
    assert counters.bytes_to_device > 0
    assert counters.loads["vae"] == 1 and counters.loads["transformer:base"] == 1
