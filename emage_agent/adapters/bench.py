"""The quality harness: EMage against single-shot and best-of-N on the same prompts and seeds.

Each mode runs as ordinary sessions of one agent (so one executor, models loaded once):

- ``single``: one image, judged;
- ``best_of_n``: N first images (``--candidates N``), the best kept;
- ``emage``: the full loop (judge, plan, repair) up to ``iterations``.

With ``equal_compute`` best-of-N gets as many images as the GPU seconds EMage spent on that prompt buy
(at the single image's cost), so the comparison is at equal compute. Per prompt and mode the table holds
the judge's score, success at the threshold, the detector's count/position accuracy on the final image
(when a detector is configured), GPU seconds and VLM calls; it is written as markdown, CSV and an HTML
gallery. Prompts come from EMage's JSONL (``prompt``, ``category``, ``objects``) or GenEval metadata
(``prompt``, ``tag``, ``include`` with ``class`` and ``count``).
"""

from __future__ import annotations

import csv
import html
import json
import math
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from emage_agent.core.detection import Detection, ObjectSpec
from emage_agent.core.errors import UserError
from emage_agent.core.tools import image_step_kinds

MODES = ("single", "best_of_n", "emage")
MAX_CANDIDATES = 8


class BenchPrompt(BaseModel):
    prompt: str
    category: str = "other"
    objects: list[ObjectSpec] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)  # the item's own run options (a JSONL line may set them)


class BenchRow(BaseModel):
    prompt: str
    category: str
    mode: str
    score: float | None
    success: bool
    detector_accuracy: float | None
    gpu_seconds: float
    vlm_calls: int
    images: int
    image: str | None
    session_dir: str


def load_prompts(path: Path) -> list[BenchPrompt]:
    """The prompts of ``path`` through batch's reader (text, JSONL items, bench records or GenEval metadata).

    Unlike a batch, a benchmark refuses a file with an unreadable line: its table would compare other sets.
    """
    from emage_agent.adapters.batch.items import read_items

    if not path.is_file():
        raise UserError(f"{path} is not a file; give a text or JSONL file with one prompt per line", field="PROMPTS")
    items, bad = read_items(path)
    if bad:
        raise UserError(f"{path}:{bad[0].line} is not a prompt record ({bad[0].message})", field="PROMPTS")
    return [BenchPrompt(prompt=i.prompt, category=i.category, objects=i.objects, options=i.options) for i in items]


def parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise UserError(f"unknown mode(s) {unknown}; modes are {', '.join(MODES)}", field="--modes")
    return modes


def detector_accuracy(detections: list[Detection], objects: list[ObjectSpec], confident: float) -> float | None:
    """Share of the prompt's objects whose count and position the detector confirms; None with nothing to check."""
    checks: list[bool] = []
    for spec in objects:
        found = [d for d in detections if d.label.casefold() == spec.name.casefold() and d.score >= confident]
        if spec.count is not None:
            checks.append(len(found) == spec.count)
        if spec.position is not None:
            best = max(found, key=lambda d: d.score, default=None)
            if best is None:
                checks.append(False)
            else:
                cy, cx = (best.box[0] + best.box[2]) / 2, (best.box[1] + best.box[3]) / 2
                where = {"left": cx < 500, "right": cx > 500, "top": cy < 500, "bottom": cy > 500}
                checks.append(where.get(spec.position, 300 < cx < 700))
    return round(sum(checks) / len(checks), 4) if checks else None


