"""The one door to OpenAI-compatible chat servers (vLLM, Ollama, LM Studio, OpenRouter, OpenAI): the ``openai`` SDK.

Why our own retry loop rather than the SDK's ``max_retries``: attempts are counted in the call log, the
total wait is bounded by ``openai_max_retry_s`` and the server's ``Retry-After`` is honoured, like the
Gemini client does; the SDK's retries are switched off.

Why the answer-format ladder: servers differ in what ``response_format`` they accept (a JSON schema, only
``json_object``, or nothing). The first refusal of a format moves down one rung; the rung that worked is
remembered per server for the life of the process, so a server is probed once, not on every call.

Every message that leaves this module is scrubbed of the API key; exceptions are re-raised ``from None``.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import openai
from openai import OpenAI

from emage_agent.core.errors import EmageError, ExecutionFailure, UnreadableAnswer, UserError, VLMUnavailable
from emage_agent.core.events import RetryNote
from emage_agent.core.settings import Settings
from emage_agent.core.tools import available_tools, export_tools
from emage_agent.vlm.calls import CallLog, CallRecord, backoff_s, recorded
from emage_agent.vlm.deadline import DeadlineTransport
from emage_agent.vlm.openai_compat.wire import send
from emage_agent.vlm.transport import Reply, Request

log = logging.getLogger("emage_agent.vlm.openai")

BACKEND = "openai"
RETRYABLE_CODES = frozenset({408, 409, 429, 500, 502, 503, 504})
FORMATS = ("json_schema", "json_object", "text")
TOOL_CHOICES = ("required", "auto")
NO_KEY = "no-key"  # local servers take any bearer token; the SDK insists on one

_remembered: dict[tuple[str, str], str] = {}  # (server, what) -> the rung that worked
_remembered_lock = threading.Lock()


class OpenAIRequestError(ExecutionFailure):
    """The server refused the request itself (a 4xx other than a rejected key or unknown model)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


def forget_servers() -> None:
    """Forget what each server was found to accept (tests; a server that was upgraded)."""
    with _remembered_lock:
        _remembered.clear()


