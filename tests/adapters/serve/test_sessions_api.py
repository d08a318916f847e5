"""The session API over plain HTTP (httpx): start, follow the SSE stream, read, feedback, revert, stop, resume.

A real uvicorn server on 127.0.0.1 with scripted models; the sessions are ordinary session folders.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from emage_agent.session import SessionStore
from tests.support.serving import SlowExecutor, scripted_state, serving

FAST = {"size": "64x64", "planner": "selector"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, SlowExecutor, Any]]:
    root = tmp_path_factory.mktemp("serve-sessions")
    state, executor, gpu = scripted_state(root, concurrency=2, queue=4)
    with serving(state) as url:
        yield url, root, executor, gpu


@pytest.fixture
def http(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], timeout=30) as client:
        yield client


def events(http: httpx.Client, session_id: str, last: int | None = None) -> list[dict[str, Any]]:
    """Every event of the stream until its end."""
    seen: list[dict[str, Any]] = []
    headers = {"Last-Event-ID": str(last)} if last is not None else {}
    with http.stream("GET", f"/v1/sessions/{session_id}/events", headers=headers) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                seen.append({"kind": kind, **json.loads(line.removeprefix("data: "))})
    return seen


def wait_for(http: httpx.Client, session_id: str, status: set[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = http.get(f"/v1/sessions/{session_id}").json()
        if body["status"] in status:
            return body
        assert time.monotonic() < deadline, body["status"]
        time.sleep(0.05)


def test_start_follow_and_read_a_session(http: httpx.Client, server: Any) -> None:
    started = http.post("/v1/sessions", json={"prompt": "a red fox", "iterations": 2, **FAST})
    assert started.status_code == 202
    sid = started.json()["id"]
    assert started.json()["status"] in ("queued", "running")
    stream = events(http, sid)
    kinds = [e["kind"] for e in stream]
    assert kinds[-1] == "end" and kinds.count("score") == 3 and "stopped" in kinds  # a first image, two repairs
    assert [e["id"] for e in stream] == list(range(len(stream)))
    assert all(e["session_id"] == sid for e in stream)
    body = http.get(f"/v1/sessions/{sid}").json()
    assert body["status"] == "done" and body["stopped_because"] == "iteration_limit"
    assert [s["step"] for s in body["steps"]] == [1, 2, 3] and body["score"] == 0.5
    image = http.get(body["best_image_url"])
    assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).size == (64, 64)
    assert (server[1] / sid / "summary.json").is_file() and (server[1] / sid / "report.html").is_file()
    replay = events(http, sid, last=len(stream) - 3)  # a reconnect resumes after the last event it saw
    assert [e["kind"] for e in replay] == kinds[-2:]
    assert sid in [row["id"] for row in http.get("/v1/sessions").json()["data"]]


def test_feedback_then_revert(http: httpx.Client, server: Any) -> None:
    sid = http.post("/v1/sessions", json={"prompt": "an owl", "iterations": 1, **FAST}).json()["id"]
    before = len(wait_for(http, sid, {"done"})["steps"])
    answer = http.post(f"/v1/sessions/{sid}/feedback", json={"text": "make the owl blue", "iterations": 1})
    assert answer.status_code == 202
    assert events(http, sid)[-1]["kind"] == "end"
    body = wait_for(http, sid, {"done"})
    assert [s["tool"] for s in body["steps"]][before] == "feedback" and len(body["steps"]) > before + 1
    reverted = http.post(f"/v1/sessions/{sid}/revert", json={"step": 1})
    assert reverted.status_code == 200
    with SessionStore.open(server[1] / sid) as store:
        assert store.info.head_step == 1
    bad = http.post(f"/v1/sessions/{sid}/revert", json={"step": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "step"


def test_delete_stops_at_a_step_boundary_and_resume_continues(http: httpx.Client, server: Any) -> None:
    executor = server[2]
    executor.delay = 0.15
    try:
        sid = http.post("/v1/sessions", json={"prompt": "a slow heron", "iterations": 8, **FAST}).json()["id"]
        wait_for(http, sid, {"running"})
        stopped = http.delete(f"/v1/sessions/{sid}")
        assert stopped.status_code == 202 and stopped.json()["stopping"] is True
        body = wait_for(http, sid, {"interrupted"})
        assert body["stopped_because"] == "stopped" and len(body["steps"]) < 9
        again = http.post(f"/v1/sessions/{sid}/resume", json={"iterations": 1})
        assert again.status_code == 202
        done = wait_for(http, sid, {"done"})
        assert len(done["steps"]) == len(body["steps"]) + 1
    finally:
        executor.delay = 0.0


def test_two_clients_at_once_share_the_gpu_side_by_side(server: Any) -> None:
    url, _root, executor, gpu = server
    executor.delay = 0.05
    executor.threads.clear()
    answers: dict[str, Any] = {}

    def client(name: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            body = {"prompt": f"a {name} on a roof", "size": "64x64", "iterations": 3, "planner": "selector"}
            answers[name] = http.post("/v1/images/generations", json=body)

    try:
        threads = [threading.Thread(target=client, args=(n,)) for n in ("fox", "owl")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        executor.delay = 0.0
    assert all(a.status_code == 200 and len(a.json()["data"]) == 1 for a in answers.values()), answers
    assert answers["fox"].headers["x-emage-session"] != answers["owl"].headers["x-emage-session"]
    assert executor.most_inside == 1 and gpu.max_overlap == 1  # one GPU job at a time
    assert len(set(executor.threads)) == 2  # each request's session on its own thread
    switches = sum(a != b for a, b in zip(executor.threads, executor.threads[1:], strict=False))
    assert switches >= 2, "the two requests ran one after the other, not side by side"


def test_unknown_sessions_and_bad_ids_are_404_in_openai_shape(http: httpx.Client) -> None:
    for path in ("/v1/sessions/nope", "/v1/sessions/..%2f..%2fetc", "/v1/sessions/nope/images/1", "/v1/nowhere"):
        answer = http.get(path)
        assert answer.status_code == 404, path
        assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    assert http.post("/v1/sessions", content=b"{not json").status_code == 400
    assert http.get("/health").json()["status"] == "ok"
    queue = http.get("/v1/queue").json()
    assert {"running", "waiting", "capacity", "gpu"} <= set(queue) and queue["gpu"]["workers"] == ["SlowExecutor"]
    assert "/v1/images/generations" in http.get("/openapi.json").json()["paths"]


def test_a_foreign_host_is_refused(server: Any) -> None:
    answer = httpx.get(server[0] + "/health", headers={"Host": "evil.example:80"})
    assert answer.status_code == 421
    answer = httpx.get(server[0] + "/health", headers={"Origin": "http://evil.example"})
    assert answer.status_code == 403


def test_a_client_that_goes_away_does_not_lose_its_session(http: httpx.Client, server: Any) -> None:
    url, root, executor, _gpu = server
    executor.delay = 0.1
    before = {p.name for p in root.iterdir()}
    try:
        body = {"prompt": "an impatient crane", "iterations": 2, **FAST}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/images/generations", json=body, timeout=0.2)  # gone mid-request
    finally:
        executor.delay = 0.0
    deadline = time.monotonic() + 30
    while not (new := [p.name for p in root.iterdir() if p.name not in before and (p / "session.db").is_file()]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    done = wait_for(http, new[0], {"done"})
    assert len(done["steps"]) == 3 and new[0] in [row["id"] for row in http.get("/v1/sessions").json()["data"]]


def test_a_repeated_start_with_the_same_key_is_one_session(http: httpx.Client, server: Any) -> None:
    body = {"prompt": "a single swan", "iterations": 1, **FAST}
    key = {"Idempotency-Key": f"swan-{time.monotonic()}"}
    first = http.post("/v1/sessions", json=body, headers=key)
    again = http.post("/v1/sessions", json=body, headers=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert sum(row["prompt"] == "a single swan" for row in http.get("/v1/sessions").json()["data"]) == 1
    wait_for(http, first.json()["id"], {"done"})
