"""The seed's documented usage, verbatim apart from the settings that point it at the tiny models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from tests.support.fake_gemini import evaluation_reply, function_call_reply

PROMPT = "a red fox sitting on the roof of a blue car"
STYLE = {"category": "style", "severity": 0.8, "description": "the car should be blue", "target": "car"}


def test_seed_example_runs_end_to_end(
    tiny_settings: Any, gemini_settings: Any, executor: Any, fake_gemini: Any, tmp_path: Path
) -> None:
    from flux_vlm_pipeline.pipeline import FluxVLMPipeline

    evals = iter([(0.55, [STYLE]), (0.9, [])])

    def reply(request: Any) -> Any:
        if request.purpose == "evaluate":
            score, issues = next(evals)
            return evaluation_reply(score, issues, summary=f"score {score}")
        if request.purpose == "plan":
            return function_call_reply(("canny_edit", {"prompt": PROMPT, "steps": 2}))
        return None

    fake_gemini.handler = reply
    gemini = {k: v for k, v in gemini_settings.model_dump().items() if k.startswith("gemini_")}
    settings = tiny_settings.model_copy(update={**gemini, "session_root": tmp_path / "sessions"})

    pipeline = FluxVLMPipeline(settings, executor=executor)
    result = pipeline.generate_and_evaluate(
        prompt=PROMPT,
        num_iterations=3,
        guidance_scale=3.5,
        num_inference_steps=2,
        seed=42,
        width=64,
        height=64,
    )

    final_image = result["final_image"]
    assert isinstance(final_image, Image.Image) and final_image.size == (64, 64)
    assert result["final_prompt"] == PROMPT
    assert result["satisfaction_score"] == 0.9
    history = result["history"]
    assert [h["tool"] for h in history] == ["generate", "canny_edit"]
    assert [h["satisfaction_score"] for h in history] == [0.55, 0.9]
    final_image.save(tmp_path / "final.png")  # the example's last line
    assert (tmp_path / "final.png").stat().st_size > 0
