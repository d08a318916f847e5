"""Secrets never leave the process: one scrubber for every boundary where text goes out.

Why one module on the floor: errors, session records, the report, progress events, logs and MCP
results all carry text that may hold model output or request data, and a model can echo a key
it was sent. Each of them passes through :func:`scrub`, which removes

- every secret value this process was configured with (:func:`remember_secret`, called with the
  settings' ``SecretStr`` fields when an agent is built), whatever it looks like;
- anything shaped like a Google API key (``AIza...``), a Hugging Face token (``hf_...``) or an
  OpenAI key (``sk-...``), configured here or not.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

REDACTED = "[redacted]"
_SECRET_RE = re.compile(r"AIza[0-9A-Za-z_\-]{8,}|hf_[0-9A-Za-z]{20,}|sk-[0-9A-Za-z_\-]{20,}")
_MIN_SECRET = 6  # shorter values would redact ordinary words
_known: set[str] = set()
_guard = threading.Lock()


def remember_secret(value: Any) -> None:
    """Scrub this exact value from now on (a ``SecretStr`` or a plain string; empty values are ignored)."""
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    if isinstance(text, str) and len(text.strip()) >= _MIN_SECRET:
        with _guard:
            _known.add(text.strip())


def remember_settings(settings: Any) -> None:
    """Every ``SecretStr`` field of a settings object (keys, tokens, passwords)."""
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if hasattr(value, "get_secret_value"):
            remember_secret(value)


def scrub(value: Any) -> Any:
    """``value`` with every secret replaced by ``[redacted]``; dicts, lists and tuples are walked."""
    if isinstance(value, str):
        for secret in sorted(_known, key=len, reverse=True):
            if secret in value:
                value = value.replace(secret, REDACTED)
        return _SECRET_RE.sub(REDACTED, value)
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def one_line(text: str, limit: int = 600) -> str:
    """``text`` scrubbed, on one line and at most ``limit`` characters: fit for stderr and tool errors."""
    flat = " ".join(scrub(str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def install_log_scrubber() -> None:
    """Scrub every log record's final message (model text reaches warnings); idempotent, process-wide."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "_emage_scrubbed", False):
        return

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string stays the logging module's business
            return record
        record.msg, record.args = scrub(message), None
        return record

    make._emage_scrubbed = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make)
