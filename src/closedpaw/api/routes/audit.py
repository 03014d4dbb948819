"""``/api/audit-logs`` and ``/api/audit/verify`` (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from closedpaw.api.deps import Auth, GateDep, admin_only
from closedpaw.api.schemas import AuditPage

router = APIRouter(tags=["audit"])


@router.get("/api/audit-logs", response_model=AuditPage)
def audit_logs(request: Request, gate: GateDep, p: Auth,
               after_seq: Annotated[int, Query(ge=0, le=2**53)] = 0,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> AuditPage:
    """Audit entries with seq > after_seq, oldest first (admin)."""
    admin_only(request, p, "reading the audit log")
    entries = gate.audit.entries(after_seq=after_seq, limit=limit)
    return AuditPage(entries=[e.to_dict() for e in entries],
                     next_after_seq=entries[-1].seq if len(entries) == limit else None)


@router.get("/api/audit/verify")
def audit_verify(request: Request, gate: GateDep, p: Auth) -> dict[str, Any]:
    """Check the whole chain (admin)."""
    admin_only(request, p, "verifying the audit log")
    return gate.audit.verify().to_dict()
