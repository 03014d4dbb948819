"""``create_app(settings)``: the FastAPI application, its lifespan and its routes.

Every route but ``GET /api/health`` needs ``Authorization: Bearer <token>``; tokens map to
principals (name, role) in the database. Each principal is rate limited (429 + Retry-After);
failed authentications are audited and rate limited per client address. There is no CORS
middleware: browsers on other origins get nothing.
"""


import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from closedpaw.api.errors import error_body, install_error_handlers
from closedpaw.audit import AuditEvent
from closedpaw.errors import (
    AuthenticationFailed,
    ClosedPawError,
    PermissionDenied,
    RateLimited,
)
from closedpaw.orchestrator import ActionRequest, ActionStatus, Orchestrator
from closedpaw.orchestrator.actions import check_json_value
from closedpaw.security import Principal, RateLimiter, token_looks_valid
from closedpaw.settings import Settings

__all__ = ["bootstrap_admin", "create_app"]

SHA256 = r"^[0-9a-f]{64}$"
MAX_BODY = 8 * 1024 * 1024   # bytes of request body; more is refused with 413


# -- wire models (also the OpenAPI schema) --------------------------------------------------
class SubmitResponse(BaseModel):
    action_id: str
    status: str
    security_level: str
    requires_approval: bool
    params_sha256: str
    level_reason: str
    expires_at: float | None


class ActionOut(BaseModel):
    action_id: str
    action_type: str
    parameters: dict[str, Any]
    canonical_parameters: str = Field(description="the exact JSON params_sha256 is taken of")
    params_sha256: str
    status: str
    security_level: str
    level_reason: str
    requires_approval: bool
    requester: str
    created_at: float
    updated_at: float
    expires_at: float | None
    decided_by: str | None
    decided_at: float | None
    result: dict[str, Any] | None
    error: str | None


class ActionList(BaseModel):
    actions: list[ActionOut]


class ApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    params_sha256: str = Field(pattern=SHA256, description="sha256 of canonical_parameters")


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=1000)

    _r = field_validator("reason")(check_json_value)


class AuditPage(BaseModel):
    entries: list[dict[str, Any]]
    next_after_seq: int | None


class Health(BaseModel):
    status: str


# -- admin bootstrap ---------------------------------------------------------------------
def bootstrap_admin(orch: Orchestrator, settings: Settings) -> bool:
    """On first start (no admin yet): create principal ``admin`` and write its token to
    ``data_dir/api-token`` (mode 0600, replaced atomically). Returns True when created."""
    if orch.store.count_admins() > 0:
        return False
    token = orch.create_principal("admin", "admin")
    path = settings.token_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return True


def _orch(request: Request) -> Orchestrator:
    o: Orchestrator = request.app.state.orchestrator
    return o


