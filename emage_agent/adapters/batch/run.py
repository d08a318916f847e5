"""``emage-agent batch``: many prompts, each an ordinary session under ``DIR/items/<id>/``.

The batch holds ``DIR/.batch.lock`` (an OS lock, released even by ``kill -9``) so two batches
never write the same folder. Running the same command again reuses what is done, resumes what
was interrupted and retries what failed; the engine's pool does the running, this module reads
the input, shows progress and writes the results.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from emage_agent.adapters.batch.gallery import write_gallery
from emage_agent.adapters.batch.items import Item, read_items
from emage_agent.adapters.batch.results import JSONL_NAME, ResultRow, row_for, write_results
from emage_agent.core.errors import UserError
from emage_agent.core.settings import Settings
from emage_agent.engine import Job, Outcome, RateLimiter, SessionPool
from emage_agent.engine.backend import gpu_queue

LOCK_NAME = ".batch.lock"
NOT_STARTED = object()  # stands for the GPU queue while the agent checks its keys
GALLERY_EVERY_S = 5.0


class BatchOptions(BaseModel):
    prompts: Path
    out: Path
    defaults: dict[str, Any] = {}
    concurrency: int = 1
    retry_failed: bool = True
    ray: str | None = None
    ray_actors: int | None = None
    as_json: bool = False


@contextlib.contextmanager
def batch_lock(out: Path) -> Iterator[None]:
    """Hold ``out``'s lock for the life of the batch; refuse when another process holds it."""
    out.mkdir(parents=True, exist_ok=True)
    fh = open(out / LOCK_NAME, "a+")  # noqa: SIM115 (held open for the whole batch)
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise UserError(
                f"another batch ({holder}) is running on {out}; wait for it or use another --out", field="--out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        yield
    finally:
        fh.close()


class Display:
    """A rich progress bar (done / running / failed, images per minute, ETA), or JSON lines."""

    def __init__(self, total: int, err: Console, out: IO[str], as_json: bool) -> None:
        self.as_json, self.out, self.err = as_json, out, err
        self.done = self.failed = self.running = 0
        self.started = time.monotonic()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=as_json,
        )
        self.task = self.progress.add_task("batch", total=total, stats="")

    def stats(self, images: int) -> None:
        minutes = max(1e-9, (time.monotonic() - self.started) / 60)
        text = f"done {self.done} · running {self.running} · failed {self.failed} · {images / minutes:.1f} img/min"
        self.progress.update(self.task, completed=self.done + self.failed, stats=text)

    def finished(self, row: ResultRow, outcome: Outcome) -> None:
        self.running -= 1
        self.done += row.status == "done"
        self.failed += row.status == "failed"
        if self.as_json:
            self.out.write(json.dumps(row.model_dump(mode="json"), ensure_ascii=False) + "\n")
            self.out.flush()
            return
        score = "–" if row.score is None else f"{row.score:.2f}"
        style = "green" if row.status == "done" else "red"
        note = " (already done)" if outcome.reused else f" ({outcome.seconds:.1f}s)"
        line = f"[{style}]{row.status:>6}[/]  {escape(row.id)}  score {score}{note}"
        if row.error:
            line += f"  [red]{escape(row.error)}[/]"
        self.progress.console.print(line, soft_wrap=True, highlight=False)


def run_batch(settings: Settings, opts: BatchOptions, err: Console, out: IO[str] = sys.stdout) -> int:
    """Run the batch; returns the exit code (0 all done, 1 some failed or skipped)."""
    if opts.concurrency < 1:
        raise UserError("must be at least 1", field="--concurrency")
    items, bad = read_items(opts.prompts)
    from emage_agent.api import Agent

    # Keys and the VLM side first, before any model or actor starts; the GPU side is the queue's to check.
    Agent(settings, executor=NOT_STARTED).check_ready()
    with batch_lock(opts.out):
        for b in bad:
            err.print(f"emage-agent: {opts.prompts}:{b.line}: skipped: {b.message}", markup=False, soft_wrap=True)
        with gpu_queue(settings, opts.ray, opts.ray_actors) as queue:
            return _run(settings, opts, items, len(bad), queue, err, out)


def _run(
    settings: Settings, opts: BatchOptions, items: list[Item], skipped: int, queue: Any, err: Console, out: IO[str]
) -> int:
    from emage_agent.api import Agent

    agent = Agent(settings, root=opts.out / "items", executor=queue, limiter=RateLimiter(settings.vlm_rpm))
    pool = SessionPool(agent, concurrency=opts.concurrency, retry_failed=opts.retry_failed)
    jobs = [
        Job(key=i.id, prompt=i.prompt, options=opts.defaults | i.options, root=opts.out / "items" / i.folder)
        for i in items
    ]
    by_key = {i.id: i for i in items}
    rows: dict[str, ResultRow] = {}
    display = Display(len(items), err, out, opts.as_json)
    last_gallery = [0.0]

    def ordered() -> list[ResultRow]:
        return [rows[i.id] for i in items if i.id in rows]

    def on_start(job: Job) -> None:
        display.running += 1
        display.stats(queue.calls)

    def on_finish(job: Job, outcome: Outcome) -> None:
        row = rows[job.key] = row_for(by_key[job.key], outcome)
        display.finished(row, outcome)
        display.stats(queue.calls)
        write_results(opts.out, ordered())
        if time.monotonic() - last_gallery[0] > GALLERY_EVERY_S:
            write_gallery(opts.out, ordered())
            last_gallery[0] = time.monotonic()

    try:
        with display.progress:
            pool.run(jobs, on_start=on_start, on_finish=on_finish)
    finally:
        pool.stop()
        write_results(opts.out, ordered())
        write_gallery(opts.out, ordered())
    failed = sum(r.status == "failed" for r in rows.values())
    done = len(rows) - failed
    where = opts.out / JSONL_NAME
    lost = f", {queue.retries} step(s) rerun after losing a GPU worker" if queue.retries else ""
    line = f"{done} done, {failed} failed of {len(items)} item(s){lost}; gallery {opts.out / 'index.html'}"
    if skipped:
        line += f"; {skipped} input line(s) skipped (see above)"
    if failed or skipped:
        err.print(f"emage-agent: {line}; details in {where}", markup=False, soft_wrap=True)
        return 1
    err.print(f"emage-agent: {line}; results in {where}", markup=False, soft_wrap=True)
    return 0
