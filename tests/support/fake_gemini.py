"""A fake Gemini endpoint on 127.0.0.1 for tests: a real HTTP server the real google-genai client talks to.

Why a server and not a mock: the SDK's request building, serialisation (camelCase, base64 thought
signatures, function declarations) and error mapping are exactly what can break, so they run for real.

Script it with a FIFO queue (``fake.queue(reply, ...)``) and/or a ``fake.handler(request) -> Reply | None``
that routes on what the request contains (``request.purpose``). Every request is recorded. A request
nothing answers gets ``fake.unscripted_reply`` (default: 503, as if Gemini were down, so the agent's
fallbacks run) and is counted in ``fake.unscripted``; assert it is 0 where the script must cover everything.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAKE_KEY = "fake-key-Zq8XwV3T-never-print-me"


def b64decode(text: str) -> bytes:
    """Bytes from base64 in either alphabet (the SDK sends the URL-safe one), padding optional."""
    text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _get(obj: dict[str, Any] | None, camel: str) -> Any:
    """A request field by its camelCase or snake_case name (the SDK sends camelCase; be lenient)."""
    if not obj:
        return None
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return obj.get(camel, obj.get(snake))


@dataclass
class Request:
    """One recorded request: path, lower-cased headers and the parsed JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    raw: bytes

    @property
    def model(self) -> str:
        return self.path.split("/models/", 1)[-1].split(":", 1)[0]

    @property
    def version(self) -> str:
        return self.path.strip("/").split("/", 1)[0]

    @property
    def contents(self) -> list[dict[str, Any]]:
        return self.body.get("contents") or []

    @property
    def generation_config(self) -> dict[str, Any]:
        return _get(self.body, "generationConfig") or {}

    @property
    def response_schema(self) -> dict[str, Any] | None:
        gc = self.generation_config
        return _get(gc, "responseSchema") or _get(gc, "responseJsonSchema")

    @property
    def tools(self) -> list[dict[str, Any]]:
        return self.body.get("tools") or []

    @property
    def allowed_function_names(self) -> list[str]:
        fcc = _get(_get(self.body, "toolConfig"), "functionCallingConfig") or {}
        return _get(fcc, "allowedFunctionNames") or []

    @property
    def purpose(self) -> str:
        """'plan' (declares tools), 'evaluate' or 'rewrite' (by their answer schema), else 'other'."""
        if self.tools:
            return "plan"
        props = (self.response_schema or {}).get("properties", {})
        if "satisfaction_score" in props:
            return "evaluate"
        if "rationale" in props:
            return "rewrite"
        return "other"

    def parts(self) -> list[dict[str, Any]]:
        return [p for c in self.contents for p in c.get("parts") or []]

    def texts(self) -> list[str]:
        return [p["text"] for p in self.parts() if "text" in p]

    def text(self) -> str:
        return "\n".join(self.texts())

    def images(self) -> list[bytes]:
        """Every inline PNG in the request: plain parts and those inside function responses."""
        blobs = [_get(p, "inlineData") for p in self.parts()]
        for p in self.parts():
            fr = _get(p, "functionResponse") or {}
            blobs += [_get(fp, "inlineData") for fp in fr.get("parts") or []]
        return [b64decode(b["data"]) for b in blobs if b]


@dataclass
class Reply:
    """What the fake answers: a status, a JSON (or raw text) body, and an optional delay before it."""

    status: int = 200
    body: dict[str, Any] | str = field(default_factory=dict)
    delay_s: float = 0.0


Handler = Callable[[Request], "Reply | None"]


def usage(prompt: int = 100, candidates: int = 20, thoughts: int = 0) -> dict[str, int]:
    meta = {"promptTokenCount": prompt, "candidatesTokenCount": candidates}
    if thoughts:
        meta["thoughtsTokenCount"] = thoughts
    meta["totalTokenCount"] = prompt + candidates + thoughts
    return meta


def content_reply(parts: list[dict[str, Any]], *, usage_meta: dict | None = None, finish: str = "STOP") -> Reply:
    body = {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
        "usageMetadata": usage_meta or usage(),
        "modelVersion": "fake",
    }
    return Reply(200, body)


def text_reply(text: str, **kw: Any) -> Reply:
    return content_reply([{"text": text}], **kw)


def json_reply(obj: Any, **kw: Any) -> Reply:
    return text_reply(json.dumps(obj), **kw)


def evaluation_reply(score: Any = 0.6, issues: list[dict] | None = None, summary: str = "fine", **kw: Any) -> Reply:
    return json_reply({"issues": issues or [], "satisfaction_score": score, "summary": summary}, **kw)


def rewrite_reply(prompt: str, rationale: str = "made it explicit", **kw: Any) -> Reply:
    return json_reply({"prompt": prompt, "rationale": rationale}, **kw)


def signature(n: int = 1) -> str:
    """A base64 thought signature as the service sends it (opaque bytes)."""
    return base64.b64encode(f"sig-{n}-opaque".encode()).decode()


def function_call_reply(
    *calls: tuple[str, dict[str, Any]] | dict[str, Any],
    thought_signature: str | None = None,
    text: str | None = None,
    ids: bool = True,
    **kw: Any,
) -> Reply:
    """Function calls; like Gemini 3, only the first call part carries the thought signature."""
    parts: list[dict[str, Any]] = [{"text": text}] if text else []
    for i, call in enumerate(calls):
        name, args = (call["name"], call.get("args", {})) if isinstance(call, dict) else call
        fc: dict[str, Any] = {"name": name, "args": args}
        if ids:
            fc["id"] = f"call-{name}-{i}"
        part: dict[str, Any] = {"functionCall": fc}
        if i == 0:
            part["thoughtSignature"] = thought_signature or signature()
        parts.append(part)
    return content_reply(parts, **kw)


def error_reply(code: int, status: str, message: str = "", details: list | None = None) -> Reply:
    err: dict[str, Any] = {"code": code, "message": message or status.replace("_", " ").lower(), "status": status}
    if details is not None:
        err["details"] = details
    return Reply(code, {"error": err})


def rate_limited(retry_delay: str | None = None) -> Reply:
    info = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
    details = [info] if retry_delay else None
    return error_reply(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", details)


def server_error() -> Reply:
    return error_reply(500, "INTERNAL", "An internal error has occurred.")


def unavailable() -> Reply:
    return error_reply(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")


def invalid_argument(message: str = "Request contains an invalid argument.") -> Reply:
    return error_reply(400, "INVALID_ARGUMENT", message)


def api_key_invalid() -> Reply:
    details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]
    return error_reply(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", details)


class FakeGemini:
    """The server. ``url`` is the base URL to give the SDK; ``requests`` lists what it received."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.handler: Handler | None = None
        self.unscripted = 0
        self.unscripted_reply = error_reply(503, "UNAVAILABLE", "fake gemini: no reply scripted for this request")
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._make_handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeGemini:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeGemini:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def queue(self, *replies: Reply) -> FakeGemini:
        with self._lock:
            self._queue.extend(replies)
        return self

    @property
    def pending(self) -> int:
        """Queued replies not yet consumed (a test may assert all were used)."""
        return len(self._queue)

    def _answer(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
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

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {}
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply = fake._answer(Request("POST", self.path, headers, body, raw))
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                data = reply.body.encode() if isinstance(reply.body, str) else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json; charset=UTF-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left; that is the point of a delayed reply

            def log_message(self, *args: object) -> None:
                pass

        return _Handler
