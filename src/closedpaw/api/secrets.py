"""Routes of the vault (to move to api/routes/secrets.py): list, set and delete secrets
(admin), the vault's status and unlock (admin), and the one route that returns a value: the
one-time delivery of a completed, approved ``secret_read`` to its requester.

No other route returns a value; set returns the stored version's metadata only.
"""

# no "from __future__ import annotations": FastAPI reads the local Auth alias at runtime

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from closedpaw.audit import AuditEvent
from closedpaw.orchestrator import Orchestrator
from closedpaw.security import Principal
from closedpaw.vault.levels import Level
from closedpaw.vault.vault import MAX_VALUE_BYTES, NAME_PATTERN

__all__ = ["secret_routes"]


class SecretInfoOut(BaseModel):
    name: str
    level: str
    version: int
    versions: list[int]
    created_at: float
    updated_at: float
    created_by: str


class SecretList(BaseModel):
    secrets: list[SecretInfoOut]


class SecretSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # characters: at most 4 UTF-8 bytes each, so any accepted value fits the vault's limit
    value: str = Field(min_length=1, max_length=MAX_VALUE_BYTES // 4)
    level: Level | None = Field(default=None, description="default: the current version's "
                                "level, standard for a new secret")


class Deleted(BaseModel):
    name: str
    deleted_versions: int


class VaultStatus(BaseModel):
    initialized: bool
    locked: bool
    kdf: str | None = None
    generation: int | None = None
    secrets: int | None = None


class Unlock(BaseModel):
    model_config = ConfigDict(extra="forbid")
    passphrase: str = Field(min_length=1, max_length=4096)


class Delivery(BaseModel):
    action_id: str
    name: str
    version: int
    value: str


#: OpenAPI links: the name a PUT answers with addresses the other secret routes
_NAME_LINKS = {"DeleteSecret": {"operationId": "delete_secret",
                                "parameters": {"name": "$response.body#/name"}}}


def _orch(request: Request) -> Orchestrator:
    o: Orchestrator = request.app.state.orchestrator
    return o


def _status(orch: Orchestrator) -> dict[str, Any]:
    st = orch.vault().status()
    return {k: st.get(k) for k in ("initialized", "locked", "kdf", "generation", "secrets")}


def secret_routes(authenticate: Callable[..., Principal],
                  admin_only: Callable[[Request, Principal, str], None]) -> APIRouter:
    """The router, given the app's authentication dependency and its admin check."""
    Auth = Annotated[Principal, Depends(authenticate)]
    r = APIRouter(tags=["secrets"])

    @r.get("/api/secrets", response_model=SecretList)
    def list_secrets(request: Request, p: Auth) -> dict[str, Any]:
        """Names, levels, versions and times (admin); never values."""
        admin_only(request, p, "listing secrets")
        return {"secrets": [i.to_dict() for i in _orch(request).vault().list()]}

    @r.put("/api/secrets/{name:path}", response_model=SecretInfoOut, operation_id="set_secret",
           openapi_extra={"responses": {"200": {"description": "the stored version",
                                                "links": _NAME_LINKS}}})
    def set_secret(name: Annotated[str, PathParam(pattern=NAME_PATTERN)], body: SecretSet,
                   request: Request, p: Auth) -> dict[str, Any]:
        """Store a new version (admin); earlier versions are kept until pruned."""
        admin_only(request, p, "storing secrets")
        orch = _orch(request)
        info = orch.vault().set(name, body.value, body.level, by=p.name)
        orch.audit.append(AuditEvent.SECRET_SET, principal=p.name,
                          details={"name": info.name, "level": str(info.level),
                                   "version": info.version})
        return info.to_dict()

    @r.delete("/api/secrets/{name:path}", response_model=Deleted, operation_id="delete_secret")
    def delete_secret(name: Annotated[str, PathParam(pattern=NAME_PATTERN)], request: Request,
                      p: Auth) -> dict[str, Any]:
        """Remove every version (admin)."""
        admin_only(request, p, "deleting secrets")
        orch = _orch(request)
        n = orch.vault().delete(name)
        orch.audit.append(AuditEvent.SECRET_DELETED, principal=p.name,
                          details={"name": name, "versions": n})
        return {"name": name, "deleted_versions": n}

    @r.get("/api/vault", response_model=VaultStatus)
    def vault_status(request: Request, p: Auth) -> dict[str, Any]:
        """Initialised? locked? how it opens."""
        return _status(_orch(request))

    @r.post("/api/vault/unlock", response_model=VaultStatus)
    async def unlock(body: Unlock, request: Request, p: Auth) -> dict[str, Any]:
        """Unlock a passphrase vault (admin); a wrong passphrase is 403 and audited."""
        admin_only(request, p, "unlocking the vault")
        orch = _orch(request)
        try:
            await run_in_threadpool(orch.vault().unlock, body.passphrase)
        except Exception as e:
            await run_in_threadpool(orch.audit.append, AuditEvent.VAULT_UNLOCKED,
                                    principal=p.name, details={"ok": False,
                                                               "error": type(e).__name__})
            raise
        await run_in_threadpool(orch.audit.append, AuditEvent.VAULT_UNLOCKED,
                                principal=p.name, details={"ok": True})
        return _status(orch)

    @r.get("/api/actions/{action_id}/secret", response_model=Delivery,
           operation_id="fetch_secret")
    def delivery(action_id: str, request: Request, p: Auth) -> dict[str, Any]:
        """The value of a completed secret_read, to its requester, once."""
        from closedpaw.orchestrator.secret_executor import deliver

        orch = _orch(request)
        return deliver(orch, orch.get(action_id), p.name)

    return r
