"""Where the data folders ``tools/`` and ``prompts/`` live, installed or not.

A wheel carries them as ``emage_agent/_data/{tools,prompts}``; a source checkout (and an
editable install) reads them from the project root. Neither is an import package, so an
embedding project's own ``tools`` module is never shadowed.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from emage_agent.core.errors import UserError


@cache
def data_dir(name: str) -> Traversable:
    """The folder ``name`` (``tools`` or ``prompts``) as shipped with this installation."""
    packaged = resources.files("emage_agent") / "_data" / name
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / name
    if checkout.is_dir():
        return checkout
    raise UserError(f"the {name}/ folder is missing from this installation; reinstall emage-agent")


def load_prompt(name: str, **variables: object) -> str:
    """The template ``prompts/<name>.md`` with ``{variables}`` filled in.

    Templates use ``str.format`` fields; a missing variable is a programming error.
    """
    path = data_dir("prompts") / f"{name}.md"
    if not path.is_file():
        raise UserError(f"no prompt template named {name!r}", field="prompt")
    text = path.read_text(encoding="utf-8")
    return text.format(**variables) if variables else text
