"""The one door to Gemini: a google-genai client with bounded retries, error translation and a call log.

Why our own retry loop (tenacity) rather than the SDK's ``HttpRetryOptions``: we must count attempts for
the call log, bound the total time by ``gemini_max_retry_s``, honour the service's ``RetryInfo`` hint and
switch to ``gemini_fallback_model`` when the main model keeps answering 429/503, none of which the SDK's
options express. The SDK's own retries are therefore left off (its default).

Every message that leaves this module is scrubbed of the API key, because SDK errors may echo request
details; exceptions are re-raised ``from None`` so a chained SDK error cannot leak it through a traceback.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import random
import re
import time
from collections.abc import Callable
from typing import Any, Literal

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_before_delay

from emage_agent.core.errors import EmageError, ExecutionFailure, UnreadableAnswer, UserError, VLMUnavailable
from emage_agent.core.events import RetryNote
from emage_agent.core.settings import Settings
from emage_agent.core.tools import available_tools
from emage_agent.vlm.calls import MAX_SINGLE_WAIT_S, CallLog, CallRecord, recorded
from emage_agent.vlm.deadline import DeadlineTransport
from emage_agent.vlm.gemini.sdk import genai, genai_errors, types
from emage_agent.vlm.gemini.wire import function_declarations, send
from emage_agent.vlm.parsing import TooDeep
from emage_agent.vlm.transport import Reply, Request

log = logging.getLogger("emage_agent.vlm.gemini")

Purpose = Literal["evaluate", "plan", "rewrite", "objects"]
RETRYABLE_CODES = frozenset({408, 429, 500, 502, 503, 504})
OVERLOAD_CODES = frozenset({429, 503})


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Timeouts and connection failures of whichever httpx flavour the SDK uses (httpx or httpx2)."""
    found: list[type[BaseException]] = [TimeoutError, ConnectionError]
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


TRANSPORT_ERRORS = _transport_errors()


class GeminiRequestError(ExecutionFailure):
    """Gemini refused the request itself (a 4xx other than a rejected key or unknown model): retrying cannot help."""


def _retry_hint_s(exc: BaseException | None) -> float | None:
    """The service's RetryInfo delay ('37s') on a 429, if it sent one."""
    details = getattr(exc, "details", None)
    error = details.get("error", details) if isinstance(details, dict) else {}
    items = error.get("details") if isinstance(error, dict) else None
    for item in items if isinstance(items, list) else []:
        delay = item.get("retryDelay") if isinstance(item, dict) else None
        match = re.fullmatch(r"\s*([0-9.]+)s\s*", str(delay or ""))
        if match:
            return float(match.group(1))
    return None


def _key_rejected(exc: genai_errors.APIError) -> bool:
    if exc.code in (401, 403):
        return True
    blob = f"{exc.message or ''} {json.dumps(exc.details, default=str)}"
    return exc.code == 400 and ("API_KEY_INVALID" in blob or "API key not valid" in blob or "API key expired" in blob)


class _CallState:
    """Per-call retry state the tenacity callbacks share."""

    def __init__(self, purpose: str, model: str) -> None:
        self.record = CallRecord(purpose=purpose, model=model, backend="gemini")
        self.overloads = 0
        self.switch = False
        self.on_fallback = False


