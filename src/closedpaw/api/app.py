"""``create_app(settings)``: the composition root of the server. Its lifespan builds the
:class:`~closedpaw.gate.Gate` (unless one is passed in), which builds the store, the audit log,
the rules and, lazily, the sandbox manager; the routers (``routes/``) find the gate, the
settings and the rate limiters on ``app.state`` through ``deps.py``.

Every route but ``GET /api/health`` needs ``Authorization: Bearer <token>``, checked from the
headers before any body is read (:mod:`closedpaw.api.guard`); tokens map to principals (name,
role) in the database. Each principal is rate limited (429 + Retry-After); failed
authentications are rate limited per client address and audited as one summary per period.
There is no CORS middleware: browsers on other origins get nothing.
"""


import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool

from closedpaw.api.errors import install_error_handlers
from closedpaw.api.guard import AuthGuard, flush_summaries, write_summaries
from closedpaw.api.routes import ROUTERS
from closedpaw.audit import AuditEvent
from closedpaw.errors import ClosedPawError
from closedpaw.gate import Gate
from closedpaw.security import RateLimiter, Summaries
from closedpaw.settings import Settings

__all__ = ["bootstrap_admin", "create_app"]



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
               on_ready: Callable[[FastAPI], None] | None = None) -> FastAPI:
    """The application. Without ``gate`` one is built from ``settings`` at start-up (and
    closed at shutdown). ``on_ready`` is called once start-up is done."""
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
        except BaseException:
            if gate is None:
                await run_in_threadpool(g.close)
            raise
        sweeper = asyncio.create_task(_sweep(g, settings))
        summaries = asyncio.create_task(flush_summaries(app.state,
                                                        settings.api.summary_period_s))
        if on_ready is not None:
            on_ready(app)
        try:
            yield
        finally:
            for task in (sweeper, summaries):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(ClosedPawError):
                await run_in_threadpool(write_summaries, app.state,
                                        settings.api.summary_period_s)
            for q in list(app.state.streams):
                q.put_nowait(None)
            with contextlib.suppress(ClosedPawError):
                await run_in_threadpool(g.audit.append, AuditEvent.SERVER_STOPPED,
                                        principal="system", details={"pid": os.getpid()})
            if gate is None:
                await run_in_threadpool(g.close)

    app = FastAPI(title="ClosedPaw", version=_version(), lifespan=lifespan,
                  description="The zero-trust gate: actions, approvals, audit.",
                  openapi_url=None, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.limiter = RateLimiter(settings.api.rate_limit_per_minute)
    app.state.fail_limiter = RateLimiter(max(10, settings.api.rate_limit_per_minute // 4))
    app.state.auth_failures = Summaries(max_sources=200)
    app.state.rate_limited = Summaries(max_sources=200)
    app.state.stream_counts = {}
    app.state.known_tokens = set()   # hashes of tokens that authenticated (see guard.py)
    install_error_handlers(app)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    for router in ROUTERS:
        app.include_router(router)
    # outermost: authenticate from the headers before anything reads a body
    app.add_middleware(AuthGuard, settings=settings, state=app.state)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("closedpaw")
    except PackageNotFoundError:
        return "0+unknown"


async def _sweep(gate: Gate, settings: Settings) -> None:
    """Expire pending actions at their TTL even when nobody looks at them."""
    period = min(5.0, max(0.2, settings.gate.approval_ttl_s / 4))
    while True:
        await asyncio.sleep(period)
        with contextlib.suppress(ClosedPawError):  # the next round retries
            await run_in_threadpool(gate.expire_due)


