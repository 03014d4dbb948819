"""Dependencies the routers share: the gate, the authenticated principal, the admin check.

The app factory puts the gate, the settings and the two rate limiters on ``app.state``; these
functions read them from there, so a router module holds no state of its own.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from closedpaw.assistant import Assistant
from closedpaw.audit import AuditEvent
from closedpaw.errors import AuthenticationFailed, PermissionDenied
from closedpaw.gate import Gate
from closedpaw.providers import Gateway
from closedpaw.security import Principal
from closedpaw.settings import Settings

__all__ = ["Auth", "GateDep", "admin_only", "assistant_of", "authenticate", "gate_of",
           "gateway_of", "settings_of"]


def gate_of(request: Request) -> Gate:
    g: Gate = request.app.state.gate
    return g


def assistant_of(request: Request) -> Assistant:
    a: Assistant = request.app.state.assistant
    return a


def gateway_of(request: Request) -> Gateway:
    g: Gateway = request.app.state.gateway
    return g


def settings_of(request: Request) -> Settings:
    s: Settings = request.app.state.settings
    return s


def authenticate(request: Request) -> Principal:
    """The principal :class:`~closedpaw.api.guard.AuthGuard` authenticated from the headers
    (and rate limited) before anything read the body; none there: refused (fail closed)."""
    p = request.scope.get("state", {}).get("principal")
    if not isinstance(p, Principal):
        raise AuthenticationFailed("send 'Authorization: Bearer <token>'")
    return p


Auth = Annotated[Principal, Depends(authenticate)]
GateDep = Annotated[Gate, Depends(gate_of)]


def admin_only(request: Request, p: Principal, what: str) -> None:
    if not p.is_admin:
        gate_of(request).audit.append(AuditEvent.PERMISSION_DENIED, principal=p.name,
                                      details={"path": request.url.path[:200]})
        raise PermissionDenied(f"{what} needs the admin role")
