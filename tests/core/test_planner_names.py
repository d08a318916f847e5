"""Honest names: planner ``vlm`` (``gemini`` still read as it) and ``VLMUnavailable`` for every backend."""

from __future__ import annotations

import pytest

from emage_agent.core import errors
from emage_agent.core.errors import UserError
from emage_agent.core.options import RunOptions, parse_options


def test_vlm_is_the_planner_by_default_and_gemini_is_read_as_vlm() -> None:
    assert RunOptions().planner == "vlm"
    assert parse_options(planner="gemini").planner == "vlm"
    assert RunOptions(**{"planner": "gemini", "iterations": 2}).planner == "vlm"  # a stored older session
    assert parse_options(planner="selector").planner == "selector"


def test_an_unknown_planner_names_the_field_and_the_choices() -> None:
    with pytest.raises(UserError, match=r"^planner: .*'vlm' or 'selector'"):
        parse_options(planner="claude")


def test_the_unavailable_error_is_named_for_every_backend() -> None:
    assert issubclass(errors.VLMUnavailable, errors.ExecutionFailure)
    assert not hasattr(errors, "GeminiUnavailable")