def create_app(settings: Settings | None = None, *, orchestrator: Orchestrator | None = None,
               on_ready: Callable[[FastAPI], None] | None = None) -> FastAPI:
    """The application. Without ``orchestrator`` one is built from ``settings`` at start-up
    (and closed at shutdown). ``on_ready`` is called once start-up is done."""
    settings = settings or Settings.from_env()
    limiter = RateLimiter(settings.rate_limit_per_minute)
    fail_limiter = RateLimiter(max(10, settings.rate_limit_per_minute // 4))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        orch: Orchestrator = (orchestrator if orchestrator is not None
                              else await run_in_threadpool(Orchestrator, settings))
        app.state.orchestrator = orch
        app.state.streams = set()
        try:
            await run_in_threadpool(orch.start)
            app.state.token_created = await run_in_threadpool(bootstrap_admin, orch, settings)
            app.state.token_path = settings.token_file
            await run_in_threadpool(orch.audit.append, AuditEvent.SERVER_STARTED,
                                    principal="system", details={"pid": os.getpid()})
        except BaseException:
            if orchestrator is None:
                await run_in_threadpool(orch.close)
            raise
        sweeper = asyncio.create_task(_sweep(orch, settings))
        if on_ready is not None:
            on_ready(app)
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            for q in list(app.state.streams):
                q.put_nowait(None)
            with contextlib.suppress(ClosedPawError):
                await run_in_threadpool(orch.audit.append, AuditEvent.SERVER_STOPPED,
                                        principal="system", details={"pid": os.getpid()})
            if orchestrator is None:
                await run_in_threadpool(orch.close)

    app = FastAPI(title="ClosedPaw", version="0.1.0", lifespan=lifespan,
                  description="The zero-trust gate: actions, approvals, audit.",
                  openapi_url=None, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    app.add_middleware(_DeclaredSizeLimit, limit=MAX_BODY)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def authenticate(request: Request) -> Principal:
        orch = _orch(request)
        client = request.client.host if request.client else "unknown"
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        principal = None
        if scheme.lower() == "bearer" and token_looks_valid(token):
            principal = orch.authenticate(token)
        if principal is None:
            reason = ("no bearer token" if not header else
                      "malformed token" if not token_looks_valid(token) else "unknown token")
            orch.audit.append(AuditEvent.AUTH_FAILED, principal="anonymous",
                              details={"client": client, "path": request.url.path[:200],
                                       "reason": reason})
            wait = fail_limiter.hit(f"ip:{client}")
            if wait:
                raise RateLimited(wait)
            raise AuthenticationFailed(f"{reason}: send 'Authorization: Bearer <token>' "
                                       f"(the admin token is in {settings.token_file})")
        wait = limiter.hit(f"principal:{principal.name}")
        if wait:
            orch.audit.append(AuditEvent.RATE_LIMITED, principal=principal.name,
                              details={"path": request.url.path[:200], "retry_after": wait})
            raise RateLimited(wait)
        return principal

    Auth = Annotated[Principal, Depends(authenticate)]

    def admin_only(request: Request, p: Principal, what: str) -> None:
        if not p.is_admin:
            _orch(request).audit.append(AuditEvent.PERMISSION_DENIED, principal=p.name,
                                        details={"path": request.url.path[:200]})
            raise PermissionDenied(f"{what} needs the admin role")

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(p: Auth) -> dict[str, Any]:
        """The schema, like every route but the health probe, needs a token."""
        return app.openapi()

    @app.get("/api/health", response_model=Health, tags=["status"])
    def health() -> dict[str, str]:
        """Liveness probe; the only route without authentication."""
        return {"status": "ok"}

    @app.post("/api/actions", response_model=SubmitResponse, status_code=201,
              tags=["actions"])
    def submit(body: ActionRequest, request: Request, p: Auth) -> dict[str, Any]:
        """Submit an action. Low and medium run at once; high and critical wait."""
        rec = _orch(request).submit(p, body)
        return {"action_id": rec.id, "status": str(rec.status),
                "security_level": str(rec.security_level),
                "requires_approval": rec.requires_approval,
                "params_sha256": rec.params_sha256, "level_reason": rec.level_reason,
                "expires_at": rec.expires_at}

    @app.get("/api/actions", response_model=ActionList, tags=["actions"])
    def list_actions(request: Request, p: Auth,
                     status: Annotated[ActionStatus | None, Query()] = None,
                     limit: Annotated[int, Query(ge=1, le=500)] = 50,
                     offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> dict[str, Any]:
        recs = _orch(request).list_actions(status=[status] if status else None, limit=limit,
                                           offset=offset)
        return {"actions": [r.to_dict() for r in recs]}

    @app.get("/api/actions/pending", response_model=ActionList, tags=["actions"])
    def pending(request: Request, p: Auth) -> dict[str, Any]:
        """Actions waiting for a decision, with their canonical parameters and hash."""
        return {"actions": [r.to_dict() for r in _orch(request).pending()]}

    @app.get("/api/actions/{action_id}", response_model=ActionOut, tags=["actions"])
    def get_action(action_id: str, request: Request, p: Auth) -> dict[str, Any]:
        return _orch(request).get(action_id).to_dict()

    @app.post("/api/actions/{action_id}/approve", response_model=ActionOut, tags=["actions"])
    def approve(action_id: str, body: ApproveBody, request: Request, p: Auth
                ) -> dict[str, Any]:
        """Approve by the sha256 of the canonical parameters you reviewed. The approver is
        the authenticated principal."""
        return _orch(request).approve(p, action_id, body.params_sha256).to_dict()

    @app.post("/api/actions/{action_id}/reject", response_model=ActionOut, tags=["actions"])
    def reject(action_id: str, request: Request, p: Auth,
               body: RejectBody | None = None) -> dict[str, Any]:
        return _orch(request).reject(p, action_id, body.reason if body else "").to_dict()

    @app.get("/api/audit-logs", response_model=AuditPage, tags=["audit"])
    def audit_logs(request: Request, p: Auth,
                   after_seq: Annotated[int, Query(ge=0, le=2**53)] = 0,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """Audit entries with seq > after_seq, oldest first (admin)."""
        admin_only(request, p, "reading the audit log")
        entries = _orch(request).audit.entries(after_seq=after_seq, limit=limit)
        return {"entries": [e.to_dict() for e in entries],
                "next_after_seq": entries[-1].seq if len(entries) == limit else None}

    @app.get("/api/audit/verify", tags=["audit"])
    def audit_verify(request: Request, p: Auth) -> dict[str, Any]:
        """Check the whole chain (admin)."""
        admin_only(request, p, "verifying the audit log")
        return _orch(request).audit.verify().to_dict()

    @app.get("/api/status", tags=["status"])
    def status(request: Request, p: Auth) -> dict[str, Any]:
        """Runtimes, isolation and counts."""
        orch = _orch(request)
        out = orch.status()
        out["principal"] = {"name": p.name, "role": p.role}
        out["sandbox"] = _sandbox_status(orch)
        out["approval_ttl_s"] = settings.approval_ttl_s
        out["require_distinct_approver"] = settings.require_distinct_approver
        return out

    @app.get("/api/events", tags=["events"],
             responses={200: {"content": {"text/event-stream": {}}}})
    async def events(request: Request, p: Annotated[Principal, Depends(authenticate)]
                     ) -> StreamingResponse:
        """Server-sent events: one ``action`` event per committed transition."""
        orch = _orch(request)
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=1000)
        loop = asyncio.get_running_loop()

        def put(ev: dict[str, Any] | None) -> None:
            if queue.full():  # a reader too slow to keep up is cut off, not buffered forever
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                ev = None
            queue.put_nowait(ev)

        def push(ev: dict[str, Any]) -> None:
            with contextlib.suppress(RuntimeError):  # loop closed
                loop.call_soon_threadsafe(put, ev)

        unsubscribe = orch.subscribe(push)
        request.app.state.streams.add(queue)

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 3000\n: connected\n\n"
                while True:
                    try:
                        ev = await asyncio.wait_for(queue.get(), timeout=15)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if ev is None:
                        return
                    yield f"event: action\ndata: {json.dumps(ev)}\n\n"
            finally:
                unsubscribe()
                request.app.state.streams.discard(queue)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    from closedpaw.api.conversations import install_assistant  # issue 14: the assistant

    install_assistant(app, Auth, settings.data_dir)
    return app


class _BodyTooLarge(Exception):
    pass


class _DeclaredSizeLimit:
    """413 as JSON for a declared Content-Length over the limit, before anything is read; an
    undeclared (chunked) body is cut off when it passes the limit (the body cannot be parsed:
    400)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
            if not declared.isdigit() or int(declared) > self.limit:
                body = json.dumps(error_body("too_large", f"request bodies are limited to "
                                             f"{self.limit} bytes")).encode()
                await send({"type": "http.response.start", "status": 413, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body})
                return
            seen = 0

            async def limited() -> Any:
                nonlocal seen
                message = await receive()
                if message.get("type") == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > self.limit:
                        raise _BodyTooLarge
                return message
            await self.app(scope, limited, send)
            return
        await self.app(scope, receive, send)


def _sandbox_status(orch: Orchestrator) -> dict[str, Any]:
    """The runtimes installed, and the one actions run in (chosen by a live probe, cached)."""
    from closedpaw.sandbox.drivers.detect import PREFERENCE

    mgr = orch.sandbox_manager()
    installed = []
    for name in PREFERENCE:
        try:
            f = mgr.registry.driver(name).features()
            installed.append({"name": name, "version": f.version, "platform": f.platform})
        except ClosedPawError:
            continue
    try:
        drv = mgr.driver()
        f = drv.features()
        return {"usable": True, "runtime": drv.name, "version": f.version,
                "platform": f.platform, "network": "none", "seccomp": True,
                "installed": installed}
    except ClosedPawError as e:
        return {"usable": False, "detail": str(e), "installed": installed}


async def _sweep(orch: Orchestrator, settings: Settings) -> None:
    """Expire pending actions at their TTL even when nobody looks at them."""
    period = min(5.0, max(0.2, settings.approval_ttl_s / 4))
    while True:
        await asyncio.sleep(period)
        with contextlib.suppress(ClosedPawError):  # the next round retries
            await run_in_threadpool(orch.expire_due)


