"""The local backend on a tiny random-weight Qwen2.5-VL built on disk: constrained answers and a whole session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from emage_agent.api import Agent
from emage_agent.core.errors import UnreadableAnswer
from emage_agent.core.evaluation import Evaluation, Issue
from emage_agent.core.planning import PlanningContext, Recommendation
from emage_agent.core.settings import Settings
from emage_agent.core.tools import validate_arguments
from emage_agent.vlm import choose
from emage_agent.vlm.local import Evaluator, LocalClient, Planner, Rewriter, evaluation_schema, plan_schema
from tests.support.fixtures_gemini import make_png
from tests.support.tiny_vlm import build_tiny_vlm


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-qwen2.5-vl"))


@pytest.fixture
def local_settings(tiny_vlm: Path) -> Settings:
    return Settings(
        _env_file=None,
        vlm="local",
        device="cpu",
        dtype="float32",
        local_vlm_model=str(tiny_vlm),
        local_vlm_max_chars=12,
        local_vlm_max_new_tokens=400,
    )


def context(png: bytes | None, allowed: list[str] | None = None) -> PlanningContext:
    evaluation = Evaluation(
        satisfaction_score=0.4, issues=[Issue(category="object", severity=0.9, description="the fox is missing")]
    )
    return PlanningContext(
        prompt="a red fox on a blue car",
        original_prompt="a red fox on a blue car",
        evaluation=evaluation,
        recommendation=Recommendation(strategy="image_modification", reason="object missing"),
        image_png=png,
        allowed_tools=allowed or [],
        max_calls=2,
    )


def test_constrained_answers_follow_the_schema_where_free_decoding_does_not(local_settings: Settings) -> None:
    client = LocalClient(local_settings)
    schema = evaluation_schema(12)
    runner = client.runner
    assert not runner.loaded and runner.nbytes() == 0 and runner.planned_bytes() > 4 * 100_000
    constrained = runner.generate(None, "Judge the image.", [make_png()], schema, 400)  # loads the model
    assert constrained.finished
    Draft202012Validator(schema).validate(json.loads(constrained.text, strict=False))
    # the same model and prompt without the grammar: random weights write no JSON at all
    import torch

    encoded = runner._tokenizer(runner._prompt(None, "Judge the image.", 0), return_tensors="pt")
    with torch.inference_mode():
        out = runner._model.generate(**encoded, max_new_tokens=40, do_sample=False)
    unconstrained = runner._tokenizer.decode(out[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    with pytest.raises(json.JSONDecodeError):
        json.loads(unconstrained, strict=False)
    assert runner.parameter_count() > 100_000 and runner.nbytes() >= 4 * runner.parameter_count()


def test_evaluations_and_tool_calls_are_valid(local_settings: Settings) -> None:
    client = LocalClient(local_settings)
    for color in ((200, 30, 30), (20, 20, 220)):
        evaluation = Evaluator(client).evaluate(make_png(color), "a red fox", feedback=["the fox should sit"])
        assert 0.0 <= evaluation.satisfaction_score <= 1.0
        assert evaluation.issues[0].description == "the fox should sit" and evaluation.issues[0].severity == 1.0
    planner = Planner(client)
    for allowed in (None, ["make_mask"]):
        result = planner.plan(context(make_png(), allowed))
        assert result.calls and not result.errors, result
        for call in result.calls:
            validate_arguments(call.name, call.args)
            assert allowed is None or call.name in allowed
    rewrite = Rewriter(client).rewrite("a red fox", "a red fox", [])
    assert rewrite.source == "local" and "fox" in rewrite.prompt
    records = client.calls
    assert [r.purpose for r in records] == ["evaluate", "evaluate", "plan", "plan", "rewrite"]
    assert all(r.ok and r.backend == "local" and r.input_tokens and r.output_tokens for r in records)


def test_an_answer_cut_short_is_unreadable_not_guessed(local_settings: Settings) -> None:
    client = LocalClient(local_settings.model_copy(update={"local_vlm_max_new_tokens": 16}))
    with pytest.raises(UnreadableAnswer, match="did not finish"):
        Evaluator(client).evaluate(make_png(), "a red fox")
    assert client.calls[-1].ok is False
    rewrite = Rewriter(client).rewrite(
        "a red fox", "a red fox", [Issue(category="prompt", severity=1, description="x")]
    )
    assert rewrite.source == "offline"


def test_plan_schema_allows_only_the_allowed_tools() -> None:
    schema = plan_schema(["make_mask", "inpaint"], 2, 50)
    options = schema["properties"]["calls"]["items"]["anyOf"]
    assert [o["properties"]["tool"]["enum"] for o in options] == [["make_mask"], ["inpaint"]]
    inpaint = options[1]["properties"]["arguments"]["properties"]
    assert inpaint["prompt"]["maxLength"] == 50 and "guidance" not in inpaint  # floats left to their defaults
    assert "steps" not in inpaint and "seed" not in inpaint  # the session's options decide the cost


def test_whole_session_on_cpu_with_the_local_judge(
    local_settings: Settings, tiny_settings: Any, executor: Any, tmp_path: Path
) -> None:
    local = {k: v for k, v in local_settings.model_dump().items() if k.startswith(("local_vlm", "vlm"))}
    settings = tiny_settings.model_copy(update={**local, "session_root": tmp_path / "sessions"})
    assert choose(settings) == "local"
    agent = Agent(settings, executor=executor)
    agent.check_ready()
    session = agent.start("a red fox on a blue car", width=64, height=64, steps=2, seed=1, iterations=1, threshold=1.0)
    summary = session.run()
    assert summary["iterations"] >= 2 and summary["stopped_because"] in ("iteration_limit", "threshold")
    used = {"backend": "local", "model": str(local_settings.local_vlm_model)}
    assert summary["vlm"]["evaluate"] == used and summary["vlm"]["plan"] == used
    assert all(c["extra"]["backend"] == "local" and c["ok"] for c in session.store.calls())
    assert agent.vlm().client.runner.nbytes() > 0  # what the memory plan counts for the judge


def test_int8_shrinks_the_judge_and_its_answers_stay_valid(local_settings: Settings, tiny_vlm: Path) -> None:
    """EMAGE_QUANTIZE=int8 reaches the local VLM through the executor's quantize helpers (torchao, CPU)."""
    from emage_agent.executor.devices import tensor_bytes
    from emage_agent.executor.planner import count_config, vlm_bytes

    plain = LocalClient(local_settings)
    Evaluator(plain).evaluate(make_png(), "a red fox")
    client = LocalClient(local_settings.model_copy(update={"quantize": "int8"}))
    evaluation = Evaluator(client).evaluate(make_png(), "a red fox")
    assert 0.0 <= evaluation.satisfaction_score <= 1.0
    result = Planner(client).plan(context(make_png()))
    assert result.calls and not result.errors, result
    for call in result.calls:
        validate_arguments(call.name, call.args)
    runner = client.runner
    assert runner.quantize == "int8" and plain.runner.quantize == "none"
    layer = runner._model.model.language_model.layers[0].mlp.up_proj
    assert type(layer.weight).__name__ == "Int8Tensor"
    assert runner.nbytes() < 0.85 * plain.runner.nbytes()
    # the planner's count of this model's own config.json: exact in float32, an upper bound in int8
    counts = count_config(str(tiny_vlm / "config.json"))
    measured = {r: sum(tensor_bytes(p) for p in r._model.parameters()) for r in (plain.runner, runner)}
    assert measured[plain.runner] == vlm_bytes(str(tiny_vlm), "none", 4) == counts.total * 4
    assert counts.linear + counts.other * 4 < measured[runner] <= vlm_bytes(str(tiny_vlm), "int8", 4)