class Bench:
    """Runs the modes on the prompts with one agent and writes the table and gallery."""

    def __init__(
        self,
        agent: Any,
        out: Path,
        *,
        modes: list[str],
        n: int = 4,
        iterations: int = 3,
        threshold: float = 0.8,
        seed: int = 0,
        equal_compute: bool = False,
        session_options: dict[str, Any] | None = None,
    ) -> None:
        self.agent, self.out, self.modes = agent, Path(out), modes
        self.n, self.iterations, self.threshold, self.seed = n, iterations, threshold, seed
        self.equal_compute = equal_compute
        self.session_options = session_options or {}
        self.agent.root = self.out / "sessions"

    def _session(self, prompt: BenchPrompt, seed: int, **options: Any) -> tuple[Any, dict[str, Any]]:
        merged = {"threshold": self.threshold, "seed": seed, **self.session_options, **prompt.options, **options}
        if prompt.objects:
            merged["objects"] = [o.model_dump() for o in prompt.objects]  # the harness knows them: no VLM call
        session = self.agent.start(prompt.prompt, **merged)
        return session, session.run()

    def _row(self, prompt: BenchPrompt, mode: str, session: Any, summary: dict[str, Any]) -> BenchRow:
        info = session.store.info
        score = summary.get("satisfaction_score")
        accuracy = None
        settings = self.agent.settings
        detect = getattr(self.agent.executor, "detect", None)
        if settings.detector_enabled and detect is not None and prompt.objects and summary.get("final_image"):
            from PIL import Image

            with Image.open(summary["final_image"]) as image:
                found = detect(image.convert("RGB"), [o.name for o in prompt.objects])
            accuracy = detector_accuracy(found, prompt.objects, settings.detector_threshold)
        images = sum(1 for s in session.store.steps() if s.tool in image_step_kinds())
        return BenchRow(
            prompt=prompt.prompt,
            category=prompt.category,
            mode=mode,
            score=score,
            success=score is not None and score >= self.threshold,
            detector_accuracy=accuracy,
            gpu_seconds=round(info.gpu_seconds, 3),
            vlm_calls=info.vlm_calls,
            images=images,
            image=summary.get("final_image"),
            session_dir=str(session.dir),
        )

    def run(self, prompts: list[BenchPrompt]) -> list[BenchRow]:
        rows: list[BenchRow] = []
        for number, prompt in enumerate(prompts):
            seed = self.seed + 1000 * number
            done: dict[str, BenchRow] = {}
            order = sorted(self.modes, key=lambda m: m != "emage") if self.equal_compute else self.modes
            single_cost: float | None = None
            for mode in order:
                if mode == "single":
                    session, summary = self._session(prompt, seed, iterations=0)
                elif mode == "best_of_n":
                    n = self.n
                    if self.equal_compute and "emage" in done:
                        if single_cost is None:
                            probe, _ = self._session(prompt, seed, iterations=0)
                            single_cost = max(probe.store.info.gpu_seconds, 1e-6)
                        n = min(max(math.ceil(done["emage"].gpu_seconds / single_cost), 1), MAX_CANDIDATES)
                    session, summary = self._session(prompt, seed, iterations=0, candidates=n)
                else:
                    session, summary = self._session(prompt, seed, iterations=self.iterations)
                done[mode] = self._row(prompt, mode, session, summary)
                if mode == "single":
                    single_cost = max(done[mode].gpu_seconds, 1e-6)
            rows += [done[m] for m in self.modes]
        self.write(rows)
        return rows

    # ---- writing -------------------------------------------------------------------------
    def overall(self, rows: list[BenchRow]) -> list[dict[str, Any]]:
        table = []
        for mode in self.modes:
            mine = [r for r in rows if r.mode == mode]
            scores = [r.score for r in mine if r.score is not None]
            accuracies = [r.detector_accuracy for r in mine if r.detector_accuracy is not None]
            table.append(
                {
                    "mode": mode,
                    "prompts": len(mine),
                    "mean_score": round(sum(scores) / len(scores), 4) if scores else None,
                    "success_rate": round(sum(r.success for r in mine) / len(mine), 4) if mine else None,
                    "detector_accuracy": round(sum(accuracies) / len(accuracies), 4) if accuracies else None,
                    "gpu_seconds": round(sum(r.gpu_seconds for r in mine), 3),
                    "vlm_calls": sum(r.vlm_calls for r in mine),
                }
            )
        return table

    def write(self, rows: list[BenchRow]) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        fields = list(BenchRow.model_fields)
        with (self.out / "results.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(r.model_dump() for r in rows)
        overall = self.overall(rows)
        (self.out / "results.json").write_text(
            json.dumps({"overall": overall, "rows": [r.model_dump() for r in rows]}, indent=2), encoding="utf-8"
        )
        (self.out / "results.md").write_text(self._markdown(rows, overall), encoding="utf-8")
        (self.out / "gallery.html").write_text(self._gallery(rows), encoding="utf-8")

    def _markdown(self, rows: list[BenchRow], overall: list[dict[str, Any]]) -> str:
        def cell(value: Any) -> str:
            return "n/a" if value is None else str(value)

        lines = ["# EMage bench", "", f"threshold {self.threshold}, equal compute: {self.equal_compute}", ""]
        lines += ["| mode | prompts | mean score | success rate | detector accuracy | GPU s | VLM calls |"]
        lines += ["|---|---|---|---|---|---|---|"]
        for o in overall:
            values = [o[k] for k in ("mode", "prompts", "mean_score", "success_rate", "detector_accuracy")]
            lines.append("| " + " | ".join(cell(v) for v in values + [o["gpu_seconds"], o["vlm_calls"]]) + " |")
        lines += ["", "| prompt | category | mode | score | success | detector accuracy | GPU s | VLM calls |"]
        lines += ["|---|---|---|---|---|---|---|---|"]
        for r in rows:
            prompt = r.prompt.replace("|", "\\|")
            values = [prompt, r.category, r.mode, r.score, r.success, r.detector_accuracy, r.gpu_seconds, r.vlm_calls]
            lines.append("| " + " | ".join(cell(v) for v in values) + " |")
        return "\n".join(lines) + "\n"

    def _gallery(self, rows: list[BenchRow]) -> str:
        images = self.out / "images"
        images.mkdir(exist_ok=True)
        by_prompt: dict[str, dict[str, BenchRow]] = {}
        for r in rows:
            by_prompt.setdefault(r.prompt, {})[r.mode] = r
        head = "".join(f"<th>{html.escape(m)}</th>" for m in self.modes)
        body = []
        for number, (prompt, modes) in enumerate(by_prompt.items()):
            cells = []
            for mode in self.modes:
                r = modes.get(mode)
                if r is None or r.image is None:
                    cells.append("<td>no image</td>")
                    continue
                name = f"{number:03d}-{mode}.png"
                shutil.copyfile(r.image, images / name)
                caption = f"score {r.score if r.score is not None else 'n/a'} &middot; {r.gpu_seconds:.1f} GPU s"
                cells.append(f'<td><img src="images/{name}" width="256"><br>{caption}</td>')
            body.append(f"<tr><td>{html.escape(prompt)}</td>{''.join(cells)}</tr>")
        return (
            '<!doctype html><meta charset="utf-8"><title>EMage bench</title>'
            "<style>td,th{border:1px solid #ccc;padding:4px;vertical-align:top}</style>"
            f"<table><tr><th>prompt</th>{head}</tr>{''.join(body)}</table>"
        )
