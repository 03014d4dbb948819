"""``create_app(settings)``: the composition root of the server. Its lifespan builds the
:class:`~closedpaw.gate.Gate` (unless one is passed in), which builds the store, the audit log,
the rules and, lazily, the sandbox manager; then the providers' gateway (from the settings'
providers section, keys through the execution context's secret resolver) and the assistant,
which it puts in the gate's execution context as the ``chat`` service; then the chat channels
of the channels file (:class:`~closedpaw.channels.service.ChannelService`). The routers
(``routes/``) find the gate, the assistant, the gateway, the settings and the rate limiters on
``app.state`` through ``deps.py``.

Every route but ``GET /api/health`` needs ``Authorization: Bearer <token>``, checked from the
headers before any body is read (:mod:`closedpaw.api.guard`); tokens map to principals (name,
role) in the database. Each principal is rate limited (429 + Retry-After); failed
authentications are rate limited per client address and audited as one summary per period.
There is no CORS middleware: browsers on other origins get nothing.
"""


import asyncio
import collections
import contextlib
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from closedpaw import web
from closedpaw.api.errors import install_error_handlers
from closedpaw.api.guard import AuthGuard, flush_summaries, write_summaries
from closedpaw.api.routes import ROUTERS
from closedpaw.api.routes.secrets import DELIVERY_PATH, UNLOCK_ATTEMPTS_PER_MINUTE
from closedpaw.assistant import Assistant, TurnLimits
from closedpaw.audit import AuditEvent
from closedpaw.channels.service import ChannelService
from closedpaw.errors import ClosedPawError
from closedpaw.gate import Gate
from closedpaw.providers import Gateway
from closedpaw.security import RateLimiter, Summaries
from closedpaw.settings import Settings
from closedpaw.vault import Redactor

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
               providers: Gateway | None = None,
               on_ready: Callable[[FastAPI], None] | None = None) -> FastAPI:
    """The application. Without ``gate`` one is built from ``settings`` at start-up (and
    closed at shutdown); likewise the providers' gateway without ``providers``. ``on_ready``
    is called once start-up is done."""
    settings = settings or Settings.from_env()
    from closedpaw.mcp.http import MCP_PATH, McpHttp

    mcp_http = McpHttp(lambda: app.state.gate, host=settings.api.api_host)

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
            try:   # the channels file is read here: a bad one stops the start, cleanly
                channels = await run_in_threadpool(ChannelService, settings, g, assistant)
            except BaseException:
                await run_in_threadpool(assistant.close)
                raise
        except BaseException:
            if gate is None:
                await run_in_threadpool(g.close)
            raise
        app.state.gateway = gw
        app.state.assistant = assistant
        g.context = replace(g.context, providers=assistant)  # the gate's chat executor
        await run_in_threadpool(_announce, gw)
        # the chat channels of the channels file (none: nothing is imported or started); a
        # channel that cannot connect is reported, the server goes on
        await channels.start()
        app.state.channels = channels
        g.context = replace(g.context, channels=channels)   # the channel_message executor
        _announce_channels(channels)
        sweeper = asyncio.create_task(_sweep(g, settings))
        summaries = asyncio.create_task(flush_summaries(app.state,
                                                        settings.api.summary_period_s))
        if on_ready is not None:
            on_ready(app)
        try:
            async with mcp_http.running():
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
            g.context = replace(g.context, channels=None)
            await channels.stop()
            g.context = replace(g.context, providers=None)
            await run_in_threadpool(assistant.close)
            # every sandbox goes with the server, torn down before we return (uvicorn ends
            # the process by re-raising SIGTERM before the caller's own cleanup runs: the
            # sessions and the running actions' sandboxes were left behind, their code
            # running); running actions end interrupted, and nothing more starts
            await run_in_threadpool(g.close_sandboxes)
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
    app.state.unlock_limiter = RateLimiter(UNLOCK_ATTEMPTS_PER_MINUTE)   # per principal
    app.state.auth_failures = Summaries(max_sources=200)
    app.state.rate_limited = Summaries(max_sources=200)
    app.state.stream_counts = {}
    app.state.known_tokens = set()   # hashes of tokens that authenticated (see guard.py)
    # the web UI (closedpaw.web): browser sessions and the CSP reports browsers send
    app.state.sessions = web.Sessions(settings.api.web_session_idle_s,
                                      settings.api.web_link_ttl_s)
    app.state.csp_reports = collections.deque(maxlen=100)
    install_error_handlers(app)
    app.add_middleware(_RedactResponses)
    app.add_middleware(_SecurityHeaders)

    for router in ROUTERS:
        app.include_router(router)
    app.include_router(web.router)
    from fastapi.staticfiles import StaticFiles

    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    # MCP over streamable HTTP, behind the same bearer tokens (closedpaw.mcp.http)
    from starlette.routing import Route

    app.router.routes.append(Route(MCP_PATH, endpoint=mcp_http,
                                   methods=["GET", "POST", "DELETE"]))
    # outermost: authenticate from the headers before anything reads a body
    app.add_middleware(AuthGuard, settings=settings, state=app.state)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("closedpaw")
    except PackageNotFoundError:
        return "0+unknown"


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


