"""The three kinds of error EMage distinguishes, so every caller knows who must act.

- ``ModelMistake``: the vision-language model proposed something invalid; the message
  goes back to it and it may try again. Never ends a session.
- ``UserError``: bad input or configuration; the CLI prints one line and exits 2.
- ``ExecutionFailure``: something broke while running; the step is recorded as failed
  and the session stays resumable (CLI exit 1).
"""

from __future__ import annotations

from emage_agent.core.redact import scrub


class EmageError(Exception):
    """Base of every error EMage raises on purpose. Its message is scrubbed of secrets when made:
    errors carry model answers and request data to stderr, tool results, session records and reports."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(scrub(a) if isinstance(a, str) else a for a in args))


class UserError(EmageError):
    """Bad input or configuration. ``field`` names what to fix when there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class SessionBusy(UserError):
    """Another process is writing the session; one writer at a time (CLI exit 3: wait, then try again)."""


class InvalidArgument(UserError):
    """An argument breaks a tool contract (type, bounds, required, enum, ...)."""


class ModelMistake(EmageError):
    """The model's output was unusable; tell the model and let it retry."""


class ExecutionFailure(EmageError):
    """A failure while running (GPU, I/O, remote service); recorded, session resumable."""


class VLMUnavailable(ExecutionFailure):
    """The vision-language model could not be reached or kept failing after bounded retries."""


class UnreadableAnswer(ExecutionFailure):
    """The model answered, but nothing usable could be read from it (never a silent default)."""
