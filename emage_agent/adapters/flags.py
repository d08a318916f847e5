"""Command-line flags generated from the options model: each run option's flag, help and default once.

Why generated: ``run``, ``bench`` and ``chat`` each declared the run options by hand and drifted apart
(a flag one had, another lacked). A command declares its own arguments and takes ``**options``;
``option_flags`` adds a typed ``--flag`` for every run option it does not declare or exclude.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from emage_agent.core.options import PERSON_OPTIONS, RunOptions, option_default, option_help

F = TypeVar("F", bound=Callable[..., Any])


def flag(name: str) -> str:
    """The command-line spelling of an option: ``max_vlm_calls`` -> ``--max-vlm-calls``."""
    return "--" + name.replace("_", "-")


def _python_type(name: str) -> Any:
    """What typer parses the flag as: the field's type, a ``Literal`` as ``str`` (the model checks it)."""
    annotation = RunOptions.model_fields[name].annotation
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    members = typing.get_args(annotation) if union else ()
    optional = type(None) in members
    base = next(a for a in members if a is not type(None)) if optional else annotation
    if typing.get_origin(base) is typing.Literal:
        base = str
    return typing.Optional[base] if optional else base  # noqa: UP045 - typer reads Optional


def option_flags(*, exclude: tuple[str, ...] = (), defaults: bool = True) -> Callable[[F], F]:
    """Add the run options' flags to a typer command that takes ``**options``.

    ``defaults``: show the model's defaults (a new session); False leaves every flag unset (None) unless given,
    so a command passes on only what was asked for.
    """

    def wrap(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        taken = {p.name for p in params} | set(exclude)
        for name in (n for n in PERSON_OPTIONS if n not in taken):
            kind = _python_type(name)
            default = option_default(name) if defaults else None
            if not defaults and kind is bool:
                kind = typing.Optional[bool]  # noqa: UP045
            info = typer.Option(flag(name), help=option_help(name))
            annotation = Annotated[kind, info]  # type: ignore[valid-type]
            keyword = inspect.Parameter.KEYWORD_ONLY
            params.append(inspect.Parameter(name, keyword, default=default, annotation=annotation))
        func.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        func.__annotations__ = {p.name: p.annotation for p in params}
        return func

    return wrap
