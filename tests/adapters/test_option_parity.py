"""One options model, every way in: a way in that lacks a run option the others have fails here.

The ways in are read as a user meets them: the CLI's click parameters, MCP refine's published schema, a
batch JSONL line read back, the UI's controls, the bench flags, the API's continuing-session rules.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

from emage_agent.adapters.batch.items import read_items
from emage_agent.adapters.cli import app
from emage_agent.adapters.mcp.schemas import SCHEMAS
from emage_agent.api import FIXED_OPTIONS
from emage_agent.core.errors import UserError
from emage_agent.core.options import CONTINUING_OPTIONS, PERSON_OPTIONS, RunOptions, parse_options

EVERY = set(PERSON_OPTIONS)
# One value per option that differs from its default, so a way in that drops it shows.
SAMPLE = {
    "iterations": 2,
    "threshold": 0.7,
    "seed": 9,
    "width": 512,
    "height": 768,
    "steps": 4,
    "guidance": 2.0,
    "planner": "selector",
    "max_vlm_calls": 5,
    "max_gpu_seconds": 60.0,
    "adaptive_threshold": True,
    "adaptive_floor": 0.5,
    "adaptive_step": 0.1,
    "candidates": 3,
}


def _flags(command: str) -> set[str]:
    click_app = typer.main.get_command(app)
    return {p.name for p in click_app.commands[command].params}  # type: ignore[attr-defined]


def test_the_sample_sets_every_option_away_from_its_default() -> None:
    assert set(SAMPLE) == EVERY
    options = parse_options(**SAMPLE)
    assert all(getattr(options, k) != RunOptions.model_fields[k].default for k in SAMPLE)


def test_cli_run_and_chat_take_every_option() -> None:
    assert _flags("run") >= EVERY
    assert _flags("chat") >= EVERY


def test_bench_takes_every_option_but_the_candidates_best_of_n_sets() -> None:
    assert EVERY - {"candidates"} <= _flags("bench") and "candidates" not in _flags("bench")


def test_mcp_refine_takes_every_option() -> None:
    assert set(SCHEMAS["refine"]["properties"]) >= EVERY


def test_a_batch_item_sets_every_option(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps({"prompt": "a red fox", **SAMPLE}) + "\n")
    [item], bad = read_items(path)
    assert not bad and item.options == SAMPLE
    assert parse_options(**item.options).model_dump(include=EVERY) == SAMPLE


def test_the_ui_has_a_control_for_every_option(tmp_path: Path) -> None:
    from emage_agent.adapters.ui.app import build
    from emage_agent.adapters.ui.controls import UI_OPTIONS, label, read
    from emage_agent.adapters.ui.runs import Studio
    from tests.support.scripted import scripted_agent

    assert set(UI_OPTIONS) == EVERY
    [inputs] = [f.inputs for f in build(Studio(scripted_agent(tmp_path), tmp_path)).fns.values() if f.name == "run"]
    labels = {str(getattr(c, "label", "")).split(" (")[0] for c in inputs}
    assert {label(name) for name in EVERY} <= labels
    assert read(tuple(SAMPLE[n] for n in UI_OPTIONS)) == SAMPLE


def test_the_api_says_of_every_option_whether_a_continuing_session_may_change_it(tmp_path: Path) -> None:
    from tests.support.scripted import scripted_agent

    assert set(CONTINUING_OPTIONS) | (set(FIXED_OPTIONS) & EVERY) == EVERY
    session = scripted_agent(tmp_path).create("a red fox", iterations=0)
    session.configure(**{k: SAMPLE[k] for k in CONTINUING_OPTIONS})
    assert {k: session.store.info.options[k] for k in CONTINUING_OPTIONS} == {k: SAMPLE[k] for k in CONTINUING_OPTIONS}
    for name in set(FIXED_OPTIONS) & EVERY:
        with pytest.raises(UserError, match="cannot change for a continuing session"):
            session.configure(**{name: SAMPLE[name]})
    session.close()
