"""ClosedPaw: a zero-trust, local-first AI assistant. Today: its sandbox engine and the gate
(risk rules, approvals, audit log, HTTP API) in front of it."""

from closedpaw.errors import ClosedPawError
from closedpaw.settings import Settings

__all__ = ["ClosedPawError", "Settings", "__version__"]
__version__ = "0.1.0"
