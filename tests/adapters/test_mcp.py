"""The MCP server through the SDK's own client, in process: schemas, results, progress, errors, paths.

The agent is the real ``Agent`` (loop, store, selector) on scripted collaborators
(``test_mcp_support``); the tiny-FLUX + fake-Gemini runs are in ``test_mcp_flux.py``.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.types import ImageContent, ResourceLink, TextContent
from PIL import Image

from emage_agent.adapters.mcp.server import build_server, thumbnail
from emage_agent.core.errors import ExecutionFailure
from emage_agent.core.resources import data_dir
from tests.support.scripted import ScriptedExecutor, fake_png, scripted_agent

pytestmark = pytest.mark.anyio
CONTRACTS = ("generate", "canny_edit", "depth_edit", "inpaint", "edit", "make_mask", "rewrite_prompt")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "sessions"


@pytest.fixture
def agent(root: Path) -> Any:
    return scripted_agent(root, [0.5, 0.6, 0.9])


@pytest.fixture
def server(agent: Any) -> Any:
    return build_server(lambda: agent)


def image_of(result: Any) -> Image.Image:
    blocks = [c for c in result.content if isinstance(c, ImageContent)]
    assert len(blocks) == 1, result.content
    raw = base64.b64decode(blocks[0].data)
    assert len(raw) < 1024 * 1024
    return Image.open(io.BytesIO(raw))


def link_of(result: Any) -> str:
    return next(c for c in result.content if isinstance(c, ResourceLink)).uri


def text_of(result: Any) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


async def generate(client: Client, **extra: Any) -> Any:
    args = {"prompt": "a red fox on a blue car", "width": 512, "height": 384, "steps": 3, "seed": 5, **extra}
    result = await client.call_tool("generate", args)
    assert not result.is_error, text_of(result)
    return result


async def test_tools_carry_the_contract_schemas_plus_session_id(server: Any) -> None:
    async with Client(server) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
    assert set(listed) == {*CONTRACTS, "evaluate", "refine", "session_history", "revert"}
    for name in CONTRACTS:
        contract = json.loads((data_dir("tools") / f"{name}.json").read_text())
        schema = listed[name].input_schema
        assert schema["properties"].pop("session_id")["type"] == "string"
        assert schema == contract["parameters"], name
        assert listed[name].description == contract["description"]
    assert listed["refine"].input_schema["additionalProperties"] is False
    assert listed["revert"].input_schema["required"] == ["session_id", "step"]


async def test_generate_starts_a_session_and_returns_a_thumbnail(server: Any, root: Path) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async with Client(server) as client:
        args = {"prompt": "a red fox on a blue car", "width": 512, "height": 384, "steps": 3}
        result = await client.call_tool("generate", args, progress_callback=on_progress)
        assert not result.is_error, text_of(result)
        data = result.structured_content
        assert data["artifact_id"] == "s1-image" and data["ok"] is True
        assert json.loads(result.content[0].text) == data
        full = Path(data["image"])
        assert full.is_file() and full.resolve().is_relative_to(root.resolve())
        with Image.open(full) as img:
            assert img.size == (512, 384)
        assert max(image_of(result).size) == 256
        uri = link_of(result)
        assert uri == f"emage://sessions/{data['session_id']}/artifacts/s1-image"
        read = await client.read_resource(uri)
        blob = read.contents[0]
        assert blob.mime_type == "image/png"
        assert Image.open(io.BytesIO(base64.b64decode(blob.blob))).size == (512, 384)
    values = [p[0] for p in progress]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert sum("diffusion" in (p[2] or "") for p in progress) == 3


async def test_mask_then_inpaint_in_the_same_session(server: Any, agent: Any) -> None:
    async with Client(server) as client:
        sid = (await generate(client)).structured_content["session_id"]
        mask = await client.call_tool("make_mask", {"target": "the fox", "session_id": sid})
        assert not mask.is_error, text_of(mask)
        assert mask.structured_content["artifact_id"] == "s2-mask"
        assert "25%" in mask.structured_content["note"]
        assert image_of(mask).mode == "L"
        mask_path = mask.structured_content["image"]  # a file inside the root names the same artifact
        fixed = await client.call_tool(
            "inpaint", {"prompt": "a red fox", "mask": mask_path, "image": "s1-image", "steps": 2, "session_id": sid}
        )
        assert not fixed.is_error, text_of(fixed)
        assert fixed.structured_content["artifact_id"] == "s3-image"
    tool, args, inputs = agent.executor.calls[-1]
    assert (tool, inputs) == ("inpaint", ["image", "mask"])


async def test_refine_runs_the_loop_then_continues_with_feedback(server: Any, agent: Any) -> None:
    progress: list[str] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with Client(server, mode="legacy") as client:  # JSON-RPC over the in-memory transport
        args = {
            "prompt": "a red fox on a blue car",
            "width": 64,
            "height": 64,
            "steps": 2,
            "iterations": 3,
            "planner": "selector",
        }
        first = await client.call_tool("refine", args, progress_callback=on_progress)
        assert not first.is_error, text_of(first)
        data = first.structured_content
        assert data["satisfaction_score"] == 0.9 and data["stopped_because"] == "threshold"
        assert [h["tool"] for h in data["history"]] == ["generate", "canny_edit", "canny_edit"]
        assert Path(data["final_image"]).is_file() and max(image_of(first).size) <= 256
        assert any(m.startswith("score") for m in progress) and any(m.startswith("stopped") for m in progress)

        again = await client.call_tool("refine", {"session_id": data["session_id"], "feedback": "make the fox bigger"})
        assert not again.is_error, text_of(again)
    assert any("make the fox bigger" in seen["feedback"] for seen in agent.evaluator.seen)
    on_disk = json.loads((Path(data["session_dir"]) / "summary.json").read_text())
    assert on_disk["session_id"] == data["session_id"]
    tools = [h["tool"] for h in on_disk["history"]]
    assert "feedback" in tools and tools[tools.index("feedback") + 1] == "canny_edit"  # a request gets a repair


async def test_history_and_revert(server: Any) -> None:
    async with Client(server) as client:
        sid = (await generate(client)).structured_content["session_id"]
        edit = await client.call_tool("canny_edit", {"prompt": "a blue car", "steps": 2, "session_id": sid})
        assert edit.structured_content["artifact_id"] == "s2-image"
        history = await client.call_tool("session_history", {"session_id": sid})
        assert [h["tool"] for h in history.structured_content["history"]] == ["generate", "canny_edit"]
        assert history.structured_content["head_step"] == 2
        back = await client.call_tool("revert", {"session_id": sid, "step": 1})
        assert not back.is_error, text_of(back)
        assert back.structured_content["head_step"] == 1
        assert back.structured_content["image"].endswith("step-001.png")
        assert link_of(back).endswith("/artifacts/s1-image")
        after = await client.call_tool("session_history", {"session_id": sid})
        assert after.structured_content["head_step"] == 1
        missing = await client.call_tool("revert", {"session_id": sid, "step": 99})
        assert missing.is_error and "no step 99" in text_of(missing)


async def test_evaluate_by_path_and_by_artifact(server: Any, root: Path, agent: Any) -> None:
    picture = fake_png(root / "uploads" / "picture.png")
    async with Client(server) as client:
        by_path = await client.call_tool("evaluate", {"image": "uploads/picture.png", "prompt": "a blue square"})
        assert not by_path.is_error, text_of(by_path)
        assert set(by_path.structured_content) >= {"satisfaction_score", "issues", "summary"}
        assert agent.evaluator.seen[-1]["prompt"] == "a blue square"
        absolute = await client.call_tool("evaluate", {"image": str(picture), "prompt": "a blue square"})
        assert not absolute.is_error
        sid = (await generate(client)).structured_content["session_id"]
        by_id = await client.call_tool("evaluate", {"image": "s1-image", "session_id": sid})
        assert not by_id.is_error, text_of(by_id)
        assert by_id.structured_content["prompt"] == "a red fox on a blue car"
        current = await client.call_tool("evaluate", {"image": "current", "session_id": sid})
        assert not current.is_error, text_of(current)
        assert current.structured_content["image"] == "current"
        no_session = await client.call_tool("evaluate", {"image": "s1-image", "prompt": "x"})
        assert no_session.is_error and "session_id" in text_of(no_session)


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("evaluate", {"image": "../outside.png", "prompt": "x"}),
        ("evaluate", {"image": "OUTSIDE", "prompt": "x"}),
        ("evaluate", {"image": "/etc/passwd", "prompt": "x"}),
        ("evaluate", {"image": "uploads/escape.png", "prompt": "x"}),
        ("session_history", {"session_id": "../elsewhere"}),
        ("session_history", {"session_id": "OUTSIDE_DIR"}),
        ("refine", {"session_id": "..", "feedback": "more"}),
    ],
)
async def test_paths_outside_the_root_are_refused(server: Any, root: Path, tool: str, args: dict[str, Any]) -> None:
    outside = fake_png(root.parent / "outside.png")
    (root / "uploads").mkdir(parents=True)
    (root / "uploads" / "escape.png").symlink_to(outside)
    (root.parent / "elsewhere").mkdir()
    args = {
        k: v.replace("OUTSIDE_DIR", str(root.parent / "elsewhere")).replace("OUTSIDE", str(outside))
        for k, v in args.items()
    }
    async with Client(server) as client:
        result = await client.call_tool(tool, args)
    assert result.is_error
    field = "image" if tool == "evaluate" else "session_id"
    assert text_of(result).startswith(f"bad input: {field}: ")
    assert result.structured_content["field"] == field


async def test_an_artifact_path_of_another_session_is_refused(server: Any, root: Path) -> None:
    async with Client(server) as client:
        first = (await generate(client)).structured_content
        second = (await generate(client)).structured_content
        result = await client.call_tool(
            "canny_edit", {"prompt": "x", "image": first["image"], "session_id": second["session_id"]}
        )
    assert result.is_error and "is not an artifact of session" in text_of(result)


@pytest.mark.parametrize(
    ("tool", "args", "needle"),
    [
        ("make_mask", {"target": "the fox"}, "session_id: make_mask works on a session's image"),
        ("generate", {"prompt": "x", "width": 65}, "width"),
        ("generate", {"prompt": "x", "colour": "red"}, "colour"),
        ("generate", {"prompt": "x", "session_id": 7}, "session_id"),
        ("refine", {"feedback": "bigger"}, "feedback: "),
        ("refine", {}, "prompt: "),
        ("refine", {"prompt": "x", "session_id": "abc"}, "not both"),
        ("refine", {"prompt": "x", "iterations": 101}, "iterations"),  # the options model's limit, as in the CLI
        ("session_history", {"session_id": "no-such-session"}, "session_id"),
        ("inpaint", {"prompt": "x", "mask": "s9-mask", "session_id": "SID"}, "mask: no artifact 's9-mask'"),
    ],
)
async def test_bad_calls_are_tool_errors_and_the_server_lives_on(
    server: Any, tool: str, args: dict[str, Any], needle: str
) -> None:
    async with Client(server) as client:
        if args.get("session_id") == "SID":
            args["session_id"] = (await generate(client)).structured_content["session_id"]
        result = await client.call_tool(tool, args)
        assert result.is_error
        assert needle in text_of(result)
        assert not (await generate(client)).is_error


async def test_execution_failures_come_back_as_tool_errors(root: Path) -> None:
    class Broken(ScriptedExecutor):
        def run(self, tool: str, args: dict[str, Any], images: Any = None, on_step: Any = None) -> Any:
            if tool == "depth_edit":
                raise ExecutionFailure("CUDA out of memory while running depth_edit")
            return super().run(tool, args, images, on_step)

    agent = scripted_agent(root)
    agent._executor = Broken()
    async with Client(build_server(lambda: agent)) as client:
        sid = (await generate(client)).structured_content["session_id"]
        result = await client.call_tool("depth_edit", {"prompt": "x", "steps": 2, "session_id": sid})
        assert result.is_error
        assert text_of(result) == "failed: CUDA out of memory while running depth_edit"
        assert result.structured_content["error"] == "ExecutionFailure"
        assert not (await client.call_tool("session_history", {"session_id": sid})).is_error


async def test_agent_is_built_once_and_only_when_needed(root: Path) -> None:
    built: list[Any] = []

    def factory() -> Any:
        built.append(scripted_agent(root))
        return built[-1]

    async with Client(build_server(factory)) as client:
        await client.list_tools()
        assert built == []
        await generate(client)
        await generate(client)
    assert len(built) == 1


async def test_calls_run_one_at_a_time(root: Path) -> None:
    class Watched(ScriptedExecutor):
        active = peak = 0
        guard = threading.Lock()

        def run(self, tool: str, args: dict[str, Any], images: Any = None, on_step: Any = None) -> Any:
            with self.guard:
                self.active += 1
                self.peak = max(self.peak, self.active)
            time.sleep(0.05)
            try:
                return super().run(tool, args, images, on_step)
            finally:
                with self.guard:
                    self.active -= 1

    agent = scripted_agent(root)
    agent._executor = watched = Watched()
    results: list[Any] = []
    async with Client(build_server(lambda: agent)) as client:

        async def one() -> None:
            results.append(await client.call_tool("generate", {"prompt": "x", "width": 64, "height": 64, "steps": 2}))

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(one)
    assert len({r.structured_content["session_id"] for r in results}) == 3
    assert all(not r.is_error for r in results)
    assert watched.peak == 1


def test_thumbnails_are_small(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.effect_noise((1200, 900), 80).convert("RGB").save(big)  # noise: the worst case for PNG
    data = thumbnail(big)
    assert len(data) < 256 * 1024
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (256, 192) and img.format == "PNG"
