"""The open sandbox sessions of this process (:class:`SandboxSessions`), kept in the
execution context; what a session step does is :mod:`closedpaw.gate.executors.sessions`.

Bounded: at most ``max_sandbox_sessions`` open at once and ``max_sandbox_sessions_per_
principal`` per principal; a session not used for ``session_idle_s`` is deleted (by
:meth:`SandboxSessions.reap_idle`, which the server calls periodically, and on its next
use), and its id is refused afterwards. Sessions live in the process that created them; the
gate closes them all at shutdown.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from closedpaw.audit.events import AuditEvent
from closedpaw.errors import GateError, InvalidRequest, PermissionDenied
from closedpaw.gate.actions import RiskLevel

if TYPE_CHECKING:
    from closedpaw.audit import AuditLog
    from closedpaw.sandbox import Sandbox, SandboxManager, SandboxPool

__all__ = ["SandboxSessions", "Session"]


@dataclass
class Session:
    id: str
    owner: str
    policy: str
    level: RiskLevel
    sandbox: Sandbox
    created: float
    last_used: float
    #: what the session is bound to besides its owner (an MCP client session): closing that
    #: closes this (:meth:`SandboxSessions.close_bound`)
    bound_to: str | None = None
    busy: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class SandboxSessions:
    """The open sessions of this process. Thread-safe."""

    def __init__(self, *, max_sessions: int = 8, max_per_principal: int = 4,
                 idle_s: float = 900.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions = max_sessions
        self.max_per_principal = max_per_principal
        self.idle_s = idle_s
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._pools: dict[str, SandboxPool] = {}
        self._creating: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.audit: AuditLog | None = None   # set by the gate: closes and expiries audited

    # -- lookup ------------------------------------------------------------------------
    def get(self, owner: str, session_id: str) -> Session:
        """The session ``session_id`` of ``owner`` (touched); the same refusal whether it
        never existed, was closed, expired or belongs to someone else."""
        with self._lock:
            s = self._sessions.get(session_id)
            if s is not None and s.owner == owner and not self._idle(s):
                s.last_used = self._clock()
                s.busy += 1
                return s
        if s is not None and s.owner == owner:
            self._expire([s])
        raise InvalidRequest(f"session_id: no open session {session_id[:64]!r} of yours "
                             "(never created, closed, expired after "
                             f"{self.idle_s:g} s idle, or another principal's)")

    def release(self, s: Session) -> None:
        with self._lock:
            s.busy -= 1
            s.last_used = self._clock()

    def level_of(self, session_id: str | None) -> RiskLevel | None:
        with self._lock:
            s = self._sessions.get(session_id or "")
            return None if s is None else s.level

    def owned_by(self, owner: str) -> list[str]:
        with self._lock:
            return [k for k, s in self._sessions.items() if s.owner == owner]

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _idle(self, s: Session) -> bool:
        return s.busy == 0 and self._clock() - s.last_used > self.idle_s

    # -- create / close ------------------------------------------------------------------
    def create(self, mgr: SandboxManager, owner: str, policy: str,
               level: RiskLevel) -> Session:
        self.reap_idle()
        with self._lock:
            if self._closed:
                raise GateError("the server is stopping: no new sessions")
            mine = sum(1 for s in self._sessions.values() if s.owner == owner) \
                + self._creating.get(owner, 0)
            total = len(self._sessions) + sum(self._creating.values())
            if mine >= self.max_per_principal:
                raise PermissionDenied(f"{owner} has {mine} sandbox sessions open, the most "
                                       "allowed (max_sandbox_sessions_per_principal); close "
                                       "one first")
            if total >= self.max_sessions:
                raise PermissionDenied(f"{total} sandbox sessions are open, the most allowed "
                                       "(max_sandbox_sessions); try again later")
            self._creating[owner] = self._creating.get(owner, 0) + 1
        try:
            pool = self._pool(mgr, policy)
            sb = pool.acquire(timeout_s=60.0)
        except BaseException:
            self._done_creating(owner)
            raise
        now = self._clock()
        s = Session(uuid.uuid4().hex, owner, policy, level, sb, now, now)
        with self._lock:
            self._creating[owner] -= 1
            if not self._creating[owner]:
                del self._creating[owner]
            closed = self._closed
            if not closed:
                self._sessions[s.id] = s
        if closed:
            sb.delete()
            raise GateError("the server is stopping: no new sessions")
        return s

    def _done_creating(self, owner: str) -> None:
        with self._lock:
            self._creating[owner] -= 1
            if not self._creating[owner]:
                del self._creating[owner]

    def _pool(self, mgr: SandboxManager, policy: str) -> SandboxPool:
        pol = mgr.policies().get(policy)   # PolicyError for an unknown one
        if pol.spec.limits.network_enabled:
            raise GateError(f"policy {policy!r} enables the network; sessions run only in "
                            "sandboxes without one")
        if pol.secret_names:
            raise GateError(f"policy {policy!r} hands the sandbox secrets; sessions run only "
                            "under policies without secrets")
        with self._lock:
            p = self._pools.get(policy)
            if p is None:
                p = self._pools[policy] = mgr.pool(policy, size=1)
            return p

    def bind(self, session_id: str, key: str) -> None:
        with self._lock:
            s = self._sessions.get(session_id)
            if s is not None:
                s.bound_to = key

    def close(self, owner: str, session_id: str) -> None:
        s = self.get(owner, session_id)
        with self._lock:
            self._sessions.pop(session_id, None)
        s.sandbox.delete()

    def close_bound(self, keys_alive: Callable[[str], bool]) -> list[str]:
        """Close the sessions whose binding (an MCP client session) has ended; their ids."""
        with self._lock:
            gone = [s for s in self._sessions.values()
                    if s.bound_to is not None and not keys_alive(s.bound_to)]
        return self._drop(gone, "its MCP client session ended")

    def reap_idle(self) -> list[str]:
        """Delete the sessions idle for longer than ``idle_s``; their ids."""
        with self._lock:
            idle = [s for s in self._sessions.values() if self._idle(s)]
        return self._expire(idle)

    def _expire(self, sessions: list[Session]) -> list[str]:
        return self._drop(sessions, f"idle for more than {self.idle_s:g} s")

    def _drop(self, sessions: list[Session], why: str) -> list[str]:
        out = []
        for s in sessions:
            with self._lock:
                if self._sessions.get(s.id) is not s:
                    continue
                del self._sessions[s.id]
            out.append(s.id)
            try:
                s.sandbox.delete()
            finally:
                if self.audit is not None:
                    self.audit.append(AuditEvent.SANDBOX_SESSION_ENDED, principal="system",
                                      details={"session_id": s.id, "owner": s.owner,
                                               "sandbox_id": s.sandbox.id, "why": why})
        return out

    def close_all(self) -> None:
        with self._lock:
            self._closed = True
            sessions, self._sessions = list(self._sessions.values()), {}
            pools, self._pools = list(self._pools.values()), {}
        for s in sessions:
            s.sandbox.delete()
        for p in pools:
            p.close()
