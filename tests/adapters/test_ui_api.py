"""The UI's scriptable API through Gradio's own client (``gradio_client``) against the served page on loopback.

Only the public actions are endpoints, under stable names with labelled outputs and optional options;
a person's mistake comes back as one status line and leaves no traceback in the server log. The agent
is the real ``Agent`` and loop over scripted judges, with the tiny random-weight FLUX executor, so an
empty seed really is chosen at random by the executor and reported back.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emage_agent.adapters.ui import Studio
from tests.support.scripted import scripted_agent

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

PUBLIC = {"/run", "/send", "/undo", "/revert", "/resume", "/stop", "/open_session", "/sessions"}
DEFAULTS = {"width": 64, "height": 64, "steps": 2, "planner": "selector", "iterations": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def client(executor: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[tuple[Any, Studio]]:
    from emage_agent.adapters.ui.app import serve

    agent = scripted_agent(tmp_path / "sessions", [0.5, 0.9] * 10)
    agent._executor = executor
    studio = Studio(agent, tmp_path / "sessions")
    demo, url = serve(studio, port=free_port(), block=False, defaults=DEFAULTS)
    caplog.set_level(logging.INFO)
    try:
        yield gradio_client.Client(url, verbose=False, download_files=False), studio
    finally:
        demo.close()


def named(result: tuple, client: Any, endpoint: str) -> dict[str, Any]:
    """An endpoint's outputs by their labels (the API documents them by label)."""
    labels = [
        r["label"]
        for r in client.view_api(return_format="dict", print_info=False)["named_endpoints"][endpoint]["returns"]
    ]
    return dict(zip(labels, result if isinstance(result, tuple | list) else [result], strict=True))


def test_the_documented_endpoints_drive_a_session(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    api, studio = client
    info = api.view_api(return_format="dict", print_info=False)
    assert set(info["named_endpoints"]) == PUBLIC and not info["unnamed_endpoints"]
    run = info["named_endpoints"]["/run"]["parameters"]
    assert [p["parameter_name"] for p in run][:3] == ["prompt", "iterations", "threshold"]
    assert all(p["parameter_has_default"] for p in run[1:]) and not run[0]["parameter_has_default"]
    planner = next(p for p in run if p["parameter_name"] == "planner")
    assert set(planner["type"]["enum"]) == {"vlm", "selector"}  # "gemini" is still read, as "vlm"
    assert [p["parameter_name"] for p in info["named_endpoints"]["/open_session"]["parameters"]] == ["session_id"]
    for endpoint in info["named_endpoints"].values():
        assert all(not r["label"].startswith("value_") for r in endpoint["returns"])

    # /run with only a prompt: the seed is left empty, so the executor picks one and the status shows it
    first = named(api.predict("a red fox", api_name="/run"), api, "/run")
    again = named(api.predict("a red fox", api_name="/run"), api, "/run")
    sid = first["Session id"]
    assert "done" in first["Status"] and "seed " in first["Status"], first["Status"]
    seeds = []
    for out in (first, again):
        with studio.open_store(out["Session id"]) as store:
            seed = store.steps()[0].args["seed"]
            seeds.append(seed)
            assert f"seed {seed}" in out["Status"]
    assert seeds[0] != seeds[1], "an empty seed must not mean seed 0 every time"

    sent = named(api.predict(sid, "make the fox sit", api_name="/send"), api, "/send")
    assert "because you asked: make the fox sit" in sent["Decision"]
    with studio.open_store(sid) as store:
        tools = [s.tool for s in store.steps()]
        assert "feedback" in tools and len([t for t in tools if t == "generate" or t.endswith("edit")]) >= 2
        last = store.head()
    undone = named(api.predict(sid, api_name="/undo"), api, "/undo")
    assert "Undone" in undone["Status"]
    with studio.open_store(sid) as store:
        assert store.head().step == last.parent  # undo moves the current image back one move
    reverted = named(api.predict(sid, 1, api_name="/revert"), api, "/revert")
    assert "Reverted to step 1" in reverted["Status"] and reverted["Step"] == 1
    with studio.open_store(sid) as store:
        assert store.head().step == 1 and len(store.steps()) > last.step - 1  # later steps stay in the history

    opened = named(api.predict(again["Session id"], api_name="/open_session"), api, "/open_session")
    assert opened["Prompt"] == "a red fox" and opened["Width"] == 64 and opened["Planner"] == "selector"
    assert opened["Seed (empty: random)"] == str(seeds[1])
    listed = api.predict(api_name="/sessions")
    assert [row["id"] for row in listed][:2] == [sid, again["Session id"]] or {row["id"] for row in listed} == {
        sid,
        again["Session id"],
    }
    assert all(set(row) >= {"id", "prompt", "score", "status", "date"} for row in listed)

    # mistakes: one status line each, nothing raised into Gradio, no traceback in the server log
    caplog.clear()
    wide = named(api.predict("a red fox", 1, 0.8, "", 70, 64, api_name="/run"), api, "/run")
    assert wide["Status"].startswith("Not done: ") and "width" in wide["Status"]
    nosession = named(api.predict("", "bigger", api_name="/send"), api, "/send")
    assert nosession["Status"] == "Not done: feedback: run a prompt or open a session first"
    bad = named(api.predict("../../etc", api_name="/open_session"), api, "/open_session")
    assert "Not done: session: must be the id of a session" in bad["Status"]
    seed = named(api.predict("a fox", 1, 0.8, "-3", api_name="/run"), api, "/run")
    assert "seed: must be a whole number" in seed["Status"]
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.exc_info]
