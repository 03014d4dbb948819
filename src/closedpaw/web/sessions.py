"""Browser sessions and one-time login links, kept in the server's memory.

A session is born from a bearer token (typed into the login page, or behind a one-time link
``closedpaw serve`` prints) and stays bound to that token's hash: every request re-reads the
principal by that hash, so revoking the token ends its sessions at once. The cookie carries
only a random session id; the store keeps its sha256, never the id itself. A session unused
for ``idle_s`` seconds is gone; logout removes it. Each session has its own CSRF token, which
every state-changing request must send back in the ``X-CSRF-Token`` header (the cookie alone
is never enough).

Sessions live in memory: a restarted server has none (everyone logs in again), which is the
fail-closed side of keeping no session secrets on disk.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["COOKIE", "CSRF_HEADER", "LOGIN_COOKIE", "Session", "Sessions"]

COOKIE = "closedpaw_session"
LOGIN_COOKIE = "closedpaw_login"     # the login form's double-submit nonce (Path=/login)
CSRF_HEADER = "x-csrf-token"


def _h(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass
class Session:
    key: str             # sha256 of the cookie's value
    token_hash: str      # the bearer token it was born from
    name: str
    role: str
    csrf: str
    created: float
    last_seen: float

    def csrf_ok(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(self.csrf.encode(), (sent or "").encode())


class Sessions:
    """Thread-safe. At most ``max_sessions`` at once (the least recently used goes first)."""

    def __init__(self, idle_s: float, link_ttl_s: float, *, max_sessions: int = 1000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s = idle_s
        self.link_ttl_s = link_ttl_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._links: dict[str, tuple[str, float]] = {}   # sha256(code) -> (token hash, until)

    # -- sessions ------------------------------------------------------------------------
    def create(self, token_hash: str, name: str, role: str) -> tuple[str, Session]:
        """A new session (always a new id: an id an attacker planted is never adopted)."""
        sid = secrets.token_urlsafe(32)
        now = self._clock()
        s = Session(_h(sid), token_hash, name, role, secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._sweep(now)
            while len(self._sessions) >= self.max_sessions:
                oldest = min(self._sessions.values(), key=lambda x: x.last_seen)
                del self._sessions[oldest.key]
            self._sessions[s.key] = s
        return sid, s

    def get(self, sid: str | None, *, touch: bool = True) -> Session | None:
        """The live session of this cookie value, or None (unknown, idle too long)."""
        if not sid or len(sid) > 100:
            return None
        key = _h(sid)
        now = self._clock()
        with self._lock:
            s = self._sessions.get(key)
            if s is None:
                return None
            if now - s.last_seen > self.idle_s:
                del self._sessions[key]
                return None
            if touch:
                s.last_seen = now
            return s

    def alive(self, key: str) -> bool:
        """Is the session with this key still there (not logged out, not idle)?"""
        now = self._clock()
        with self._lock:
            s = self._sessions.get(key)
            return s is not None and now - s.last_seen <= self.idle_s

    def revoke(self, sid: str | None) -> bool:
        if not sid:
            return False
        with self._lock:
            return self._sessions.pop(_h(sid), None) is not None

    def __len__(self) -> int:
        with self._lock:
            self._sweep(self._clock())
            return len(self._sessions)

    def _sweep(self, now: float) -> None:
        for k in [k for k, s in self._sessions.items() if now - s.last_seen > self.idle_s]:
            del self._sessions[k]
        for k in [k for k, (_, until) in self._links.items() if now > until]:
            del self._links[k]

    # -- one-time links --------------------------------------------------------------------
    def issue_link(self, token_hash: str) -> str:
        """A one-time code standing for ``token_hash`` for ``link_ttl_s`` seconds."""
        code = secrets.token_urlsafe(32)
        with self._lock:
            self._sweep(self._clock())
            self._links[_h(code)] = (token_hash, self._clock() + self.link_ttl_s)
        return code

    def redeem_link(self, code: str | None) -> str | None:
        """The token hash behind ``code``, once; None when unknown, used or expired."""
        if not code or len(code) > 100:
            return None
        with self._lock:
            got = self._links.pop(_h(code), None)
        if got is None or self._clock() > got[1]:
            return None
        return got[0]