def _announce_channels(channels: ChannelService) -> None:
    import sys

    for c in channels.status():
        state = "running" if c.get("running") else f"NOT running: {c.get('error')}"
        sys.stderr.write(f"closedpaw: channel {c['name']} ({c['type']}): {state}\n")


async def _sweep(gate: Gate, settings: Settings) -> None:
    """Expire pending actions at their TTL even when nobody looks at them; teach the
    redactor secrets stored by another process (``closedpaw secret set``), and protect a
    vault key file made by another process (``closedpaw vault init``)."""
    period = min(5.0, max(0.2, min(settings.gate.approval_ttl_s,
                                   settings.mcp.session_idle_s) / 4))
    while True:
        await asyncio.sleep(period)
        with contextlib.suppress(ClosedPawError):  # the next round retries
            await run_in_threadpool(gate.expire_due)
            await run_in_threadpool(gate.vault.refresh_redactor)
            await run_in_threadpool(gate.protect_vault_keys)   # a key file made meanwhile
            # sandbox sessions idle past CLOSEDPAW_SESSION_IDLE_S are deleted
            await run_in_threadpool(gate.context.sessions.reap_idle)


_DELIVERY = re.compile(DELIVERY_PATH)


class _HttpMiddleware:
    """A pure ASGI middleware of HTTP requests (anything else passes untouched): no task and
    no memory stream under every request, as ``BaseHTTPMiddleware`` puts."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Any, receive: Any, send: Any) -> None:
        raise NotImplementedError


class _SecurityHeaders(_HttpMiddleware):
    """Every answer carries the web UI's security headers, and ``Cache-Control`` when it set
    none: static files revalidate (ETag), everything else is never stored."""

    async def http(self, scope: Any, receive: Any, send: Any) -> None:
        cache = b"no-cache" if scope["path"].startswith("/static/") else b"no-store"

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                raw = [(k, v) for k, v in message.get("headers") or []
                       if k.lower() not in _SECURITY_NAMES]
                if not any(k.lower() == b"cache-control" for k, _ in raw):
                    raw.append((b"cache-control", cache))
                raw += _SECURITY_RAW
                message = {**message, "headers": raw}
            await send(message)
        await self.app(scope, receive, with_headers)


_SECURITY_RAW = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                 for k, v in web.SECURITY_HEADERS.items()]
_SECURITY_NAMES = {k for k, _ in _SECURITY_RAW}


class _RedactResponses(_HttpMiddleware):
    """Every answer passes the vault's redactor: a JSON body is decoded, redacted value by
    value (escaped forms included) and encoded again; any other body (the event stream) is
    redacted as text, chunk by chunk. The one exception is a successful ``GET`` of
    ``/api/actions/{id}/secret``: the approved, one-time delivery of a value.

    An admin's answers are redacted of every stored value (an admin may read them all: no
    guess of theirs learns anything). Anyone else's of the values the server holds for
    itself (``Vault.scoped``): their answers echo what they wrote (parameters, messages,
    code's output), and a redactor of every value there would tell them which of their
    guesses is a secret. What an action was handed is redacted from its result when it ends.
    """

    async def http(self, scope: Any, receive: Any, send: Any) -> None:
        gate: Gate | None = getattr(scope["app"].state, "gate", None)
        if gate is None:
            await self.app(scope, receive, send)
            return
        vault = gate.vault
        redactor = vault.redactor
        delivery = scope["method"] == "GET" and bool(_DELIVERY.match(scope["path"]))
        start: dict[str, Any] = {}
        passthrough = False

        async def redacting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                start.update(message)   # held back until the body is known
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            nonlocal passthrough, redactor
            first = dict(start)
            start.clear()
            if first:
                passthrough = delivery and first.get("status") == 200
                who = (scope.get("state") or {}).get("principal")   # set by the guard
                if who is None or not who.is_admin:
                    redactor = vault.scoped()
            if passthrough:
                if first:
                    await send(first)
                await send(message)
                return
            keep = [(k, v) for k, v in first.get("headers") or [] if k != b"content-length"]
            body = message.get("body", b"")
            if first and not message.get("more_body", False):   # the whole body at once
                body = _redact_body(redactor, body, dict(keep).get(b"content-type", b""))
                await send({**first, "headers": [*keep, (b"content-length",
                                                         str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            if first:   # a stream (the event stream): no length; each chunk as text
                await send({**first, "headers": keep})
            if body and len(redactor):
                body = redactor.redact(body.decode("utf-8", "replace")).encode()
            await send({**message, "body": body})

        await self.app(scope, receive, redacting_send)


def _redact_body(redactor: Redactor, body: bytes, content_type: bytes) -> bytes:
    if not body or not len(redactor):
        return body
    if content_type.startswith(b"application/json"):
        try:
            value = json.loads(body)
        except ValueError:
            pass
        else:
            return json.dumps(redactor.redact_obj(value), separators=(",", ":"),
                              ensure_ascii=False).encode()
    return redactor.redact(body.decode("utf-8", "replace")).encode()


