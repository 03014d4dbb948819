"""Dependencies the routers share: the gate, the authenticated principal, the admin check.

The app factory puts the gate, the settings and the two rate limiters on ``app.state``; these
functions read them from there, so a router module holds no state of its own.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from closedpaw.assistant import Assistant
from closedpaw.audit import AuditEvent
from closedpaw.errors import AuthenticationFailed, PermissionDenied, RateLimited
from closedpaw.gate import Gate
from closedpaw.providers import Gateway
from closedpaw.security import Principal, RateLimiter, token_looks_valid
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
    """The principal behind ``Authorization: Bearer <token>``; failures are audited and rate
    limited per client address, successes per principal."""
    gate = gate_of(request)
    state = request.app.state
    client = request.client.host if request.client else "unknown"
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    principal = None
    if scheme.lower() == "bearer" and token_looks_valid(token):
        principal = gate.authenticate(token)
    if principal is None:
        reason = ("no bearer token" if not header else
                  "malformed token" if not token_looks_valid(token) else "unknown token")
        gate.audit.append(AuditEvent.AUTH_FAILED, principal="anonymous",
                          details={"client": client, "path": request.url.path[:200],
                                   "reason": reason})
        fail_limiter: RateLimiter = state.fail_limiter
        wait = fail_limiter.hit(f"ip:{client}")
        if wait:
            raise RateLimited(wait)
        raise AuthenticationFailed(f"{reason}: send 'Authorization: Bearer <token>' "
                                   f"(the admin token is in {settings_of(request).token_file})")
    limiter: RateLimiter = state.limiter
    wait = limiter.hit(f"principal:{principal.name}")
    if wait:
        gate.audit.append(AuditEvent.RATE_LIMITED, principal=principal.name,
                          details={"path": request.url.path[:200], "retry_after": wait})
        raise RateLimited(wait)
    return principal


Auth = Annotated[Principal, Depends(authenticate)]
GateDep = Annotated[Gate, Depends(gate_of)]


def admin_only(request: Request, p: Principal, what: str) -> None:
    if not p.is_admin:
        gate_of(request).audit.append(AuditEvent.PERMISSION_DENIED, principal=p.name,
                                      details={"path": request.url.path[:200]})
        raise PermissionDenied(f"{what} needs the admin role")
