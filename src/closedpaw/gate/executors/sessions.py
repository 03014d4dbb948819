"""``sandbox_session``: long-lived sandboxes (*sessions*) a principal drives step by step,
each step a gate action like any other (risk level, approval bound to its parameters when
high, audited).

A session is taken from a warm pool of an execution policy without network and without
secrets (``create``), owned by the principal whose action created it, and used only by that
principal's later actions (``exec``, ``run_cell``, ``write_file``, ``read_file``,
``close``): the executor checks the owner against the action's requester, so another
principal, even an admin, cannot act on it through the gate. Every step on a session is at
least the level its ``create`` was given (:func:`raise_to_session_level`): a session opened
under a high policy stays high.

The registry of open sessions, its caps and idle timeout: :mod:`.session_store`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from closedpaw.audit.events import AuditEvent
from closedpaw.errors import InvalidRequest
from closedpaw.gate.actions import RiskLevel, SandboxSessionParams
from closedpaw.gate.executors.registry import handed_nothing
from closedpaw.gate.executors.session_store import Session

if TYPE_CHECKING:
    from pydantic import BaseModel

    from closedpaw.gate.executors.context import ExecutionContext
    from closedpaw.gate.store import ActionRecord

__all__ = ["ACTION_TYPES", "RAISERS", "REACH", "READ_MAX_BYTES", "raise_to_session_level",
           "run_session_op"]

#: read_file answers at most this many bytes (the sandbox's output cap applies too)
READ_MAX_BYTES = 1024 * 1024

def run_session_op(ctx: ExecutionContext, rec: ActionRecord, params: BaseModel
                   ) -> dict[str, Any]:
    assert isinstance(params, SandboxSessionParams)
    reg = ctx.sessions
    if params.op == "create":
        assert params.policy is not None
        s = reg.create(ctx.sandboxes(), rec.requester, params.policy, rec.security_level)
        ctx.audit.append(AuditEvent.SANDBOX_SESSION_STARTED, principal="system",
                         action_id=rec.id, details={"session_id": s.id, "owner": s.owner,
                                                    "policy": s.policy,
                                                    "sandbox_id": s.sandbox.id,
                                                    "level": str(s.level)})
        return {"session_id": s.id, "policy": s.policy, "sandbox_id": s.sandbox.id,
                "security_level": str(s.level)}
    assert params.session_id is not None
    if params.op == "close":
        reg.close(rec.requester, params.session_id)
        return {"session_id": params.session_id, "closed": True}
    s = reg.get(rec.requester, params.session_id)
    try:
        with s.lock:   # one step at a time on one sandbox
            return _step(s, params)
    finally:
        reg.release(s)


def _step(s: Session, p: SandboxSessionParams) -> dict[str, Any]:
    sb = s.sandbox
    timeout = p.timeout_s or 60.0
    if p.op == "exec":
        assert p.argv is not None
        return _result(sb.exec(list(p.argv), timeout_s=timeout).to_dict())
    if p.op == "run_cell":
        assert p.language is not None and p.code is not None
        r = sb.code.run(p.language, p.code, timeout_s=timeout).to_dict()
        return {**_result(r), **{k: r.get(k) for k in ("value", "error", "restarted")}}
    assert p.path is not None
    if p.op == "write_file":
        assert p.content is not None
        data = p.content.encode()
        w = sb.exec(["sh", "-c", 'cat > "$1"', "sh", p.path], stdin=data, timeout_s=30.0)
        if w.exit_code != 0:
            raise InvalidRequest(f"path: cannot write {p.path[:300]}: "
                                 f"{w.stderr_text.strip()[:300]}")
        return {"path": p.path, "bytes": len(data)}
    rd = sb.exec(["head", "-c", str(READ_MAX_BYTES), "--", p.path], timeout_s=30.0)
    if rd.exit_code != 0:
        raise InvalidRequest(f"path: cannot read {p.path[:300]}: "
                             f"{rd.stderr_text.strip()[:300]}")
    return {"path": p.path, "content": rd.stdout_text,
            "truncated": rd.truncated or len(rd.stdout) >= READ_MAX_BYTES}

def _result(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r.get(k) for k in ("stdout", "stderr", "exit_code", "timed_out", "oom_killed",
                                  "duration_ms", "isolation", "sandbox_id")}


def raise_to_session_level(ctx: ExecutionContext, params: BaseModel
                           ) -> tuple[RiskLevel, str] | None:
    """A step on a session is at least the level the session was created at."""
    if not isinstance(params, SandboxSessionParams) or params.op == "create":
        return None
    lv = ctx.sessions.level_of(params.session_id)
    if lv is None or lv.rank <= RiskLevel.MEDIUM.rank:
        return None
    return lv, f"the session was created at {lv}"


ACTION_TYPES = {"sandbox_session": run_session_op}
RAISERS = {"sandbox_session": raise_to_session_level}


REACH = {"sandbox_session": handed_nothing}   # sessions run only under policies without secrets
