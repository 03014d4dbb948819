"""``/api/audit-logs`` and ``/api/audit/verify`` (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from closedpaw.api.deps import Auth, GateDep, admin_only
from closedpaw.api.schemas import AuditPage

router = APIRouter(tags=["audit"])

_SCAN = 1000   # entries read per step while filtering
_SCAN_MAX = 100_000   # a filtered page reads at most this many entries, then says where it is


@router.get("/api/audit-logs", response_model=AuditPage)
def audit_logs(request: Request, gate: GateDep, p: Auth,
               after_seq: Annotated[int, Query(ge=0, le=2**53)] = 0,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               event: Annotated[str | None, Query(max_length=100)] = None,
               principal: Annotated[str | None, Query(max_length=100)] = None,
               action_id: Annotated[str | None, Query(max_length=100)] = None) -> AuditPage:
    """Audit entries with seq > after_seq, oldest first (admin); ``event``, ``principal`` and
    ``action_id`` keep only the entries equal to them (``event`` also matches a prefix ending
    in a dot: ``action.``). ``next_after_seq``: where the next page starts, or null at the end.
    """
    admin_only(request, p, "reading the audit log")
    if not (event or principal or action_id):
        entries = gate.audit.entries(after_seq=after_seq, limit=limit)
        return AuditPage(entries=[e.to_dict() for e in entries],
                         next_after_seq=entries[-1].seq if len(entries) == limit else None)

    def keep(e: Any) -> bool:
        ev = str(e.event)
        return ((not event or ev == event or (event.endswith(".") and ev.startswith(event)))
                and (not principal or e.principal == principal)
                and (not action_id or e.action_id == action_id))

    out: list[Any] = []
    cursor, scanned = after_seq, 0
    while len(out) < limit:
        chunk = gate.audit.entries(after_seq=cursor, limit=_SCAN)
        if not chunk:
            return AuditPage(entries=[e.to_dict() for e in out], next_after_seq=None)
        for e in chunk:
            cursor = e.seq
            if keep(e):
                out.append(e)
                if len(out) == limit:
                    break
        scanned += len(chunk)
        if len(chunk) < _SCAN and len(out) < limit:
            return AuditPage(entries=[e.to_dict() for e in out], next_after_seq=None)
        if scanned >= _SCAN_MAX:
            break
    return AuditPage(entries=[e.to_dict() for e in out], next_after_seq=cursor)


@router.get("/api/audit/verify")
def audit_verify(request: Request, gate: GateDep, p: Auth) -> dict[str, Any]:
    """Check the whole chain (admin)."""
    admin_only(request, p, "verifying the audit log")
    return gate.audit.verify().to_dict()
