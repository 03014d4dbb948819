"""The web UI's routes: the login page (a ``token`` field, or a one-time link), logout, the
five pages (one HTML shell each; the page's script builds the rest from the API), the CSP
report sink and the static files.

What a page shows comes from the same ``/api/...`` routes the CLI uses, authenticated by the
session cookie instead of a bearer header (:mod:`closedpaw.api.guard` does that and demands the
CSRF header on every state-changing request). Every text from a model, a tool, a sandbox or an
action's parameters is put into the page with ``textContent``, never parsed as HTML, and the
Content-Security-Policy allows scripts from this origin's ``/static/`` files only.
"""

from __future__ import annotations

import collections
import html
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from closedpaw.audit import AuditEvent
from closedpaw.security import RateLimiter, Summaries, hash_token, token_looks_valid
from closedpaw.web.sessions import COOKIE, CSRF_HEADER, LOGIN_COOKIE, Session, Sessions

__all__ = [
    "CSP",
    "PAGES",
    "PUBLIC_PATHS",
    "PUBLIC_PREFIXES",
    "SECURITY_HEADERS",
    "STATIC_DIR",
    "issue_login_link",
    "router",
    "same_origin",
]

log = logging.getLogger("closedpaw.web")

STATIC_DIR = Path(__file__).with_name("static")
_TEMPLATES = Path(__file__).with_name("templates")

#: the pages of the navigation bar: path -> title
PAGES = {"chat": "Chat", "approvals": "Approvals", "audit": "Audit", "sandboxes": "Sandboxes",
         "providers": "Providers"}

#: no inline script, no eval, nothing from another origin, never framed
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "report-uri /csp-report")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}

#: answered without a bearer token: each checks the session cookie itself where it needs one
PUBLIC_PATHS = frozenset({"/", "/login", "/logout", "/csp-report", "/favicon.ico",
                          *(f"/{p}" for p in PAGES)})
PUBLIC_PREFIXES = ("/static/",)

_FORM_MAX = 4096
_REPORT_MAX = 16 * 1024

router = APIRouter(include_in_schema=False)


def _template(name: str) -> str:
    return (_TEMPLATES / name).read_text()


def _fill(text: str, **values: str) -> str:
    for k, v in values.items():
        text = text.replace("{{" + k + "}}", html.escape(v, quote=True))
    return text


