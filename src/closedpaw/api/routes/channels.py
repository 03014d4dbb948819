"""``/api/channels``: the chat channels of this server (admin only): their status, pairing
requests, approving a pairing code, revoking a paired user. Tokens are shown as their
``secret:NAME`` reference, never a value."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from closedpaw.api.deps import Auth, admin_only
from closedpaw.channels.service import ChannelService
from closedpaw.errors import NotConfigured

__all__ = ["router"]

router = APIRouter(tags=["channels"])


class PairApprove(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=32)


class PairRevoke(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1, max_length=300)


def _service(request: Request) -> ChannelService:
    svc: ChannelService | None = getattr(request.app.state, "channels", None)
    if svc is None:
        raise NotConfigured("the channels service is not running")
    return svc


@router.get("/api/channels")
def list_channels(request: Request, p: Auth) -> dict[str, Any]:
    """Every configured channel with its state (running, error, counts)."""
    admin_only(request, p, "listing channels")
    return {"channels": _service(request).status()}


@router.get("/api/channels/pairings")
def list_pairings(request: Request, p: Auth) -> dict[str, Any]:
    """Pending pairing requests (never their codes) and paired users."""
    admin_only(request, p, "listing pairings")
    return _service(request).pairings()


@router.post("/api/channels/pairings/approve")
async def approve_pairing(request: Request, body: PairApprove, p: Auth) -> dict[str, Any]:
    """Use a pairing code once: its person becomes a new principal with the ``user`` role."""
    admin_only(request, p, "approving a pairing")
    out: dict[str, Any] = await run_in_threadpool(_service(request).approve_pairing, body.code,
                                                  p)
    return out


@router.post("/api/channels/{name}/revoke")
async def revoke_user(request: Request, name: str, body: PairRevoke, p: Auth
                      ) -> dict[str, Any]:
    """Unpair a user (its immutable id) and disable its principal."""
    admin_only(request, p, "revoking a channel user")
    out: dict[str, Any] = await run_in_threadpool(_service(request).revoke_user, name,
                                                  body.user, p)
    return out