class GeminiClient:
    """Wraps ``genai.Client``; ``generate`` is the only way the rest of the package reaches the service,
    and ``request`` (``vlm.transport``) the way the roles use it.

    ``retry_initial_s`` is the first backoff delay (doubling, jittered); tests make it tiny. It defaults
    to ``settings.gemini_retry_initial_s``. ``limiter`` (``acquire()``, ``back_off(seconds)``), when
    given, is consulted before every attempt and told of every 429, so sessions sharing it slow down
    together. Sessions may share one client from several threads: ``take_calls`` hands each thread
    only the call records it made.
    """

    backend = "gemini"
    label = "Gemini"
    parses_answers = True
    keeps_history = True
    answers_objects = True

    def __init__(
        self,
        settings: Settings,
        *,
        retry_initial_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        limiter: Any = None,
    ) -> None:
        key = settings.gemini_api_key.get_secret_value().strip() if settings.gemini_api_key else ""
        if not key:
            raise UserError("no Gemini API key; set GEMINI_API_KEY in the environment or .env", field="GEMINI_API_KEY")
        self.settings = settings
        self.model = settings.gemini_model
        self.fallback_model = settings.gemini_fallback_model or None
        self.calls = CallLog()
        self.limiter = limiter
        self._key = key
        self._sleep = sleep
        initial = retry_initial_s if retry_initial_s is not None else settings.gemini_retry_initial_s
        self._retry_initial_s = max(0.0, float(initial))
        options = types.HttpOptions(
            base_url=settings.gemini_base_url or None,
            api_version=settings.gemini_api_version,
            timeout=max(1, int(settings.gemini_timeout_s * 1000)),
            client_args={"transport": DeadlineTransport(settings.gemini_timeout_s)},  # per request, not per read
        )
        self._client = genai.Client(vertexai=False, api_key=key, http_options=options)

    def __repr__(self) -> str:
        return f"GeminiClient(model={self.model!r}, fallback={self.fallback_model!r}, calls={len(self.calls)})"

    def close(self) -> None:
        """Release the HTTP connections (also done when the client is garbage-collected)."""
        self._client.close()

    def __enter__(self) -> GeminiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def scrub(self, text: str) -> str:
        """``text`` without the API key (SDK messages may echo request details)."""
        return text.replace(self._key, "***") if self._key else text

    @functools.cached_property
    def declarations(self) -> list[types.FunctionDeclaration]:
        """Every tool, declared on every planning request (earlier calls must stay declared)."""
        return function_declarations(available_tools(self.settings))  # a switched-off tool is not declared

    @property
    def tools(self) -> list[str]:
        """The tools these settings switch on: all a planner over this transport may offer."""
        return available_tools(self.settings)

    def request(self, request: Request) -> Reply:
        """The transport interface (``vlm.transport``): Gemini's wire format around ``generate``."""
        return send(self.generate, self.model, self.declarations, request)

    def generate(self, purpose: Purpose, contents: Any, config: types.GenerateContentConfig) -> Any:
        """One ``generateContent`` call with retries; every outcome lands in ``self.calls``."""
        state = _CallState(purpose, self.model)
        with recorded(self.calls, state.record):
            response = self._with_retries(state, contents, config)
        meta = getattr(response, "usage_metadata", None)
        if meta is not None:
            out = (meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0)
            state.record.input_tokens = meta.prompt_token_count
            state.record.output_tokens = out if (meta.candidates_token_count or meta.thoughts_token_count) else None
            state.record.total_tokens = meta.total_token_count
        log.debug(
            "gemini %s on %s: %d attempt(s), %.2fs",
            purpose,
            state.record.model,
            state.record.attempts,
            state.record.latency_s,
        )
        return response

    def take_calls(self) -> list[CallRecord]:
        """The call records this thread made since its last take (one session's, when sessions share us)."""
        return self.calls.take()

    def _with_retries(self, state: _CallState, contents: Any, config: types.GenerateContentConfig) -> Any:
        s = self.settings
        retrying = Retrying(
            stop=stop_after_attempt(s.gemini_max_attempts) | stop_before_delay(s.gemini_max_retry_s),
            wait=lambda rs: self._wait(rs, state),
            retry=retry_if_exception(self._retryable),
            sleep=self._sleep,
            before_sleep=lambda rs: self._log_retry(rs, state),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._attempt(state, attempt.retry_state.attempt_number, contents, config)
        except genai_errors.APIError as exc:
            raise self._translate(exc, state) from None
        except TRANSPORT_ERRORS as exc:
            what = "did not answer in time" if "timeout" in type(exc).__name__.lower() else "could not be reached"
            raise VLMUnavailable(
                f"Gemini {what} ({type(exc).__name__}: {self.scrub(str(exc))[:200]}) after "
                f"{state.record.attempts} attempt(s); each attempt has {s.gemini_timeout_s:g}s in all "
                f"(EMAGE_GEMINI_TIMEOUT_S), retries {s.gemini_max_retry_s:g}s (EMAGE_GEMINI_MAX_RETRY_S)"
            ) from None
        except RecursionError:  # the SDK decodes the body itself; 100,000 brackets overflow its decoder
            raise TooDeep("Gemini's answer nests too deeply to be read") from None
        except genai_errors.UnknownApiResponseError as exc:
            raise UnreadableAnswer(f"Gemini sent a response that is not JSON: {self.scrub(str(exc))[:300]}") from None
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    def _attempt(self, state: _CallState, number: int, contents: Any, config: types.GenerateContentConfig) -> Any:
        if state.switch and not state.on_fallback:
            log.warning("gemini: %s keeps failing (429/503); trying %s", self.model, self.fallback_model)
            state.on_fallback = True
        model = self.fallback_model if state.on_fallback else self.model
        state.record.attempts, state.record.model = number, model
        if self.limiter is not None:
            self.limiter.acquire()
        try:
            return self._client.models.generate_content(model=model, contents=contents, config=config)
        except genai_errors.APIError as exc:
            if not state.on_fallback:
                state.overloads = state.overloads + 1 if exc.code in OVERLOAD_CODES else 0
            raise

    @staticmethod
    def _retryable(exc: BaseException) -> bool:
        if isinstance(exc, genai_errors.APIError):
            return exc.code in RETRYABLE_CODES
        return isinstance(exc, TRANSPORT_ERRORS)

    def _wait(self, rs: RetryCallState, state: _CallState) -> float:
        """Jittered exponential backoff, at least the service's RetryInfo hint unless we switch model.

        The main model is given up for the fallback after half the attempts failed with 429/503 in a
        row, or at once when its quota hint is longer than the retry budget left.
        """
        s = self.settings
        cap = min(MAX_SINGLE_WAIT_S, s.gemini_max_retry_s)
        wait = min(cap, self._retry_initial_s * 2 ** (rs.attempt_number - 1)) * random.uniform(0.5, 1.0)
        hint = _retry_hint_s(rs.outcome.exception() if rs.outcome else None)
        if self.fallback_model and not state.on_fallback and state.overloads:
            too_long = hint is not None and hint > s.gemini_max_retry_s - rs.seconds_since_start
            state.switch = state.switch or too_long or state.overloads >= max(1, s.gemini_max_attempts // 2)
        if hint is not None and not state.switch:
            wait = max(wait, hint)
        exc = rs.outcome.exception() if rs.outcome else None
        if self.limiter is not None and isinstance(exc, genai_errors.APIError) and exc.code == 429:
            self.limiter.back_off(wait)  # the quota is the key's: every session pauses, not just this one
        return wait

    def _log_retry(self, rs: RetryCallState, state: _CallState) -> None:
        exc = rs.outcome.exception() if rs.outcome else None
        reason = f"{exc.code} {exc.status}" if isinstance(exc, genai_errors.APIError) else type(exc).__name__
        log.info(
            "gemini %s: attempt %d on %s failed (%s); retrying in %.2fs",
            state.record.purpose,
            rs.attempt_number,
            state.record.model,
            reason,
            rs.upcoming_sleep,
            extra={
                "emage_retry": RetryNote(
                    backend="gemini",
                    purpose=state.record.purpose,
                    attempt=rs.attempt_number,
                    max_attempts=self.settings.gemini_max_attempts,
                    wait_s=rs.upcoming_sleep,
                    reason=str(exc.code) if isinstance(exc, genai_errors.APIError) else type(exc).__name__,
                )
            },  # fmt: skip
        )

    def _translate(self, exc: genai_errors.APIError, state: _CallState) -> EmageError:
        model = state.record.model
        text = self.scrub(f"{exc.code} {exc.status or ''}: {exc.message or exc.details}")[:400]
        if _key_rejected(exc):
            return UserError(f"was rejected by Gemini ({text}); check the key", field="GEMINI_API_KEY")
        if exc.code == 404:
            field = "EMAGE_GEMINI_MODEL" if model == self.model else "EMAGE_GEMINI_FALLBACK_MODEL"
            return UserError(f"Gemini does not know the model {model!r} ({text})", field=field)
        if exc.code in RETRYABLE_CODES:
            tried = f"{self.model} then {self.fallback_model}" if state.on_fallback else model
            return VLMUnavailable(
                f"Gemini kept failing for the {state.record.purpose} call: {state.record.attempts} attempt(s) "
                f"on {tried} within {self.settings.gemini_max_retry_s}s; last error {text}"
            )
        return GeminiRequestError(f"Gemini rejected the {state.record.purpose} request ({text})")
