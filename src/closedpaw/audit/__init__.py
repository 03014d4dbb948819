"""The tamper-evident audit log: typed events in an append-only, fsync'd, HMAC-chained file.

Imports nothing above ``errors`` and ``settings``; the gate, API and CLI write to it.
"""

from closedpaw.audit.events import AuditEntry, AuditEvent, canonical_json
from closedpaw.audit.log import AuditLog, VerifyReport

__all__ = ["AuditEntry", "AuditEvent", "AuditLog", "VerifyReport", "canonical_json"]
