"""``create_app(settings)``: the composition root of the server. Its lifespan builds the
:class:`~closedpaw.gate.Gate` (unless one is passed in), which builds the store, the audit log,
the rules and, lazily, the sandbox manager; then the providers' gateway (from the settings'
providers section, keys through the execution context's secret resolver) and the assistant,
which it puts in the gate's execution context as the ``chat`` service. The routers
(``routes/``) find the gate, the assistant, the gateway, the settings and the rate limiters on
``app.state`` through ``deps.py``.

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
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool

from closedpaw.api.errors import error_body, install_error_handlers
from closedpaw.api.routes import ROUTERS
from closedpaw.assistant import Assistant, TurnLimits
from closedpaw.audit import AuditEvent
from closedpaw.errors import ClosedPawError
from closedpaw.gate import Gate
from closedpaw.providers import Gateway
from closedpaw.security import RateLimiter
from closedpaw.settings import Settings

__all__ = ["bootstrap_admin", "create_app"]

MAX_BODY = 8 * 1024 * 1024   # bytes of request body; more is refused with 413


# -- admin bootstrap ---------------------------------------------------------------------
def bootstrap_admin(gate: Gate, settings: Settings) -> bool:
    """On first start (no admin yet): create principal ``admin`` and write its token to
    ``data_dir/api-token`` (mode 0600, replaced atomically). Returns True when created."""
    if gate.store.count_admins() > 0:
        return False
    token = gate.create_principal("admin", "admin")
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


def create_app(settings: Settings | None = None, *, gate: Gate | None = None,
               providers: Gateway | None = None,
               on_ready: Callable[[FastAPI], None] | None = None) -> FastAPI:
    """The application. Without ``gate`` one is built from ``settings`` at start-up (and
    closed at shutdown); likewise the providers' gateway without ``providers``. ``on_ready``
    is called once start-up is done."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        g: Gate = (gate if gate is not None else await run_in_threadpool(Gate, settings))
        app.state.gate = g
        app.state.streams = set()
        try:
            await run_in_threadpool(g.start)
            app.state.token_created = await run_in_threadpool(bootstrap_admin, g, settings)
            app.state.token_path = settings.token_file
            await run_in_threadpool(g.audit.append, AuditEvent.SERVER_STARTED,
                                    principal="system", details={"pid": os.getpid()})
            gw = (providers if providers is not None else
                  Gateway.from_settings(settings, resolver=g.context.secret_resolver))
            assistant = await run_in_threadpool(
                Assistant, g, gw, limits=TurnLimits.from_settings(settings.providers))
        except BaseException:
            if gate is None:
                await run_in_threadpool(g.close)
            raise
        app.state.gateway = gw
        app.state.assistant = assistant
        g.context = replace(g.context, providers=assistant)  # the gate's chat executor
        await run_in_threadpool(_announce, gw)
        sweeper = asyncio.create_task(_sweep(g, settings))
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
                await run_in_threadpool(g.audit.append, AuditEvent.SERVER_STOPPED,
                                        principal="system", details={"pid": os.getpid()})
            g.context = replace(g.context, providers=None)
            await run_in_threadpool(assistant.close)
            # warm sandboxes go with the server (uvicorn may end the process by re-raising
            # SIGTERM before the caller's own cleanup runs); later actions run cold
            await run_in_threadpool(g.context.pools.close)
            if providers is None:
                await run_in_threadpool(gw.close)
            if gate is None:
                await run_in_threadpool(g.close)

    app = FastAPI(title="ClosedPaw", version=_version(), lifespan=lifespan,
                  description="The zero-trust gate: actions, approvals, audit.",
                  openapi_url=None, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.limiter = RateLimiter(settings.api.rate_limit_per_minute)
    app.state.fail_limiter = RateLimiter(max(10, settings.api.rate_limit_per_minute // 4))
    install_error_handlers(app)
    app.add_middleware(_DeclaredSizeLimit, limit=MAX_BODY)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    for router in ROUTERS:
        app.include_router(router)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("closedpaw")
    except PackageNotFoundError:
        return "0+unknown"


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


def _announce(gateway: Gateway) -> None:
    """Say which provider the assistant uses (``make run``)."""
    import sys

    try:
        name = gateway.default_name()
        p = gateway.get(name)
        sys.stderr.write(f"closedpaw: assistant: provider {name!r} ({p.locality}, model "
                         f"{p.default_model})\n")
    except ClosedPawError as e:
        sys.stderr.write(f"closedpaw: assistant: {' '.join(str(e).split())}\n")


async def _sweep(gate: Gate, settings: Settings) -> None:
    """Expire pending actions at their TTL even when nobody looks at them."""
    period = min(5.0, max(0.2, settings.gate.approval_ttl_s / 4))
    while True:
        await asyncio.sleep(period)
        with contextlib.suppress(ClosedPawError):  # the next round retries
            await run_in_threadpool(gate.expire_due)


