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
    """Runtimes, isolation, counts and the execution queue (running and queued per
    principal; the sandbox part comes from the gate). A user is shown its own counts and
    queue entries, and not the audit's size or the database."""
    settings = settings_of(request)
    out = gate.status(p)
    out["principal"] = {"name": p.name, "role": p.role}
    out["sandbox"] = gate.sandbox_status()
    out["approval_ttl_s"] = settings.gate.approval_ttl_s
    out["require_distinct_approver"] = settings.gate.require_distinct_approver
    return out


def _usage(mgr: Any, sid: str) -> dict[str, Any]:
    """A live sandbox's CPU time and memory from its cgroups (all of it: under runsc the
    Sentry and gofer too); empty fields when it ended meanwhile or cannot be read."""
    from closedpaw.errors import ClosedPawError

    try:
        u = mgr.get(sid).usage()
    except (ClosedPawError, OSError):
        return {"cpu_ms": None, "memory_mib": None, "peak_memory_mib": None}

    def mib(n: int | None) -> float | None:
        return None if n is None else round(n / 2**20, 1)
    return {"cpu_ms": None if u.cpu_time_ms is None else round(u.cpu_time_ms, 1),
            "memory_mib": mib(u.memory_bytes), "peak_memory_mib": mib(u.peak_memory_bytes)}


@router.get("/api/sandboxes", tags=["status"])
def sandboxes(request: Request, gate: GateDep, p: Auth) -> dict[str, Any]:
    """This server's live sandboxes, its warm pools with their counters, the installed images
    and the execution policies (admin; the web UI's Sandboxes page)."""
    from dataclasses import asdict

    from closedpaw.api.deps import admin_only
    from closedpaw.errors import ClosedPawError
    from closedpaw.sandbox.images import ImageStore

    admin_only(request, p, "listing sandboxes")
    mgr = gate.sandbox_manager()
    live = [{"id": i.id, "status": str(i.status), "runtime": i.runtime,
             "created_at": i.created_at, **_usage(mgr, i.id)} for i in mgr.list()]
    pools = []
    for name in gate.context.pools.policies():
        pool = gate.context.pools.get(mgr, name)
        if pool is not None:
            pools.append({"policy": name, **asdict(pool.stats())})
    try:
        images = [{k: v for k, v in img.to_dict().items() if k != "rootfs"}
                  for img in ImageStore(settings_of(request).images).list()]
    except (ClosedPawError, OSError) as e:
        images = [{"error": str(e)[:300]}]
    policies = mgr.policies()
    return {"live": live, "pools": pools, "images": images,
            "policies": [policies.get(n).to_dict() for n in policies.names()]}
