"""The page's option controls, generated from the options model: one control per run option, read back typed.

Why generated: the page declared its own options (a subset, with its own limits) and fell behind the CLI;
here every run option gets a control from its type, limits and help, so the page offers what the CLI does.
"""

from __future__ import annotations

from typing import Any

from emage_agent.core.errors import UserError
from emage_agent.core.options import OPTION_ALIASES, PERSON_OPTIONS, option_default, option_help, option_schema

UI_OPTIONS: tuple[str, ...] = PERSON_OPTIONS  # the order the controls appear in and ``Page.run`` takes them
MAX_SLIDER_SPAN = 100  # a wider range gets a number box: a slider would be too coarse to set
# Typed as text: an emptied number box sends 0, and 0 is a seed, so "empty = random" needs a text box.
TEXT_OPTIONS: dict[str, str] = {"seed": "a random seed"}
EMPTY_LABELS: dict[str, str] = {"seed": "random"}  # what an empty box means, in its label


def label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def defaults(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every option's starting value on the page: the model's default, unless the caller presets it."""
    return {name: option_default(name) for name in UI_OPTIONS} | dict(overrides or {})


def control(name: str, value: Any) -> Any:
    """A Gradio control for one option, from its JSON Schema (type, limits) and help."""
    import gradio as gr

    schema = option_schema(name)
    kind, info = schema.get("type"), option_help(name)
    if name in TEXT_OPTIONS or (kind in ("integer", "number") and option_default(name) is None):
        # a text box: an emptied gr.Number sends 0 once shown, which is not "unset" (seed 0, a budget of 0)
        text = "" if value is None else str(value)
        empty = EMPTY_LABELS.get(name, "default")
        return gr.Textbox(value=text, label=f"{label(name)} (empty: {empty})", max_lines=1, info=info)
    if kind == "boolean":
        return gr.Checkbox(value=bool(value), label=label(name), info=info)
    if "enum" in schema:
        choices = [c for c in schema["enum"] if c not in OPTION_ALIASES.get(name, {})]  # older names: not offered
        return gr.Radio(choices, value=value, label=label(name), info=info)
    low, high = schema.get("minimum"), schema.get("maximum")
    if value is not None and low is not None and high is not None and high - low <= MAX_SLIDER_SPAN:
        step = 1 if kind == "integer" else 0.01
        return gr.Slider(low, high, value=value, step=step, label=label(name), info=info)
    precision = 0 if kind == "integer" else None
    hint = " (empty: default)" if option_default(name) is None else ""  # a box holding a value shows its default
    return gr.Number(value=value, precision=precision, label=f"{label(name)}{hint}", info=info)


def read(values: tuple[Any, ...]) -> dict[str, Any]:
    """The controls' values (in ``UI_OPTIONS`` order) as run options; an empty box means the default."""
    if len(values) != len(UI_OPTIONS):
        raise ValueError(f"expected {len(UI_OPTIONS)} option values, got {len(values)}")
    options: dict[str, Any] = {}
    for name, value in zip(UI_OPTIONS, values, strict=True):
        kind = option_schema(name).get("type")
        if kind == "boolean":
            options[name] = value is True  # the browser sends a bool; anything else means off
        elif value is None or (isinstance(value, str) and not value.strip()):
            continue
        elif kind == "integer":
            options[name] = _whole(name, value)
        elif kind == "number":
            options[name] = _number(name, value)
        else:
            options[name] = str(value)
    return options


def _refuse(name: str, what: str) -> UserError:
    schema = option_schema(name)
    low, high = schema.get("minimum"), schema.get("maximum")
    span = f" from {_shown(low)} to {_shown(high)}" if low is not None and high is not None else ""
    empty = TEXT_OPTIONS.get(name, "the default")
    return UserError(f"must be {what}{span}, or empty for {empty}", field=name)


def _shown(limit: float) -> str:
    return str(int(limit)) if float(limit).is_integer() else str(limit)


def _whole(name: str, value: Any) -> int:
    """A whole number from a box (or a script): ``3``, ``3.0`` or ``"3"``; anything else names the option."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit():
        raise _refuse(name, "a whole number")
    return int(text)


def _number(name: str, value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value)
    except (TypeError, ValueError):
        raise _refuse(name, "a number") from None
