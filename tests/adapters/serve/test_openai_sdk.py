"""The OpenAI images API driven by the official ``openai`` SDK against a real uvicorn server (scripted models).

One server per module (token-protected, on 127.0.0.1); tests that need a full queue or a slow GPU
build their own. Every error kind comes back as the SDK's own exception class, so clients' retry
logic behaves as it does against OpenAI.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from PIL import Image

from emage_agent.session import SessionStore
from tests.support.serving import TOKEN, SlowExecutor, scripted_state, serving

FAST = {"iterations": 1, "planner": "selector"}


def sessions(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if (p / "session.db").is_file())


def png(size: tuple[int, int], colour: Any = (10, 120, 200), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def decoded(b64: str | None) -> Image.Image:
    assert b64 is not None
    return Image.open(io.BytesIO(base64.b64decode(b64)))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, SlowExecutor]]:
    root = tmp_path_factory.mktemp("serve-sdk")
    state, executor, _gpu = scripted_state(root, token=TOKEN, max_body=256 * 1024)
    with serving(state) as url:
        yield url, root, executor


@pytest.fixture
def client(server: tuple[str, Path, SlowExecutor]) -> OpenAI:
    return OpenAI(base_url=server[0] + "/v1", api_key=TOKEN, max_retries=0, timeout=30)


def test_models_lists_the_loop_and_the_plain_model(client: OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["emage", "flux-dev"]
    assert client.models.retrieve("flux-dev").id == "flux-dev"


def test_generate_runs_the_loop_and_returns_the_n_best(client: OpenAI, server: Any) -> None:
    root = server[1]
    before = len(sessions(root))
    result = client.images.generate(prompt="a red fox", size="64x64", n=2, extra_body={**FAST, "threshold": 0.9})
    assert len(result.data) == 2 and result.created > 0
    first, second = (decoded(d.b64_json) for d in result.data)
    assert first.size == second.size == (64, 64)
    assert first.tobytes() != second.tobytes()  # two candidates, not one image twice
    made = sessions(root)
    assert len(made) == before + 1  # one session, n candidates in it
    with SessionStore.open(made[-1]) as store:
        assert store.info.options["candidates"] == 2 and store.info.options["threshold"] == 0.9
        assert store.info.status == "done"


def test_quality_sets_the_iteration_budget_and_iterations_wins(client: OpenAI, server: Any) -> None:
    root = server[1]
    client.images.generate(prompt="an owl", size="64x64", quality="high", extra_body={"planner": "selector"})
    with SessionStore.open(sessions(root)[-1]) as store:
        assert store.info.options["iterations"] == 6
    client.images.generate(prompt="an owl", size="64x64", quality="high", extra_body=FAST)
    with SessionStore.open(sessions(root)[-1]) as store:
        assert store.info.options["iterations"] == 1


def test_url_answers_are_served_and_signed(client: OpenAI, server: Any) -> None:
    result = client.images.generate(prompt="a fox", model="flux-dev", size="64x64", response_format="url")
    url = result.data[0].url
    assert url is not None and url.startswith(server[0] + "/v1/sessions/") and "sig=" in url
    fetched = httpx.get(url, timeout=10)  # no token: the signature opens this one image
    assert fetched.status_code == 200 and Image.open(io.BytesIO(fetched.content)).size == (64, 64)
    forged = httpx.get(url[:-4] + "0000", timeout=10)
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "invalid_api_key"


def test_edit_without_a_mask_starts_from_the_picture(client: OpenAI, server: Any) -> None:
    result = client.images.edit(image=("pic.png", png((80, 64)), "image/png"), prompt="a blue square", extra_body=FAST)
    assert decoded(result.data[0].b64_json).size == (80, 64)
    with SessionStore.open(sessions(server[1])[-1]) as store:
        assert store.steps()[0].tool == "upload" and store.info.options.get("region") is None


@pytest.mark.parametrize("convention", ["openai", "emage"])
def test_edit_with_a_mask_limits_the_region(client: OpenAI, server: Any, convention: str) -> None:
    if convention == "openai":  # opaque everywhere, transparent where to change
        mask = Image.new("RGBA", (80, 64), (0, 0, 0, 255))
        mask.paste((0, 0, 0, 0), (16, 16, 48, 40))
    else:  # white on black
        mask = Image.new("L", (80, 64), 0)
        mask.paste(255, (16, 16, 48, 40))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    client.images.edit(
        image=("pic.png", png((80, 64)), "image/png"),
        mask=("mask.png", buf.getvalue(), "image/png"),
        prompt="a blue square",
        extra_body=FAST,
    )
    with SessionStore.open(sessions(server[1])[-1]) as store:
        region = store.info.options["region"]
        stored = store.load_image(region).convert("L")
    assert stored.getbbox() == (16, 16, 48, 40)  # exactly the marked area may change


def test_every_error_kind_has_its_status_and_shape(client: OpenAI, server: Any) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.images.generate(prompt="a fox", size="65x64")
    assert bad.value.body["param"] == "size" and "multiple of 16" in bad.value.body["message"]
    with pytest.raises(openai.BadRequestError) as unknown:
        client.images.generate(prompt="a fox", extra_body={"treshold": 0.5})
    assert unknown.value.body["param"] == "treshold" and "threshold" in unknown.value.body["message"]
    with pytest.raises(openai.BadRequestError) as limit:
        client.images.generate(prompt="a fox", extra_body={"candidates": 99})
    assert limit.value.body["param"] == "candidates"
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=server[0] + "/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError) as missing:
        client.images.generate(prompt="a fox", model="dall-e-3")
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.APIStatusError) as large:
        client.images.edit(image=("big.png", b"\0" * (300 * 1024), "image/png"), prompt="a fox")
    assert large.value.status_code == 413
    with pytest.raises(openai.BadRequestError) as broken:
        client.images.edit(image=("pic.png", b"not a picture", "image/png"), prompt="a fox")
    assert broken.value.body["param"] == "image"
    with pytest.raises(openai.InternalServerError) as failed:
        client.images.generate(prompt="explode, please", size="64x64", extra_body=FAST)
    assert "fell over" in failed.value.body["message"] and TOKEN not in str(failed.value.body)
    assert "/resume continues it" in failed.value.body["message"]  # the session is named, and resumable


def test_a_retry_with_the_same_idempotency_key_gets_the_first_answer(server: Any) -> None:
    url, root, executor = server
    executor.delay = 0.3  # the first request outlives the client's timeout; the SDK retries with the same key
    try:
        slow = OpenAI(base_url=url + "/v1", api_key=TOKEN, max_retries=4, timeout=0.5)
        before = len(sessions(root))
        started = time.monotonic()
        key = {"Idempotency-Key": f"fox-{started}"}
        result = slow.images.generate(prompt="a patient fox", size="64x64", extra_body=FAST, extra_headers=key)
        assert time.monotonic() - started > 0.5  # it did time out at least once
        assert len(sessions(root)) == before + 1  # and no second session was started
        again = slow.images.generate(prompt="a patient fox", size="64x64", extra_body=FAST, extra_headers=key)
        assert again.data[0].b64_json == result.data[0].b64_json
        assert len(sessions(root)) == before + 1
        with pytest.raises(openai.BadRequestError) as reused:
            slow.images.generate(prompt="another fox", size="64x64", extra_body=FAST, extra_headers=key)
        assert reused.value.body["code"] == "idempotency_key_reused"
    finally:
        executor.delay = 0.0


def test_a_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    state, executor, _gpu = scripted_state(tmp_path, delay=0.4, concurrency=1, queue=0)
    with serving(state) as url:
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)
        first = httpx.post(url + "/v1/sessions", json={"prompt": "an owl", "size": "64x64", **FAST}, timeout=10)
        assert first.status_code == 202
        with pytest.raises(openai.RateLimitError) as busy:
            client.images.generate(prompt="a fox", size="64x64", extra_body=FAST)
        assert int(busy.value.response.headers["retry-after"]) >= 1
        assert busy.value.body["code"] == "queue_full"
        assert len(sessions(tmp_path)) == 1  # the refused request made no session


def test_a_streamed_body_over_the_limit_is_cut_off_with_413(server: Any) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(40):
            yield b"x" * 16384  # no Content-Length: counted as it arrives
        yield b'"}'

    answer = httpx.post(
        server[0] + "/v1/images/generations",
        content=chunks(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "request_too_large"


def test_a_deeply_nested_body_is_bad_input_not_a_server_error(server: Any) -> None:
    answer = httpx.post(
        server[0] + "/v1/images/generations",
        content=b"[" * 100_000 + b"]" * 100_000,  # under the size limit, far deeper than any JSON parser recurses
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_json"
