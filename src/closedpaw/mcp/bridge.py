"""What the MCP tools do, apart from the SDK: each call is audited with the MCP client as the
principal; code, skills and actions are submitted to the gate as actions (a pending one is
answered at once with its id and hash, never waited for); sessions are long-lived sandboxes
taken from a warm pool, owned by the principal that created them."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from closedpaw.audit import AuditEvent
from closedpaw.errors import ActionNotFound, GateError, InvalidRequest, PermissionDenied
from closedpaw.gate import ActionRequest, ActionStatus

if TYPE_CHECKING:
    from closedpaw.gate import ActionRecord, Gate
    from closedpaw.sandbox import Sandbox, SandboxPool
    from closedpaw.security import Principal

__all__ = ["TOOLS", "McpBridge"]

#: every tool the server offers, in the order it lists them
TOOLS = ("run_code", "create_session", "exec", "run_cell", "write_file", "read_file",
         "close_session", "list_skills", "run_skill", "submit_action", "action_status")
MAX_WAIT_S = 600.0


@dataclass
class _Session:
    owner: str
    sandbox: Sandbox
    policy: str
    created: float


class McpBridge:
    """``wait_s``: how long a tool waits for an action that needs no approval to finish
    (bounded; after it the tool answers with the action's current status)."""

    def __init__(self, gate: Gate, *, wait_s: float = 300.0, max_sessions: int = 8) -> None:
        self.gate = gate
        self.wait_s = wait_s
        self.max_sessions = max_sessions
        self._sessions: dict[str, _Session] = {}
        self._pools: dict[str, SandboxPool] = {}
        self._lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------------------
    def audit(self, principal: Principal, tool: str, **details: Any) -> None:
        self.gate.audit.append(AuditEvent.MCP_CALL, principal=principal.name,
                               action_id=details.pop("action_id", None),
                               details={"tool": tool, **details})

    def _wait(self, aid: str, timeout_s: float) -> ActionRecord:
        done = threading.Event()

        def on(ev: dict[str, Any]) -> None:
            if ev["action_id"] == aid and ActionStatus(ev["status"]).final:
                done.set()
        unsubscribe = self.gate.subscribe(on)
        try:
            rec = self.gate.get(aid)
            if rec.status in (ActionStatus.APPROVED, ActionStatus.EXECUTING):
                done.wait(min(max(timeout_s, 0.0), MAX_WAIT_S))
        finally:
            unsubscribe()
        return self.gate.get(aid)

    @staticmethod
    def outcome(rec: ActionRecord) -> dict[str, Any]:
        out: dict[str, Any] = {"action_id": rec.id, "status": str(rec.status),
                               "security_level": str(rec.security_level),
                               "level_reason": rec.level_reason,
                               "params_sha256": rec.params_sha256}
        if rec.status is ActionStatus.PENDING:
            out["requires_approval"] = True
            out["approve_with"] = f"closedpaw actions approve {rec.id} --sha256 " \
                                  f"{rec.params_sha256}"
        if rec.result is not None:
            out["result"] = rec.result
        if rec.error:
            out["error"] = rec.error
        return out

    def _submit(self, principal: Principal, tool: str, action_type: str,
                parameters: dict[str, Any], *, min_level: str | None = None,
                wait_s: float | None = None) -> ActionRecord:
        req = ActionRequest(action_type=action_type, parameters=parameters,
                            min_level=min_level)  # type: ignore[arg-type]
        rec = self.gate.submit(principal, req)
        self.audit(principal, tool, action_id=rec.id, action_type=action_type,
                   params_sha256=rec.params_sha256, status=str(rec.status))
        if rec.status is ActionStatus.PENDING:
            return rec
        return self._wait(rec.id, self.wait_s if wait_s is None else wait_s)

    # -- gated tools -----------------------------------------------------------------------
    def run_code(self, principal: Principal, language: str, code: str,
                 timeout_s: float = 60.0) -> dict[str, Any]:
        rec = self._submit(principal, "run_code", "code_execution",
                           {"language": language, "code": code, "timeout_s": timeout_s},
                           wait_s=timeout_s + 60.0)
        out = self.outcome(rec)
        res = out.pop("result", None)
        if res is not None:
            out.update({k: res.get(k) for k in ("stdout", "stderr", "exit_code", "timed_out",
                                               "oom_killed", "isolation", "duration_ms")})
        return out

    def run_skill(self, principal: Principal, name: str,
                  arguments: dict[str, Any]) -> dict[str, Any]:
        return self.outcome(self._submit(principal, "run_skill", "skill_execution",
                                         {"skill": name, "arguments": arguments}))

    def submit_action(self, principal: Principal, action_type: str,
                      parameters: dict[str, Any], min_level: str | None = None,
                      wait_s: float = 30.0) -> dict[str, Any]:
        return self.outcome(self._submit(principal, "submit_action", action_type, parameters,
                                         min_level=min_level, wait_s=wait_s))

    def action_status(self, principal: Principal, action_id: str) -> dict[str, Any]:
        rec = self.gate.get(action_id)
        if rec.requester != principal.name and not principal.is_admin:
            self.audit(principal, "action_status", action_id=None, refused=action_id)
            raise ActionNotFound(f"no action {action_id}")
        self.audit(principal, "action_status", action_id=rec.id, status=str(rec.status))
        return self.outcome(rec)

    def list_skills(self, principal: Principal) -> list[dict[str, Any]]:
        self.audit(principal, "list_skills")
        skills = self.gate.context.skills
        return [] if skills is None else skills.list()

    # -- sessions: long-lived sandboxes from a warm pool ---------------------------------
    def _pool(self, policy: str) -> SandboxPool:
        with self._lock:
            pool = self._pools.get(policy)
            if pool is None:
                mgr = self.gate.sandbox_manager()
                if mgr.spec_for(policy).limits.network_enabled:
                    raise GateError(f"policy {policy!r} enables the network")
                pool = mgr.pool(policy, size=1)
                self._pools[policy] = pool
            return pool

    def _session(self, principal: Principal, session_id: str) -> _Session:
        with self._lock:
            s = self._sessions.get(session_id)
        if s is None or s.owner != principal.name:
            raise InvalidRequest(f"session_id: no session {session_id[:64]!r} of yours")
        return s

    def create_session(self, principal: Principal, policy: str = "python") -> dict[str, Any]:
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                raise PermissionDenied(f"at most {self.max_sessions} sessions are open; close "
                                       "one first")
        sb = self._pool(policy).acquire(timeout_s=60.0)
        sid = uuid.uuid4().hex
        with self._lock:
            self._sessions[sid] = _Session(principal.name, sb, policy, time.time())
        self.audit(principal, "create_session", session_id=sid, policy=policy,
                   sandbox_id=sb.id)
        return {"session_id": sid, "policy": policy, "sandbox_id": sb.id}

    def exec(self, principal: Principal, session_id: str, argv: list[str],
             timeout_s: float = 60.0) -> dict[str, Any]:
        s = self._session(principal, session_id)
        self.audit(principal, "exec", session_id=session_id, argv_sha256=_sha(argv))
        return _result(s.sandbox.exec(argv, timeout_s=timeout_s).to_dict())

    def run_cell(self, principal: Principal, session_id: str, code: str,
                 language: str = "python", timeout_s: float = 60.0) -> dict[str, Any]:
        s = self._session(principal, session_id)
        self.audit(principal, "run_cell", session_id=session_id, language=language,
                   code_sha256=_sha(code))
        r = s.sandbox.code.run(language, code, timeout_s=timeout_s).to_dict()
        return {**_result(r), **{k: r.get(k) for k in ("value", "error", "restarted")}}

    def write_file(self, principal: Principal, session_id: str, path: str,
                   content: str) -> dict[str, Any]:
        s = self._session(principal, session_id)
        self.audit(principal, "write_file", session_id=session_id, path=path[:4096],
                   content_sha256=_sha(content))
        r = s.sandbox.exec(["sh", "-c", 'cat > "$1"', "sh", path], stdin=content.encode(),
                           timeout_s=30.0)
        if r.exit_code != 0:
            raise InvalidRequest(f"path: cannot write {path}: {r.stderr_text.strip()[:300]}")
        return {"path": path, "bytes": len(content.encode())}

    def read_file(self, principal: Principal, session_id: str, path: str) -> dict[str, Any]:
        s = self._session(principal, session_id)
        self.audit(principal, "read_file", session_id=session_id, path=path[:4096])
        r = s.sandbox.exec(["cat", "--", path], timeout_s=30.0)
        if r.exit_code != 0:
            raise InvalidRequest(f"path: cannot read {path}: {r.stderr_text.strip()[:300]}")
        return {"path": path, "content": r.stdout_text, "truncated": r.truncated}

    def close_session(self, principal: Principal, session_id: str) -> dict[str, Any]:
        s = self._session(principal, session_id)
        with self._lock:
            self._sessions.pop(session_id, None)
        self.audit(principal, "close_session", session_id=session_id)
        s.sandbox.delete()
        return {"session_id": session_id, "closed": True}

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
            pools, self._pools = list(self._pools.values()), {}
        for s in sessions:
            s.sandbox.delete()
        for p in pools:
            p.close()


def _sha(value: Any) -> str:
    return hashlib.sha256(repr(value).encode("utf-8", "surrogatepass")).hexdigest()


def _result(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r.get(k) for k in ("stdout", "stderr", "exit_code", "timed_out", "oom_killed",
                                  "duration_ms", "isolation")}