def sessions_of(request: Request) -> Sessions:
    s: Sessions = request.app.state.sessions
    return s


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another origin. ``Sec-Fetch-Site``
    (set by the browser, never by a page) decides when sent; an ``Origin`` must be ours, and
    ``Origin: null`` (what Referrer-Policy: no-referrer makes of our own form posts, and
    what a sandboxed frame elsewhere sends) passes only with ``Sec-Fetch-Site: same-origin``.
    A request that says nothing passes (the CSRF token decides)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return site == "same-origin"
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def _cookie(response: Response, request: Request, name: str, value: str, path: str,
            max_age: int | None = None) -> None:
    response.set_cookie(name, value, path=path, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", max_age=max_age)


def _all_cookies(request: Request, name: str) -> list[str]:
    out = []
    for part in request.headers.get("cookie", "").split(";"):
        k, _, v = part.strip().partition("=")
        if k == name and v:
            out.append(v.strip('"'))
    return out


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _fail(request: Request, reason: str) -> float:
    """Count a failed login like a failed bearer authentication; the wait, if limited."""
    summaries: Summaries = request.app.state.auth_failures
    summaries.add(_client(request), f"web: {reason}")
    limiter: RateLimiter = request.app.state.fail_limiter
    return limiter.hit(f"ip:{_client(request)}")


def _login_page(request: Request, error: str = "", status: int = 200) -> Response:
    nonce = secrets.token_urlsafe(24)
    body = _fill(_template("login.html"), nonce=nonce, error=error)
    if not error:
        body = body.replace('<p class="error" role="alert"></p>', "")
    r = HTMLResponse(body, status_code=status)
    _cookie(r, request, LOGIN_COOKIE, nonce, "/login", max_age=3600)
    return r


async def _begin(request: Request, token_hash: str, how: str) -> Response:
    """A fresh session for the principal behind ``token_hash`` (any session the browser
    already had is revoked: a planted id never survives a login)."""
    gate = request.app.state.gate
    row = await run_in_threadpool(gate.store.principal_by_hash, token_hash)
    if row is None:
        return _login_page(request, "that token is unknown or revoked", 401)
    sessions = sessions_of(request)
    for old in _all_cookies(request, COOKIE):   # each one sent (several paths may plant one)
        sessions.revoke(old)
    sid, _ = sessions.create(token_hash, row.name, row.role)
    await run_in_threadpool(gate.audit.append, AuditEvent.WEB_LOGIN, principal=row.name,
                            details={"by": how, "client": _client(request)})
    r = RedirectResponse("/chat", status_code=303)
    _cookie(r, request, COOKIE, sid, "/")
    r.delete_cookie(LOGIN_COOKIE, path="/login")
    return r


@router.get("/login")
async def login_page(request: Request) -> Response:
    """The login form; with ``?code=``: a one-time link (used up on the first visit)."""
    code = request.query_params.get("code")
    if code is None:
        return _login_page(request)
    token_hash = sessions_of(request).redeem_link(code)
    if token_hash is None:
        wait = _fail(request, "login link used, expired or unknown")
        if wait:
            return _login_page(request, "too many failed logins; wait a minute", 429)
        return _login_page(request, "this login link was used already, has expired or is "
                           "unknown: log in with your token", 401)
    return await _begin(request, token_hash, "link")


async def _form(request: Request) -> dict[str, str] | None:
    if request.headers.get("content-type", "").split(";")[0].strip() != \
            "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _FORM_MAX:
            return None
    try:
        parsed = parse_qs(body.decode("ascii"), max_num_fields=8, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: v[0] for k, v in parsed.items()}


@router.post("/login")
async def login(request: Request) -> Response:
    """The form's ``token`` becomes a session; the form's nonce must match its cookie."""
    form = await _form(request)
    if form is None:
        return _login_page(request, "send the login form (application/x-www-form-urlencoded)",
                           415)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not same_origin(request) or not nonce or not secrets.compare_digest(
            nonce.encode(), form.get("csrf", "").encode()):
        _fail(request, "login form without its nonce")
        return _login_page(request, "the login form expired or came from another site; "
                           "try again", 403)
    token = form.get("token", "").strip()
    if not token_looks_valid(token):
        wait = _fail(request, "malformed token")
        return _login_page(request, "too many failed logins; wait a minute" if wait else
                           "that is not a ClosedPaw token (cpw_...)", 429 if wait else 401)
    limiter: RateLimiter = request.app.state.fail_limiter
    if limiter.exhausted(f"ip:{_client(request)}"):
        return _login_page(request, "too many failed logins; wait a minute", 429)
    principal = await run_in_threadpool(request.app.state.gate.authenticate, token)
    if principal is None:
        wait = _fail(request, "unknown token")
        return _login_page(request, "too many failed logins; wait a minute" if wait else
                           "that token is unknown or revoked", 429 if wait else 401)
    return await _begin(request, hash_token(token), "token")


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Revoke the session (the CSRF token comes in the form or the header)."""
    sessions = sessions_of(request)
    sid = request.cookies.get(COOKIE)
    s = sessions.get(sid, touch=False)
    form = await _form(request) or {}
    sent = form.get("csrf") or request.headers.get(CSRF_HEADER)
    if s is None:
        r: Response = RedirectResponse("/login", status_code=303)
    elif not same_origin(request) or not s.csrf_ok(sent):
        return JSONResponse({"error": {"code": "csrf_failed", "message":
                                       "logout needs the page's CSRF token"}}, status_code=403)
    else:
        sessions.revoke(sid)
        gate = request.app.state.gate
        await run_in_threadpool(gate.audit.append, AuditEvent.WEB_LOGOUT, principal=s.name,
                                details={"client": _client(request)})
        r = RedirectResponse("/login", status_code=303)
    r.delete_cookie(COOKIE, path="/")
    return r


def _shell(request: Request, page: str, s: Session) -> Response:
    current = ' aria-current="page"'
    nav = "".join(f'<a href="/{p}"{current if p == page else ""}>{t}</a>'
                  for p, t in PAGES.items())
    body = _fill(_template("page.html"), csrf=s.csrf, page=page, title=PAGES[page],
                 user=s.name, role=s.role)
    return HTMLResponse(body.replace("<!--nav-->", nav))


def _page(page: str) -> Any:
    async def show(request: Request) -> Response:
        s = sessions_of(request).get(request.cookies.get(COOKIE))
        if s is None or await run_in_threadpool(
                request.app.state.gate.store.principal_by_hash, s.token_hash) is None:
            r = RedirectResponse("/login", status_code=303)
            r.delete_cookie(COOKIE, path="/")
            return r
        return _shell(request, page, s)
    show.__name__ = f"page_{page}"
    return show


for _p in PAGES:
    router.add_api_route(f"/{_p}", _page(_p), methods=["GET"])


@router.get("/")
async def root() -> Response:
    return RedirectResponse("/chat", status_code=303)


@router.get("/favicon.ico")
async def favicon() -> Response:
    """No icon (browsers ask for one on every page; an empty answer, not a 401)."""
    return Response(status_code=204)


#: CSP reports kept and logged per minute (server-wide); more are only counted
CSP_REPORTS_PER_MINUTE = 30


@router.post("/csp-report")
async def csp_report(request: Request) -> Response:
    """Where browsers report what the policy blocked (kept: the last 100, bounded)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _REPORT_MAX:
            return Response(status_code=413)
    try:
        report = json.loads(body or b"null")
    except ValueError:
        return Response(status_code=400)
    state = request.app.state
    limiter = getattr(state, "csp_limiter", None)
    if limiter is None:
        limiter = state.csp_limiter = RateLimiter(CSP_REPORTS_PER_MINUTE)
    if limiter.hit("csp-report"):
        # a flood (the route is public: a page blocked in a loop, or anyone) is counted, not
        # kept or logged one by one, so it cannot fill the log or the disk
        state.csp_dropped = getattr(state, "csp_dropped", 0) + 1
        return Response(status_code=204)
    reports: collections.deque[dict[str, Any]] = state.csp_reports
    reports.append({"at": time.time(), "client": _client(request), "report": report})
    log.warning("content security policy report: %s", json.dumps(report)[:500])
    return Response(status_code=204)


@router.get("/api/web/csp-reports")
async def csp_reports(request: Request) -> dict[str, Any]:
    """The CSP reports received since the server started (admin)."""
    p = request.scope.get("state", {}).get("principal")
    if p is None or not p.is_admin:
        return JSONResponse({"error": {"code": "forbidden", "message": "admin only"}},
                            status_code=403)  # type: ignore[return-value]
    return {"reports": list(request.app.state.csp_reports),
            "dropped": getattr(request.app.state, "csp_dropped", 0)}


def issue_login_link(app: Any, base_url: str) -> str | None:
    """A one-time login link for the admin token in ``DATA_DIR/api-token`` (None when the
    file is missing or its token does not authenticate)."""
    settings = app.state.settings
    try:
        token = settings.token_file.read_text().strip()
    except OSError:
        return None
    if not token_looks_valid(token) or app.state.gate.authenticate(token) is None:
        return None
    code = app.state.sessions.issue_link(hash_token(token))
    return f"{base_url}/login?code={code}"
