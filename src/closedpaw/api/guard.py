"""Cheap refusals, before any body is read.

:class:`AuthGuard` (pure ASGI, outermost) authenticates from the headers alone: a request
without a valid token is answered 401 (or 429 once its address is over the failure limit)
without reading a byte of its body, and failures are only counted: one audit summary per source
per period, never an fsync per request. An authenticated request then passes the principal's
rate limit (429s counted the same way) and the body limit, enforced on the declared length and
again while the body streams in.

:func:`guarded_protocol` is the uvicorn HTTP protocol with a header timeout, a body idle timeout
and a connection cap: over the cap, the oldest connection still sending its headers is closed,
so half-open sockets cannot keep the health probe or anyone else out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from typing import Any

from fastapi.concurrency import run_in_threadpool

from closedpaw.api.errors import error_body
from closedpaw.security import (
    Principal,
    RateLimiter,
    Summaries,
    hash_token,
    rate_key,
    token_looks_valid,
)
from closedpaw.settings import Settings
from closedpaw.web import (
    COOKIE,
    CSRF_HEADER,
    SECURITY_HEADERS,
    WEB_PUBLIC_PATHS,
    WEB_PUBLIC_PREFIXES,
    Sessions,
)

__all__ = ["PUBLIC_PATHS", "PUBLIC_PREFIXES", "AuthGuard", "guarded_protocol"]

#: no bearer token needed: the health probe, and the web UI's login page, pages (they check
#: the session cookie themselves and send the browser to the login page), logout, the CSP
#: report sink and the static files
PUBLIC_PATHS = frozenset({"/api/health", *WEB_PUBLIC_PATHS})
PUBLIC_PREFIXES = WEB_PUBLIC_PREFIXES
_SECURITY = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DELIVERY = re.compile(r"^/api/actions/[^/]+/secret/?$")


def _cookies(headers: dict[bytes, bytes], name: str) -> list[str]:
    """Every value of cookie ``name`` the request carries (a cookie planted on a narrower
    path is sent beside the real one)."""
    out = []
    for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
        k, _, v = part.strip().partition("=")
        if k == name and v:
            out.append(v.strip('"'))
    return out


def _cross_origin(scope: Any, headers: dict[bytes, bytes]) -> bool:
    """Did the browser say this request comes from another origin? ``Sec-Fetch-Site`` (set
    by the browser, never by a page) decides when sent; an ``Origin`` must be ours, and
    ``Origin: null`` (what Referrer-Policy: no-referrer makes of our own posts, and also
    what a sandboxed frame elsewhere sends) passes only with ``Sec-Fetch-Site: same-origin``.
    """
    site = headers.get(b"sec-fetch-site")
    if site is not None and site not in (b"same-origin", b"none"):
        return True
    origin = headers.get(b"origin")
    if origin is None:
        return False   # no claim either way: the CSRF token decides
    if origin == b"null":
        return site != b"same-origin"
    own = f"{scope.get('scheme', 'http')}://".encode() + headers.get(b"host", b"")
    return origin != own


async def _answer(send: Any, status: int, code: str, message: str,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    retry = dict(headers or []).get(b"retry-after")
    extra = {"retry_after": int(retry)} if retry else {}
    body = json.dumps(error_body(code, message, **extra)).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"), *_SECURITY, *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class AuthGuard:
    def __init__(self, app: Any, *, settings: Settings, state: Any) -> None:
        self.app = app
        self.limit = settings.api.max_body_bytes
        self.state = state   # the app's state: gate, limiters, summaries

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS \
                or scope["path"].startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        st = self.state
        headers = dict(scope.get("headers") or [])
        client = (scope.get("client") or ("unknown", 0))[0]
        raw = headers.get(b"authorization", b"").decode("latin-1")
        sids = [] if raw else _cookies(headers, COOKIE)
        if sids:
            await self._session(scope, receive, send, headers, client, sids)
            return
        scheme, _, token = raw.partition(" ")
        token = token.strip()
        fails: RateLimiter = st.fail_limiter
        summaries: Summaries = st.auth_failures
        principal = None
        good = token_looks_valid(token) and scheme.lower() == "bearer"
        known: set[str] = st.known_tokens
        if fails.exhausted(f"ip:{client}") and not (good and hash_token(token) in known):
            # an address over the failure limit gets no database lookup, except for a token
            # that authenticated before (so a flood from a shared address cannot lock out a
            # legitimate client on it; revocation still applies: it is looked up)
            summaries.add(client, "rate_limited")
            await _answer(send, 429, "rate_limited", "too many failed authentications; retry "
                          "later", [(b"retry-after", b"60"), (b"connection", b"close")])
            return
        if good:
            principal = await run_in_threadpool(st.gate.authenticate, token)
            if principal is not None and len(known) < 10_000:
                known.add(hash_token(token))
        if principal is None:
            reason = ("no bearer token" if not raw else
                      "malformed token" if not token_looks_valid(token) else "unknown token")
            summaries.add(client, reason)
            wait = fails.hit(f"ip:{client}")
            if wait:
                await _answer(send, 429, "rate_limited", "too many failed authentications; "
                              f"retry after {int(wait)} seconds",
                              [(b"retry-after", str(int(wait)).encode()),
                               (b"connection", b"close")])
                return
            await _answer(send, 401, "unauthorized", f"{reason}: send 'Authorization: Bearer "
                          "<token>'", [(b"www-authenticate", b"Bearer"), (b"connection", b"close")])
            return
        await self._admit(scope, receive, send, headers, principal, hash_token(token))

    async def _session(self, scope: Any, receive: Any, send: Any, headers: dict[bytes, bytes],
                       client: str, sids: list[str]) -> None:
        """A browser's request, authenticated by its session cookie: the session must be
        live, its token not revoked, and a state-changing request must come from this origin
        and carry the session's CSRF token in ``X-CSRF-Token`` (a form post from another
        site has no way to add that header). Several session cookies naming more than one
        live session (one planted on a narrower path) are refused: whose would it be?"""
        st = self.state
        fails: RateLimiter = st.fail_limiter
        summaries: Summaries = st.auth_failures
        if fails.exhausted(f"ip:{client}"):
            summaries.add(client, "rate_limited")
            await _answer(send, 429, "rate_limited", "too many failed authentications; retry "
                          "later", [(b"retry-after", b"60"), (b"connection", b"close")])
            return
        sessions: Sessions = st.sessions
        live = {s.key: s for s in (sessions.get(sid) for sid in sids[:8]) if s is not None}
        session = next(iter(live.values())) if len(live) == 1 else None
        row = None
        if session is not None:
            row = await run_in_threadpool(st.gate.store.principal_by_hash, session.token_hash)
        if session is None or row is None:
            summaries.add(client, "web session unknown, expired or revoked")
            fails.hit(f"ip:{client}")
            await _answer(send, 401, "unauthorized", "the web session is unknown, expired or "
                          "logged out: log in again", [(b"connection", b"close")])
            return
        if _cross_origin(scope, headers) or _DELIVERY.match(scope["path"]):
            # another origin (another port on 127.0.0.1 is the same *site*: SameSite lets the
            # cookie go) reads nothing and triggers nothing, GET included; and a secret's
            # one-time delivery is for bearer clients only, never a browser session
            summaries.add(client, "web request from another origin or for a secret")
            await _answer(send, 403, "csrf_failed", "the web session is accepted only from "
                          "the UI's own origin, and never for a secret's delivery")
            return
        if scope["method"] not in _SAFE_METHODS:
            sent = headers.get(CSRF_HEADER.encode(), b"").decode("latin-1")
            if not session.csrf_ok(sent):
                summaries.add(client, "web request without the CSRF token or cross-origin")
                await _answer(send, 403, "csrf_failed", "a state-changing request from the web "
                              "UI must come from its own origin with the X-CSRF-Token header")
                return
        scope.setdefault("state", {})
        scope["state"]["session_key"] = session.key
        await self._admit(scope, receive, send, headers, Principal(row.name, row.role),
                          session.token_hash)

    async def _admit(self, scope: Any, receive: Any, send: Any, headers: dict[bytes, bytes],
                     principal: Principal, token_hash: str) -> None:
        """An authenticated request: the principal's rate limit, then the body limit."""
        st = self.state
        limiter: RateLimiter = st.limiter
        wait = limiter.hit(rate_key(principal.name))   # one bucket per principal, never global
        if wait:
            st.rate_limited.add(principal.name, scope["path"][:100])
            await _answer(send, 429, "rate_limited", f"too many requests; retry after "
                          f"{int(wait)} seconds", [(b"retry-after", str(int(wait)).encode())])
            return
        scope.setdefault("state", {})
        scope["state"]["principal"] = principal
        scope["state"]["token_hash"] = token_hash
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _answer(send, 413, "too_large", f"request bodies are limited to {self.limit} "
                          "bytes", [(b"connection", b"close")])
            return
        seen = 0
        started = False
        refused = False

        async def limited() -> Any:
            # over the limit: answer 413 at once and tell the app the client left (an
            # exception here would be turned into a 400 by the body parser)
            nonlocal seen, refused, started
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refused = True
                    if not started:
                        started = True
                        await _answer(send, 413, "too_large", "request bodies are limited to "
                                      f"{self.limit} bytes", [(b"connection", b"close")])
                    return {"type": "http.disconnect"}
            return message

        async def tracking(message: Any) -> None:
            nonlocal started
            if refused:
                return   # the 413 is the answer
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited, tracking)


