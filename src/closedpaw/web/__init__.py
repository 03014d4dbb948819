"""The browser UI served by the API app: login (token field or one-time link) into a session
cookie, CSRF on every state-changing request, and the Chat, Approvals, Audit, Sandboxes and
Providers pages (hand-written JS modules under ``static/``, no build step, no inline script).
See docs/web.md."""

from closedpaw.web.pages import (
    PAGES,
    SECURITY_HEADERS,
    STATIC_DIR,
    issue_login_link,
    router,
)
from closedpaw.web.pages import PUBLIC_PATHS as WEB_PUBLIC_PATHS
from closedpaw.web.pages import PUBLIC_PREFIXES as WEB_PUBLIC_PREFIXES
from closedpaw.web.sessions import COOKIE, CSRF_HEADER, LOGIN_COOKIE, Session, Sessions

__all__ = ["COOKIE", "CSRF_HEADER", "LOGIN_COOKIE", "PAGES", "SECURITY_HEADERS", "STATIC_DIR",
           "WEB_PUBLIC_PATHS", "WEB_PUBLIC_PREFIXES", "Session", "Sessions",
           "issue_login_link", "router"]
