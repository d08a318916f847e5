"""A stand-in OpenAI-compatible server on 127.0.0.1: a real HTTP server the real ``openai`` SDK talks to.

Like ``fake_gemini``: script it with a FIFO queue and/or a ``handler(request) -> Reply | None`` routed on
``request.purpose``; every request is recorded; what nothing answers gets ``unscripted_reply`` (503).
``refuse`` lists request fields the server rejects with a 400, as servers without ``response_format``
(or ``tool_choice=required``) support do.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAKE_OPENAI_KEY = "sk-fake-Lq93VbXr-never-print-me"


@dataclass
class Reply:
    """What the fake answers: a status, a JSON (or raw text) body, extra headers (``Retry-After``)."""

    status: int = 200
    body: dict[str, Any] | str = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages") or []

    @property
    def response_format(self) -> dict[str, Any] | None:
        return self.body.get("response_format")

    @property
    def purpose(self) -> str:
        """'plan' (declares tools), 'evaluate' (sends an image and asks for a score), 'rewrite', else 'other'."""
        if self.body.get("tools"):
            return "plan"
        text = self.text()
        if "satisfaction_score" in text:
            return "evaluate"
        if "rationale" in text:
            return "rewrite"
        return "other"

    def parts(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for m in self.messages:
            content = m.get("content")
            if isinstance(content, str):
                out.append({"type": "text", "text": content})
            elif isinstance(content, list):
                out += content
        return out

    def text(self) -> str:
        return "\n".join(p.get("text", "") for p in self.parts() if p.get("type") == "text")

    def images(self) -> list[bytes]:
        urls = [p["image_url"]["url"] for p in self.parts() if p.get("type") == "image_url"]
        return [base64.b64decode(u.split(",", 1)[1]) for u in urls]


def usage(prompt: int = 120, completion: int = 30) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def message_reply(message: dict[str, Any], finish: str = "stop", **kw: Any) -> Reply:
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": kw.pop("model", "fake-vlm"),
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": kw.pop("usage_meta", None) or usage(),
    }
    return Reply(200, body, **kw)


def text_reply(text: str, **kw: Any) -> Reply:
    return message_reply({"content": text}, **kw)


def json_reply(obj: Any, **kw: Any) -> Reply:
    return text_reply(json.dumps(obj), **kw)


def evaluation_reply(score: Any = 0.6, issues: list[dict] | None = None, summary: str = "fine", **kw: Any) -> Reply:
    return json_reply({"issues": issues or [], "satisfaction_score": score, "summary": summary}, **kw)


def rewrite_reply(prompt: str, rationale: str = "made it explicit", **kw: Any) -> Reply:
    return json_reply({"prompt": prompt, "rationale": rationale}, **kw)


def tool_call_reply(*calls: tuple[str, dict[str, Any] | str], text: str | None = None, **kw: Any) -> Reply:
    """``tool_calls``; arguments as the JSON string the API sends (a str is sent as given: malformed JSON)."""
    tool_calls = [
        {
            "id": f"call_{name}_{i}",
            "type": "function",
            "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
        }
        for i, (name, args) in enumerate(calls)
    ]
    return message_reply({"content": text, "tool_calls": tool_calls}, finish="tool_calls", **kw)


def error_reply(code: int, message: str, retry_after: float | None = None) -> Reply:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return Reply(code, {"error": {"message": message, "type": "error", "code": code}}, headers)


Handler = Callable[[Request], "Reply | None"]


@dataclass
class FakeOpenAI:
    """The server. ``url`` is the base URL (``.../v1``) to give the SDK."""

    models: list[str] = field(default_factory=lambda: ["fake-vlm"])
    refuse: set[str] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)
    handler: Handler | None = None
    unscripted: int = 0

    def __post_init__(self) -> None:
        self.unscripted_reply = error_reply(503, "fake openai: no reply scripted for this request")
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._make_handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def queue(self, *replies: Reply) -> FakeOpenAI:
        with self._lock:
            self._queue.extend(replies)
        return self

    @property
    def pending(self) -> int:
        return len(self._queue)

    def _answer(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            if request.method == "GET" and request.path.rstrip("/").endswith("/models"):
                return Reply(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]})
            for name in self.refuse:
                if name in request.body and (name != "tool_choice" or request.body[name] == "required"):
                    return error_reply(400, f"{name} is not supported by this server")
            if self._queue:
                return self._queue.popleft()
        reply = self.handler(request) if self.handler else None
        if reply is None:
            self.unscripted += 1
            return self.unscripted_reply
        return reply

    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self, method: str) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {}
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = fake._answer(Request(method, self.path, headers, body))
                data = reply.body.encode() if isinstance(reply.body, str) else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self) -> None:  # noqa: N802
                self._serve("POST")

            def do_GET(self) -> None:  # noqa: N802
                self._serve("GET")

            def log_message(self, *args: object) -> None:
                pass

        return _Handler
