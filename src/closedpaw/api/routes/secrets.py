"""``/api/secrets`` and ``/api/vault``: list, set and delete secrets (admin), the vault's
status and unlock (admin), and the one route that returns a value:
``GET /api/actions/{id}/secret``, the one-time delivery of a completed, approved
``secret_read`` to its requester (the response redaction lets exactly this answer through).

No other route returns a value; set answers with the stored version's metadata only.
"""

# no "from __future__ import annotations": FastAPI reads the Path alias below at runtime

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool

from closedpaw.api.deps import Auth, GateDep, admin_only
from closedpaw.api.schemas import (
    SecretDeleted,
    SecretDelivery,
    SecretInfoOut,
    SecretList,
    SecretSet,
    VaultStatus,
    VaultUnlock,
)
from closedpaw.audit import AuditEvent
from closedpaw.errors import RateLimited
from closedpaw.gate import Gate
from closedpaw.gate.executors.secret import deliver
from closedpaw.security import RateLimiter, Summaries
from closedpaw.vault.vault import NAME_PATTERN

__all__ = ["DELIVERY_PATH", "UNLOCK_ATTEMPTS_PER_MINUTE", "router"]

router = APIRouter(tags=["secrets"])

#: the route whose answer carries a value (matched by the response redaction)
DELIVERY_PATH = r"^/api/actions/[^/]+/secret$"

#: unlock attempts (right or wrong) per principal per minute, burst the same: a passphrase
#: cannot be guessed through the API faster than this (each attempt also costs an Argon2id)
UNLOCK_ATTEMPTS_PER_MINUTE = 5

SecretName = Annotated[str, PathParam(pattern=NAME_PATTERN)]

#: OpenAPI links: the name a PUT answers with addresses the other secret routes
_NAME_LINKS = {"DeleteSecret": {"operationId": "delete_secret",
                                "parameters": {"name": "$response.body#/name"}}}


def _status(gate: Gate) -> dict[str, Any]:
    st = gate.vault.status()
    return {k: st.get(k) for k in ("initialized", "locked", "kdf", "generation", "secrets")}


@router.get("/api/secrets", response_model=SecretList)
def list_secrets(request: Request, gate: GateDep, p: Auth) -> dict[str, Any]:
    """Names, levels, versions and times (admin); never values."""
    admin_only(request, p, "listing secrets")
    return {"secrets": [i.to_dict() for i in gate.vault.list()]}


@router.put("/api/secrets/{name:path}", response_model=SecretInfoOut, operation_id="set_secret",
            openapi_extra={"responses": {"200": {"description": "the stored version",
                                                 "links": _NAME_LINKS}}})
def set_secret(name: SecretName, body: SecretSet, request: Request, gate: GateDep,
               p: Auth) -> dict[str, Any]:
    """Store a new version (admin); earlier versions are kept until pruned."""
    admin_only(request, p, "storing secrets")
    info = gate.vault.set(name, body.value, body.level, by=p.name)
    gate.audit.append(AuditEvent.SECRET_SET, principal=p.name,
                      details={"name": info.name, "level": str(info.level),
                               "version": info.version})
    return info.to_dict()


@router.delete("/api/secrets/{name:path}", response_model=SecretDeleted,
               operation_id="delete_secret")
def delete_secret(name: SecretName, request: Request, gate: GateDep, p: Auth) -> dict[str, Any]:
    """Remove every version (admin)."""
    admin_only(request, p, "deleting secrets")
    n = gate.vault.delete(name)
    gate.audit.append(AuditEvent.SECRET_DELETED, principal=p.name,
                      details={"name": name, "versions": n})
    return {"name": name, "deleted_versions": n}


@router.get("/api/vault", response_model=VaultStatus)
def vault_status(gate: GateDep, p: Auth) -> dict[str, Any]:
    """Initialised? locked? how it opens."""
    return _status(gate)


@router.post("/api/vault/unlock", response_model=VaultStatus)
async def unlock(body: VaultUnlock, request: Request, gate: GateDep, p: Auth) -> dict[str, Any]:
    """Unlock a passphrase vault (admin); a wrong passphrase is 403 and audited; more than
    UNLOCK_ATTEMPTS_PER_MINUTE attempts a minute by one principal are 429 (counted in the
    rate-limit summary, never tried). The passphrase is never logged or audited."""
    admin_only(request, p, "unlocking the vault")
    limiter: RateLimiter = request.app.state.unlock_limiter
    wait = limiter.hit(f"unlock:{p.name}")
    if wait:
        limited: Summaries = request.app.state.rate_limited
        limited.add(p.name, "/api/vault/unlock")
        raise RateLimited(wait)
    try:
        await run_in_threadpool(gate.vault.unlock, body.passphrase)
    except Exception as e:
        await run_in_threadpool(gate.audit.append, AuditEvent.VAULT_UNLOCKED,
                                principal=p.name, details={"ok": False,
                                                           "error": type(e).__name__})
        raise
    await run_in_threadpool(gate.audit.append, AuditEvent.VAULT_UNLOCKED,
                            principal=p.name, details={"ok": True})
    return _status(gate)


@router.get("/api/actions/{action_id}/secret", response_model=SecretDelivery,
            operation_id="fetch_secret", tags=["actions"])
def delivery(action_id: str, gate: GateDep, p: Auth) -> dict[str, Any]:
    """The value of a completed secret_read, to its requester, once. Another user's action
    is not found, whatever it is (its type and existence were told before)."""
    return deliver(gate.context, gate.get(action_id, p), p.name)