async def flush_summaries(state: Any, period: float) -> None:
    """Every ``period`` seconds: one audit entry for the auth failures and one for the 429s
    of the period, each bounded (sources over the cap are counted, not listed)."""
    from closedpaw.errors import ClosedPawError

    while True:
        await asyncio.sleep(period)
        with contextlib.suppress(ClosedPawError):  # refused: the next round tries again
            await run_in_threadpool(write_summaries, state, period)


def write_summaries(state: Any, period: float) -> None:
    from closedpaw.audit import AuditEvent

    for summ, event in ((state.auth_failures, AuditEvent.AUTH_FAILED_SUMMARY),
                        (state.rate_limited, AuditEvent.RATE_LIMITED_SUMMARY)):
        counts, dropped = summ.take()
        if counts or dropped:
            state.gate.audit.append(event, principal="system", details={
                "period_s": period, "until": time.time(), "sources": counts,
                "total": sum(sum(c.values()) for c in counts.values()) + dropped,
                "unlisted": dropped})


def guarded_protocol(settings: Settings) -> type:
    """uvicorn's h11 protocol with a header timeout, a body idle timeout and a connection
    cap (see the module docstring)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    header_s = settings.api.header_timeout_s
    idle_s = settings.api.body_idle_timeout_s
    cap = settings.api.max_connections

    class GuardedH11(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            # asyncio sets TCP_NODELAY only on sockets made with proto=IPPROTO_TCP; the ones
            # uvicorn accepts on have proto 0, so a response written as headers + body
            # waited for the client's delayed ACK: ~40 ms on every request
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._cp_timer: asyncio.TimerHandle | None = None
            self._cp_since = time.monotonic()
            self._cp_await_headers = True
            self._cp_arm(header_s)
            if len(self.connections) > cap:
                waiting: list[GuardedH11] = [
                    c for c in self.connections if isinstance(c, GuardedH11)
                    and c._cp_await_headers and c is not self]
                victim = min(waiting, key=lambda c: c._cp_since) if waiting else self
                victim._cp_close()

        def _cp_arm(self, seconds: float) -> None:
            if self._cp_timer is not None:
                self._cp_timer.cancel()
            self._cp_timer = self.loop.call_later(seconds, self._cp_close)

        def _cp_close(self) -> None:
            if self._cp_timer is not None:
                self._cp_timer.cancel()
                self._cp_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.transport.is_closing():
                return
            theirs = self.conn.their_state
            if theirs is h11.SEND_BODY:          # headers in; the body must keep coming
                self._cp_await_headers = False
                self._cp_arm(idle_s)
            elif theirs is h11.IDLE:             # still reading headers: deadline unchanged
                pass
            elif self._cp_timer is not None:     # the request is in: the app's turn
                self._cp_await_headers = False
                self._cp_timer.cancel()
                self._cp_timer = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():  # keep-alive: a new header deadline
                self._cp_since = time.monotonic()
                self._cp_await_headers = True
                self._cp_arm(max(header_s, self.timeout_keep_alive))

        def connection_lost(self, exc: Exception | None) -> None:
            timer = getattr(self, "_cp_timer", None)
            if timer is not None:
                timer.cancel()
            super().connection_lost(exc)

    return GuardedH11


def uvicorn_config(app: Any, settings: Settings, **kw: Any) -> Any:
    """The uvicorn Config ``closedpaw serve`` (and the tests) run the app with."""
    import uvicorn

    opts: dict[str, Any] = dict(
        host=settings.api.api_host, port=settings.api.api_port, log_level="info",
        timeout_graceful_shutdown=3, server_header=False, proxy_headers=False,
        lifespan="on", ws="none", http=guarded_protocol(settings),
        timeout_keep_alive=settings.api.keep_alive_s,
        h11_max_incomplete_event_size=16 * 1024)
    opts.update(kw)
    return uvicorn.Config(app, **opts)
