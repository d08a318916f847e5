"""The tool registry: one object per contract with its traits, and a switched-off tool absent from every list."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client

from emage_agent.adapters.mcp.server import build_server
from emage_agent.core.settings import Settings
from emage_agent.core.tools import (
    TOOL_NAMES,
    available_tools,
    get_tool,
    image_step_kinds,
    load_contracts,
    registry,
    repair_tool_for,
    tool_names,
)
from tests.support.scripted import scripted_agent

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "emage_agent"


def test_every_contract_has_exactly_one_tool_with_its_family() -> None:
    assert list(registry()) == list(TOOL_NAMES) and set(registry()) == set(load_contracts())
    families = {name: tool.family for name, tool in registry().items()}
    assert families == {
        "generate": "dev",
        "canny_edit": "canny",
        "depth_edit": "depth",
        "inpaint": "fill",
        "edit": "kontext",
        "make_mask": "none",
        "rewrite_prompt": "none",
    }


def test_argument_traits_follow_the_contracts() -> None:
    for tool in registry().values():
        props = tool.contract.parameters["properties"]
        assert tool.needs_mask == ("mask" in props)
        assert tool.takes_prompt == ("prompt" in props)
        assert tool.edits_image == (tool.makes_image and "image" in props)
    assert image_step_kinds() == {"upload", "generate", "canny_edit", "depth_edit", "inpaint", "edit"}
    assert get_tool("make_mask").prepares == "inpaint" and get_tool("inpaint").needs_mask


def test_the_instruction_edit_repairs_objects_and_style_only_while_on() -> None:
    assert [repair_tool_for(c, True) for c in ("object", "style", "spatial")] == ["edit", "edit", "depth_edit"]
    assert [repair_tool_for(c, False) for c in ("object", "style", "prompt")] == [
        "inpaint",
        "canny_edit",
        "rewrite_prompt",
    ]
    assert "edit" in tool_names(True) and "edit" not in tool_names(False)
    off = Settings(_env_file=None, kontext_model="none")
    assert available_tools(off) == [n for n in TOOL_NAMES if n != "edit"]


def test_no_module_outside_the_registry_spells_a_tool_name_in_a_set_or_an_if() -> None:
    names = "|".join(TOOL_NAMES)
    quoted = rf"""["'](?:{names})["']"""
    patterns = [
        re.compile(rf"\b(?:if|elif|and|or)\b[^\n:]*(?:==|!=)\s*{quoted}"),  # an if-chain on a name
        re.compile(rf"\bin\s*[\(\[\{{](?:[^\)\]\}}]*){quoted}"),  # a membership test against a literal
        re.compile(rf"frozenset\(\{{[^}}]*{quoted}"),  # a set of names
    ]
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).as_posix() == "core/tools.py":
            continue
        text = path.read_text(encoding="utf-8")
        found += [f"{path.relative_to(ROOT)}: {m.group(0)}" for p in patterns for m in p.finditer(text)]
    assert not found, found


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAGE_")}
    return {**env, **extra}


@pytest.mark.parametrize("fmt", ["json", "mcp", "gemini", "openai"])
def test_tools_command_omits_a_switched_off_tool(tmp_path: Path, fmt: str) -> None:
    def listed(**extra: str) -> set[str]:
        out = subprocess.run(
            [sys.executable, "-m", "emage_agent.adapters.cli", "tools", "--format", fmt],
            env=_env(**extra),
            cwd=tmp_path,
            text=True,
            capture_output=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        items = json.loads(out.stdout)
        return {i.get("name") or i.get("function", {}).get("name") for i in items}

    assert listed() == set(TOOL_NAMES)
    assert listed(EMAGE_KONTEXT_MODEL="none") == set(TOOL_NAMES) - {"edit"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_mcp_lists_no_switched_off_tool(tmp_path: Path) -> None:
    agent = scripted_agent(tmp_path, [0.5])
    off = build_server(lambda: agent, settings=Settings(_env_file=None, session_root=tmp_path, kontext_model="none"))
    on = build_server(lambda: agent, settings=Settings(_env_file=None, session_root=tmp_path))
    async with Client(off) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("edit", {"instruction": "make it blue", "session_id": "x"})
    assert "edit" not in names and {"generate", "inpaint", "refine"} <= names
    assert result.is_error and "unknown tool 'edit'" in result.content[0].text
    async with Client(on) as client:
        assert "edit" in {t.name for t in (await client.list_tools()).tools}