def test_the_executor_plans_with_the_local_vlm_it_shares_the_device_with(local_settings: Settings) -> None:
    from emage_agent.vlm import local_model

    assert Agent(local_settings).executor.local_vlm == local_settings.local_vlm_model
    cloud = local_settings.model_copy(update={"vlm": "gemini"})
    assert local_model(cloud) is None and Agent(cloud).executor.local_vlm is None
    assert local_model(cloud.model_copy(update={"planner_vlm": "local"})) == local_settings.local_vlm_model
    assert local_model(local_settings.model_copy(update={"vlm": "auto"})) is None  # CPU, no key: nothing chosen
    assert local_model(local_settings.model_copy(update={"vlm": "auto", "planner_vlm": "local"})) is not None


@pytest.mark.gpu
@pytest.mark.parametrize("quantize", ["fp8", "nf4"])
def test_cuda_quantized_judge_answers(local_settings: Settings, quantize: str) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if quantize == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9")
    cuda = local_settings.model_copy(update={"device": "cuda", "dtype": "bfloat16"})
    plain = LocalClient(cuda)
    Evaluator(plain).evaluate(make_png(), "a red fox")
    client = LocalClient(cuda.model_copy(update={"quantize": quantize}))
    evaluation = Evaluator(client).evaluate(make_png(), "a red fox")
    assert 0.0 <= evaluation.satisfaction_score <= 1.0
    result = Planner(client).plan(context(make_png()))
    assert result.calls and not result.errors, result
    assert client.runner.quantize == quantize and client.runner.nbytes() < plain.runner.nbytes()


def test_cuda_only_quantizations_of_the_judge_say_so_on_the_cpu(local_settings: Settings) -> None:
    from emage_agent.core.errors import UserError

    client = LocalClient(local_settings.model_copy(update={"quantize": "nf4"}))
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        Evaluator(client).evaluate(make_png(), "a red fox")


@pytest.mark.gpu
def test_constrained_answers_on_cuda(local_settings: Settings) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    client = LocalClient(local_settings.model_copy(update={"device": "cuda", "dtype": "bfloat16"}))
    evaluation = Evaluator(client).evaluate(make_png(), "a red fox")
    assert 0.0 <= evaluation.satisfaction_score <= 1.0 and client.runner.device == "cuda"
    result = Planner(client).plan(context(make_png()))
    assert result.calls and not result.errors
    assert client.runner.nbytes() == sum(p.numel() * 2 for p in client.runner._model.parameters()) + sum(
        b.numel() * b.element_size() for b in client.runner._model.buffers()
    )
