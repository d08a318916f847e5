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
import os
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from emage_agent.adapters.batch.results import spreadsheet_cell
from emage_agent.core.detection import Detection, ObjectSpec
from emage_agent.core.errors import EmageError, UserError
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


def bootstrap_ci(values: list[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    """The 95% percentile-bootstrap interval of the mean (seeded: the same rows give the same interval)."""
    import random

    if len(values) < 2:
        return None
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=len(values))) / len(values) for _ in range(rounds))
    return round(means[int(0.025 * rounds)], 4), round(means[int(0.975 * rounds) - 1], 4)


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
        self.say: Any = lambda line: None  # progress lines ("[2/15] emage: a red fox ..."), set by the CLI
        self.loading_seconds: float | None = None  # the warm-up's GPU seconds: model loading, not counted
        self._detector_failed = False

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
        wanted = settings.detector_enabled and not self._detector_failed and prompt.objects
        if wanted and detect is not None and summary.get("final_image"):
            from PIL import Image

            try:
                with Image.open(summary["final_image"]) as image:
                    found = detect(image.convert("RGB"), [o.name for o in prompt.objects])
                accuracy = detector_accuracy(found, prompt.objects, settings.detector_threshold)
            except EmageError as exc:  # reported once; the bench goes on without detector accuracy
                self._detector_failed = True
                self.say(f"detector off for this bench: {exc} (EMAGE_DETECTOR=none skips it)")
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

    def warm_up(self, prompt: BenchPrompt) -> None:
        """Load the models with one image that counts for no mode, so no mode pays for loading."""
        self.say("loading the models (one warm-up image, not counted) ...")
        root, self.agent.root = self.agent.root, self.out / "warm-up"
        try:
            session, _ = self._session(prompt, self.seed, iterations=0)
            self.loading_seconds = round(session.store.info.gpu_seconds, 3)
        finally:
            self.agent.root = root
        self.say(f"models loaded: the warm-up took {self.loading_seconds} GPU s")

    def run(self, prompts: list[BenchPrompt]) -> list[BenchRow]:
        rows: list[BenchRow] = []
        self.warm_up(prompts[0])
        total = len(prompts) * len(self.modes)
        for number, prompt in enumerate(prompts):
            seed = self.seed + 1000 * number
            done: dict[str, BenchRow] = {}
            order = sorted(self.modes, key=lambda m: m != "emage") if self.equal_compute else self.modes
            single_cost: float | None = None
            for mode in order:
                self.say(f"[{len(rows) + len(done) + 1}/{total}] {mode}: {prompt.prompt[:70]}")
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
                    "mean_score_ci95": bootstrap_ci(scores),
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
            writer.writerows({k: spreadsheet_cell(v) for k, v in r.model_dump().items()} for r in rows)
        overall = self.overall(rows)
        (self.out / "results.json").write_text(
            json.dumps(
                {
                    "overall": overall,
                    "model_loading_gpu_seconds": self.loading_seconds,
                    "rows": [r.model_dump() for r in rows],
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        (self.out / "results.md").write_text(self._markdown(rows, overall), encoding="utf-8")
        (self.out / "gallery.html").write_text(self._gallery(rows), encoding="utf-8")

    def _markdown(self, rows: list[BenchRow], overall: list[dict[str, Any]]) -> str:
        def cell(value: Any) -> str:
            return "n/a" if value is None else str(value)

        lines = ["# EMage bench", "", f"threshold {self.threshold}, equal compute: {self.equal_compute}", ""]
        lines += [f"model loading (a warm-up image, counted in no mode): {cell(self.loading_seconds)} GPU s", ""]
        lines += ["| mode | prompts | mean score | 95% CI | success rate | detector accuracy | GPU s | VLM calls |"]
        lines += ["|---|---|---|---|---|---|---|---|"]
        for o in overall:
            ci = o["mean_score_ci95"]
            values = [o["mode"], o["prompts"], o["mean_score"], f"{ci[0]}-{ci[1]}" if ci else None]
            values += [o["success_rate"], o["detector_accuracy"], o["gpu_seconds"], o["vlm_calls"]]
            lines.append("| " + " | ".join(cell(v) for v in values) + " |")
        lines += ["", "| prompt | category | mode | score | success | detector accuracy | GPU s | VLM calls |"]
        lines += ["|---|---|---|---|---|---|---|---|"]
        for r in rows:
            prompt = r.prompt.replace("|", "\\|")
            values = [prompt, r.category, r.mode, r.score, r.success, r.detector_accuracy, r.gpu_seconds, r.vlm_calls]
            lines.append("| " + " | ".join(cell(v) for v in values) + " |")
        return "\n".join(lines) + "\n"

    def _gallery(self, rows: list[BenchRow]) -> str:
        """A self-contained page: the per-mode summary (with 95% intervals), then each prompt's images side by
        side, each linked to its session's report."""
        images = self.out / "images"
        images.mkdir(exist_ok=True)
        e = html.escape
        summary = "".join(
            f"<tr><td>{e(o['mode'])}</td><td>{o['prompts']}</td><td>{_num(o['mean_score'])}</td>"
            f"<td>{_ci(o['mean_score_ci95'])}</td><td>{_num(o['success_rate'])}</td>"
            f"<td>{_num(o['gpu_seconds'])}</td><td>{o['vlm_calls']}</td></tr>"
            for o in self.overall(rows)
        )
        by_prompt: dict[str, dict[str, BenchRow]] = {}
        for r in rows:
            by_prompt.setdefault(r.prompt, {})[r.mode] = r
        head = "".join(f"<th>{e(m)}</th>" for m in self.modes)
        body = []
        for number, (prompt, modes) in enumerate(by_prompt.items()):
            cells = []
            for mode in self.modes:
                r = modes.get(mode)
                if r is None or r.image is None:
                    cells.append("<td class=none>no image</td>")
                    continue
                name = f"{number:03d}-{mode}.png"
                shutil.copyfile(r.image, images / name)
                report = Path(r.session_dir) / "report.html"
                link = Path(os.path.relpath(report, self.out)).as_posix()
                ok = "ok" if r.success else "no"
                caption = f"<span class={ok}>{_num(r.score)}</span> · {r.gpu_seconds:.1f} GPU s · {r.vlm_calls} VLM"
                cells.append(f'<td><img src="images/{name}" alt=""><br>{caption} · <a href="{e(link)}">report</a></td>')
            category = e(next(iter(modes.values())).category)
            body.append(f"<tr><td class=prompt>{e(prompt)}<br><small>{category}</small></td>{''.join(cells)}</tr>")
        loading = _num(self.loading_seconds)
        return (
            '<!doctype html><html lang="en"><meta charset="utf-8"><title>EMage bench</title>'
            f"<style>{GALLERY_CSS}</style><h1>EMage bench</h1>"
            f"<p>threshold {self.threshold} · equal compute: {self.equal_compute} · model loading (warm-up, "
            f"counted in no mode): {loading} GPU s</p>"
            "<table><tr><th>mode</th><th>prompts</th><th>mean score</th><th>95% CI (bootstrap)</th>"
            f"<th>success rate</th><th>GPU s</th><th>VLM calls</th></tr>{summary}</table>"
            f"<table class=grid><tr><th>prompt</th>{head}</tr>{''.join(body)}</table></html>\n"
        )


GALLERY_CSS = (
    "body{font:14px system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:12px 0}"
    "td,th{border:1px solid #ddd;padding:6px 8px;vertical-align:top;text-align:left}th{background:#f5f5f5}"
    ".grid img{width:256px;height:auto;display:block;margin-bottom:4px}.prompt{max-width:260px}"
    ".ok{color:#07722f;font-weight:600}.no{color:#a33;font-weight:600}.none{color:#999}small{color:#777}"
)


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _ci(ci: tuple[float, float] | None) -> str:
    return "n/a" if ci is None else f"{ci[0]:g} to {ci[1]:g}"
