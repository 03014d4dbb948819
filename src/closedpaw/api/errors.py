"""One table from ClosedPaw errors to HTTP statuses; every error body is
``{"error": {"code": <stable>, "message": <one line>}}`` and never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from closedpaw.errors import (
    ActionNotFound,
    ActionStateError,
    ApprovalRefused,
    AssistantError,
    AuditError,
    AuthenticationFailed,
    AuthError,
    ChannelError,
    ClientError,
    ClosedPawError,
    ConfigError,
    ConversationNotFound,
    GateError,
    InvalidRequest,
    PairingRefused,
    PermissionDenied,
    ProviderError,
    ProviderNotConfigured,
    ProviderRateLimited,
    QuotaExceeded,
    RateLimited,
    SandboxError,
    SecretNotFound,
    SecretTampered,
    StoreError,
    TurnStateError,
    VaultError,
    VaultKeyInvalid,
    VaultLocked,
)

__all__ = ["STATUS", "error_body", "install_error_handlers"]

log = logging.getLogger("closedpaw.api")

#: most specific first
STATUS: list[tuple[type[ClosedPawError], int]] = [
    (AuthenticationFailed, 401), (PermissionDenied, 403), (AuthError, 401), (ActionNotFound, 404),
    (ActionStateError, 409), (ApprovalRefused, 409), (RateLimited, 429), (QuotaExceeded, 429),
    (InvalidRequest, 400), (ConfigError, 400), (AuditError, 503), (StoreError, 503),
    (SandboxError, 503), (GateError, 400), (ClientError, 502),
    # the vault (issue 9)
    (SecretNotFound, 404), (VaultLocked, 423), (VaultKeyInvalid, 403), (SecretTampered, 409),
    (VaultError, 409), (PairingRefused, 409), (ChannelError, 502),
    (ConversationNotFound, 404), (TurnStateError, 409), (AssistantError, 400),
    (ProviderNotConfigured, 503), (ProviderRateLimited, 503), (ProviderError, 502),
]

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 413: "too_large",
               415: "unsupported_media_type"}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def _status(e: ClosedPawError) -> int:
    if isinstance(e, ApprovalRefused) and e.reason == "role":
        return 403
    for cls, status in STATUS:
        if isinstance(e, cls):
            return status
    return 500


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ClosedPawError)
    async def _ours(_: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, ClosedPawError)
        extra: dict[str, Any] = {}
        headers: dict[str, str] = {}
        if isinstance(e, ApprovalRefused):
            extra["reason"] = e.reason
        if isinstance(e, RateLimited):
            headers["Retry-After"] = str(int(e.retry_after))
            extra["retry_after"] = int(e.retry_after)
        if isinstance(e, AuthenticationFailed):
            headers["WWW-Authenticate"] = "Bearer"
        status = _status(e)
        if status >= 500:
            log.error("%s: %s", type(e).__name__, e)
        message = " ".join(str(e).split())[:2000]
        return JSONResponse(error_body(e.code, message, **extra), status_code=status,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, RequestValidationError)
        problems = [{"loc": [str(p) for p in err.get("loc", ())],
                     "msg": str(err.get("msg", ""))[:500]} for err in e.errors()[:20]]
        first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
        where = ".".join(first["loc"][1:] if len(first["loc"]) > 1 else first["loc"])
        return JSONResponse(error_body("invalid_request", f"{where or 'body'}: {first['msg']}",
                                       problems=problems), status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, HTTPException)
        code = _HTTP_CODES.get(e.status_code, f"http_{e.status_code}")
        return JSONResponse(error_body(code, str(e.detail)), status_code=e.status_code,
                            headers=dict(e.headers or {}))

    @app.exception_handler(Exception)
    async def _bug(_: Request, e: Exception) -> JSONResponse:
        log.error("unhandled %s", type(e).__name__, exc_info=e)
        return JSONResponse(error_body("internal_error", "internal error; the server log "
                                       "has the details"), status_code=500)
