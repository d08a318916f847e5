"""Reading a prompt file, for ``batch`` and ``bench`` alike: text (one prompt a line) or JSONL (one item a line:
EMage's items with run options, bench records with a category and objects, or GenEval metadata).

A line that cannot be read is reported with its number and skipped; it never stops the batch (``bench``
refuses the file instead). An item whose options are wrong is still an item: it fails on its own.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from emage_agent.core.detection import ObjectSpec
from emage_agent.core.errors import UserError
from emage_agent.core.options import PERSON_OPTIONS

OPTION_KEYS = frozenset(PERSON_OPTIONS)  # every run option a CLI run takes, from the options model
ITEM_KEYS = OPTION_KEYS | {"id", "prompt", "size", "category", "objects"}
GENEVAL_KEYS = frozenset({"tag", "include", "exclude"})  # GenEval's metadata lines: the tag is the category
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class Item(BaseModel):
    """One prompt of the batch with its own session options; ``line`` is 1-based."""

    id: str
    prompt: str
    options: dict[str, Any] = Field(default_factory=dict)
    line: int
    category: str = "other"  # what a benchmark groups its scores by
    objects: list[ObjectSpec] = Field(default_factory=list)  # what a detector can check

    @property
    def folder(self) -> str:
        """A file-system-safe folder name for the item, distinct for distinct ids."""
        slug = _UNSAFE.sub("-", self.id).strip(".-")[:60]
        if slug == self.id:
            return slug
        return f"{slug or 'item'}-{hashlib.sha256(self.id.encode()).hexdigest()[:8]}"


class BadLine(BaseModel):
    line: int
    message: str


def _size(value: Any) -> dict[str, Any]:
    """``"512x768"``, ``[512, 768]`` or ``512`` (square) as width and height."""
    if isinstance(value, int) and not isinstance(value, bool):
        return {"width": value, "height": value}
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*[xX]\s*\d+\s*", value):
        w, h = re.split(r"[xX]", value)
        return {"width": int(w), "height": int(h)}
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return {"width": value[0], "height": value[1]}
    raise ValueError(f"size must look like 1024x768, [1024, 768] or 1024, not {value!r}")


def _geneval_objects(include: list[dict[str, Any]]) -> list[ObjectSpec]:
    out = []
    for entry in include:
        position = entry.get("position")
        where = None
        if isinstance(position, list) and position and isinstance(position[0], str):
            word = position[0].split()[0]
            where = {"left": "left", "right": "right", "above": "top", "below": "bottom"}.get(word)
        out.append(ObjectSpec(name=str(entry.get("class", "object")), count=entry.get("count"), position=where))
    return out


def _json_item(text: str, number: int) -> Item:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise ValueError("a JSONL item must be an object with a 'prompt'")
    if "include" in data:  # GenEval metadata
        if not isinstance(data["include"], list) or not all(isinstance(e, dict) for e in data["include"]):
            raise ValueError("'include' must be a list of objects (GenEval metadata)")
        objects = [o.model_dump() for o in _geneval_objects(data["include"])]
        tag = {"category": data["tag"]} if "tag" in data else {}
        data = {k: v for k, v in data.items() if k not in GENEVAL_KEYS} | {"objects": objects} | tag
    unknown = sorted(set(data) - ITEM_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(ITEM_KEYS))}")
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("'prompt' must be a non-empty string")
    raw_id = data.get("id", f"line-{number}")
    if not isinstance(raw_id, str | int) or isinstance(raw_id, bool) or not str(raw_id).strip():
        raise ValueError("'id' must be a non-empty string or an integer")
    options = {k: v for k, v in data.items() if k in OPTION_KEYS}
    if "size" in data:
        options |= _size(data["size"])
    extra = {k: data[k] for k in ("category", "objects") if k in data}
    try:
        return Item(id=str(raw_id).strip(), prompt=prompt.strip(), options=options, line=number, **extra)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def read_items(path: Path) -> tuple[list[Item], list[BadLine]]:
    """The items of ``path`` and the lines skipped. JSONL when the name ends .jsonl or lines start with '{'."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path} does not exist", field="PROMPTS") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} cannot be read as UTF-8 text ({type(exc).__name__})", field="PROMPTS") from None
    filled = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    as_json = Path(path).suffix.lower() in (".jsonl", ".ndjson") or (bool(filled) and filled[0].startswith("{"))
    items: list[Item] = []
    bad: list[BadLine] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            item = _json_item(text, number) if as_json else Item(id=f"line-{number}", prompt=text, line=number)
        except ValueError as exc:
            bad.append(BadLine(line=number, message=str(exc)))
            continue
        if item.id in first_line:
            bad.append(BadLine(line=number, message=f"duplicate id {item.id!r} (first on line {first_line[item.id]})"))
            continue
        first_line[item.id] = number
        items.append(item)
    if not items and not bad:
        raise UserError(f"{path} holds no prompt", field="PROMPTS")
    return items, bad
