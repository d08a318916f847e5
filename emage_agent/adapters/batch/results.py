"""A batch's results: ``results.jsonl`` and ``results.csv`` (one row per item, in input order).

Both are rewritten atomically, so a reader (or a killed batch) never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from emage_agent.adapters.batch.items import Item
from emage_agent.engine import Outcome
from emage_agent.session import atomic_write_bytes

JSONL_NAME, CSV_NAME = "results.jsonl", "results.csv"


class ResultRow(BaseModel):
    """One item's result; the columns of both files, in this order."""

    id: str
    prompt: str
    status: Literal["done", "failed"]
    score: float | None = None
    stopped_because: str | None = None
    best_image: str | None = None
    session_dir: str | None = None
    steps: int = 0
    gpu_seconds: float = 0.0
    vlm_calls: int = 0
    error: str | None = None


def row_for(item: Item, outcome: Outcome) -> ResultRow:
    summary = outcome.summary or {}
    return ResultRow(
        id=item.id,
        prompt=item.prompt,
        status=outcome.status,
        score=summary.get("satisfaction_score"),
        stopped_because=summary.get("stopped_because"),
        best_image=summary.get("final_image"),
        session_dir=str(outcome.session_dir) if outcome.session_dir else None,
        steps=outcome.steps,
        gpu_seconds=outcome.gpu_seconds,
        vlm_calls=outcome.vlm_calls,
        error=outcome.error,
    )


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: one that would start a formula gets a leading quote (OWASP)."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def write_results(out: Path, rows: list[ResultRow]) -> None:
    jsonl = "".join(json.dumps(r.model_dump(mode="json"), ensure_ascii=False) + "\n" for r in rows)
    atomic_write_bytes(out / JSONL_NAME, jsonl.encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(ResultRow.model_fields), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: spreadsheet_cell(v) for k, v in r.model_dump(mode="json").items()})
    atomic_write_bytes(out / CSV_NAME, buf.getvalue().encode())
