"""Sessions on disk: SQLite (WAL) plus PNG artifacts, one transaction per step.

The rest of EMage uses the store, its records and the loop's read-only view; the schema and
the file helpers stay inside this package.
"""

from emage_agent.session.files import atomic_write_bytes, scrub
from emage_agent.session.records import CallRecord, StepRecord
from emage_agent.session.store import SessionStore
from emage_agent.session.view import IMAGE_TOOLS, SessionView

__all__ = [
    "IMAGE_TOOLS",
    "CallRecord",
    "SessionStore",
    "SessionView",
    "StepRecord",
    "atomic_write_bytes",
    "scrub",
]
