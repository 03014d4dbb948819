"""``/api/health`` (no authentication), ``/api/status`` and the OpenAPI schema."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from closedpaw.api.deps import Auth, GateDep, settings_of
from closedpaw.api.schemas import Health

router = APIRouter()


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, p: Auth) -> dict[str, Any]:
    """The schema, like every route but the health probe, needs a token."""
    schema: dict[str, Any] = request.app.openapi()
    return schema


@router.get("/api/health", response_model=Health, tags=["status"])
def health() -> Health:
    """Liveness probe; the only route without authentication."""
    return Health(status="ok")


@router.get("/api/status", tags=["status"])
def status(request: Request, gate: GateDep, p: Auth) -> dict[str, Any]:
    """Runtimes, isolation and counts (the sandbox part comes from the gate)."""
    settings = settings_of(request)
    out = gate.status()
    out["principal"] = {"name": p.name, "role": p.role}
    out["sandbox"] = gate.sandbox_status()
    out["approval_ttl_s"] = settings.gate.approval_ttl_s
    out["require_distinct_approver"] = settings.gate.require_distinct_approver
    return out