def _hinted(messages: list[dict[str, Any]], schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages with the schema spelled out at the end (below the json_schema rung; json_object also
    needs the word JSON in the prompt). The caller's list is not changed."""
    hint = "\n\nAnswer with one JSON object that follows this JSON Schema: " + json.dumps(schema, separators=(",", ":"))
    *head, last = messages
    content = last.get("content")
    if isinstance(content, list):
        content = [*content, {"type": "text", "text": hint.strip()}]
    else:
        content = f"{content or ''}{hint}"
    return [*head, {**last, "content": content}]


def _retry_after_s(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class OpenAIClient:
    """Wraps ``openai.OpenAI``; ``chat`` is the only way the rest of the package reaches the server, and
    ``request`` (``vlm.transport``) the way the roles use it."""

    backend = BACKEND
    label = "the server"
    parses_answers = False  # JSON arrives as text, whatever rung of the ladder the server takes
    keeps_history = True
    answers_objects = False

    def __init__(
        self,
        settings: Settings,
        *,
        retry_initial_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        limiter: Any = None,
    ) -> None:
        key = settings.openai_api_key.get_secret_value().strip() if settings.openai_api_key else ""
        base = (settings.openai_base_url or "").strip() or None
        if not key and not base:
            raise UserError(
                "no OpenAI-compatible endpoint; set EMAGE_OPENAI_BASE_URL (vLLM, Ollama, LM Studio, ...) "
                "or OPENAI_API_KEY (api.openai.com)",
                field="EMAGE_OPENAI_BASE_URL",
            )
        self.settings = settings
        self.model = settings.openai_model
        self.calls = CallLog()
        self.limiter = limiter
        self._key = key
        self._sleep = sleep
        initial = retry_initial_s if retry_initial_s is not None else settings.openai_retry_initial_s
        self._retry_initial_s = max(0.0, float(initial))
        http = openai.DefaultHttpxClient(transport=DeadlineTransport(settings.openai_timeout_s))  # per request
        self._client = OpenAI(
            api_key=key or NO_KEY, base_url=base, timeout=settings.openai_timeout_s, max_retries=0, http_client=http
        )
        self.server = str(self._client.base_url).rstrip("/")

    def __repr__(self) -> str:
        return f"OpenAIClient(server={self.server!r}, model={self.model!r}, calls={len(self.calls)})"

    def close(self) -> None:
        self._client.close()

    def scrub(self, text: str) -> str:
        """``text`` without the API key (errors may echo request details)."""
        return text.replace(self._key, "***") if self._key else text

    @property
    def tools(self) -> list[str]:
        """The tools these settings switch on: all a planner over this transport may offer."""
        return available_tools(self.settings)

    def request(self, request: Request) -> Reply:
        """The transport interface (``vlm.transport``): chat messages around the ladders below."""
        return send(self.chat_json, self.chat_tools, self.tool_declarations, request)

    @functools.cached_property
    def tool_declarations(self) -> list[dict[str, Any]]:
        """Every tool, declared on every planning request (earlier calls must stay declared)."""
        return export_tools("openai", available_tools(self.settings))  # a switched-off tool is not declared

    # ---- the ladders ------------------------------------------------------------------------
    def rung(self, what: str, ladder: tuple[str, ...]) -> str:
        with _remembered_lock:
            return _remembered.get((self.server, what), ladder[0])

    def remember(self, what: str, value: str) -> None:
        with _remembered_lock:
            _remembered[(self.server, what)] = value

    def chat_json(self, purpose: str, messages: list[dict[str, Any]], name: str, schema: dict[str, Any]) -> Any:
        """A chat completion asking for JSON: a JSON schema, else ``json_object``, else plain text."""
        rung = self.rung("response_format", FORMATS)
        for fmt in FORMATS[FORMATS.index(rung) :]:
            extra: dict[str, Any] = {}
            if fmt == "json_schema":
                extra["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": name, "schema": schema, "strict": False},
                }
            elif fmt == "json_object":
                extra["response_format"] = {"type": "json_object"}
            try:
                response = self.chat(purpose, messages if fmt == "json_schema" else _hinted(messages, schema), **extra)
            except OpenAIRequestError as exc:
                if fmt == "text" or exc.status not in (400, 422):
                    raise
                log.info("openai: %s refused response_format %s (%s); trying the next", self.server, fmt, exc)
                continue
            if fmt != rung:
                log.warning("openai: %s does not take response_format %s; using %s from now on", self.server, rung, fmt)
                self.remember("response_format", fmt)
            return response
        raise AssertionError("unreachable: the text rung either returns or raises")  # pragma: no cover

    def chat_tools(self, purpose: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        """A chat completion that must call a tool: ``tool_choice=required``, else ``auto`` where refused."""
        rung = self.rung("tool_choice", TOOL_CHOICES)
        for choice in TOOL_CHOICES[TOOL_CHOICES.index(rung) :]:
            try:
                response = self.chat(purpose, messages, tools=tools, tool_choice=choice)
            except OpenAIRequestError as exc:
                if choice == TOOL_CHOICES[-1] or exc.status not in (400, 422):
                    raise
                continue
            if choice != rung:
                log.warning("openai: %s does not take tool_choice=%s; using %s", self.server, rung, choice)
                self.remember("tool_choice", choice)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- one call with retries --------------------------------------------------------------
    def chat(self, purpose: str, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        """One ``chat.completions.create`` with retries; every outcome lands in ``self.calls``."""
        record = CallRecord(purpose=purpose, model=self.model, backend=BACKEND)
        with recorded(self.calls, record):
            response = self._with_retries(record, time.monotonic(), messages, kwargs)
            if not getattr(response, "choices", None):
                raise UnreadableAnswer(f"the {purpose} answer from {self.server} has no choices")
        usage = getattr(response, "usage", None)
        if usage is not None:
            record.input_tokens = getattr(usage, "prompt_tokens", None)
            record.output_tokens = getattr(usage, "completion_tokens", None)
            record.total_tokens = getattr(usage, "total_tokens", None)
        return response

    def _with_retries(self, record: CallRecord, started: float, messages: list[dict[str, Any]], kw: Any) -> Any:
        s = self.settings
        while True:
            record.attempts += 1
            if self.limiter is not None:
                self.limiter.acquire()
            try:
                return self._client.chat.completions.create(model=self.model, messages=messages, **kw)
            except openai.APIStatusError as exc:
                retryable = exc.status_code in RETRYABLE_CODES
                last: BaseException = exc
            except openai.APIConnectionError as exc:  # includes timeouts
                retryable, last = True, exc
            except (json.JSONDecodeError, ValueError, TypeError, RecursionError) as exc:
                what = str(exc)[:200] if not isinstance(exc, RecursionError) else "it nests too deeply to decode"
                raise UnreadableAnswer(f"{self.server} sent an answer that is not a chat completion: {what}") from None
            elapsed = time.monotonic() - started
            budget = s.openai_max_retry_s - elapsed
            if not retryable or record.attempts >= s.openai_max_attempts or budget <= 0:
                raise self._translate(last, record) from None
            wait = backoff_s(self._retry_initial_s, record.attempts, budget, _retry_after_s(last))
            if self.limiter is not None and getattr(last, "status_code", None) == 429:
                self.limiter.back_off(wait)  # the quota is the server's: every session pauses
            log.info(
                "openai %s: attempt %d failed (%s); retrying in %.2fs",
                record.purpose,
                record.attempts,
                getattr(last, "status_code", type(last).__name__),
                wait,
                extra={
                    "emage_retry": RetryNote(
                        backend="openai",
                        purpose=record.purpose,
                        attempt=record.attempts,
                        max_attempts=s.openai_max_attempts,
                        wait_s=wait,
                        reason=str(getattr(last, "status_code", type(last).__name__)),
                    )
                },  # fmt: skip
            )
            self._sleep(wait)

    def _translate(self, exc: BaseException, record: CallRecord) -> EmageError:
        if isinstance(exc, openai.APIConnectionError):
            what = "did not answer in time" if isinstance(exc, openai.APITimeoutError) else "could not be reached"
            return VLMUnavailable(
                f"{self.server} {what} after {record.attempts} attempt(s) "
                f"(each attempt has {self.settings.openai_timeout_s:g}s in all, EMAGE_OPENAI_TIMEOUT_S; "
                f"retries {self.settings.openai_max_retry_s:g}s, EMAGE_OPENAI_MAX_RETRY_S)"
            )
        assert isinstance(exc, openai.APIStatusError)
        code = exc.status_code
        text = self.scrub(f"{code}: {exc.message}")[:400]
        if code in (401, 403):
            return UserError(f"was rejected by {self.server} ({text}); check the key", field="OPENAI_API_KEY")
        if code == 404:
            return UserError(
                f"{self.server} does not know the model {self.model!r} ({text})", field="EMAGE_OPENAI_MODEL"
            )
        if code in RETRYABLE_CODES:
            return VLMUnavailable(
                f"{self.server} kept failing for the {record.purpose} call: {record.attempts} attempt(s) "
                f"within {self.settings.openai_max_retry_s}s; last error {text}"
            )
        return OpenAIRequestError(f"{self.server} rejected the {record.purpose} request ({text})", status=code)

    def probe(self) -> str:
        """A tiny request for ``doctor``: the server's model list, and whether our model is in it."""
        try:
            names = [m.id for m in self._client.models.list()]
        except openai.APIStatusError as exc:
            raise self._translate(exc, CallRecord(purpose="probe", model=self.model, attempts=1)) from None
        except openai.APIConnectionError as exc:
            raise self._translate(exc, CallRecord(purpose="probe", model=self.model, attempts=1)) from None
        if names and self.model not in names:
            shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
            raise UserError(
                f"{self.server} does not serve {self.model!r}; it serves {shown}", field="EMAGE_OPENAI_MODEL"
            )
        return f"{self.model} at {self.server}"
