"""What an approved action does. Code runs only in a sandbox; host file and network access run
only after the gate let them through (the human saw the exact path or URL when they were high).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from closedpaw.audit.events import AuditEvent
from closedpaw.errors import GateError
from closedpaw.orchestrator.actions import (
    CodeExecutionParams,
    FileReadParams,
    FileWriteParams,
    NetworkRequestParams,
    ParsedAction,
    RiskLevel,
)

if TYPE_CHECKING:
    from closedpaw.orchestrator.engine import Orchestrator
    from closedpaw.orchestrator.store import ActionRecord

__all__ = ["execute"]

BODY_CAP = 1024 * 1024


def execute(orch: Orchestrator, rec: ActionRecord, parsed: ParsedAction) -> dict[str, Any]:
    """Run the action; returns its result, or raises a ClosedPawError (the action fails)."""
    if parsed.action is None:
        raise GateError(f"cannot execute: {parsed.problem}")
    p = parsed.action.parameters
    if isinstance(p, CodeExecutionParams):
        return _code(orch, rec, p)
    if isinstance(p, FileReadParams):
        return _file_read(orch, rec, p)
    if isinstance(p, FileWriteParams):
        return _file_write(p)
    if isinstance(p, NetworkRequestParams):
        return _network(p)
    chat = getattr(orch, "chat_handler", None)   # issue 14: set by the app to the assistant
    if parsed.action_type == "chat" and chat is not None:
        out: dict[str, Any] = chat(rec.requester, parsed.parameters)
        return out
    missing = {"chat": "no LLM provider is configured (providers are not built yet)",
               "secret_read": "no vault is configured (the vault is not built yet)",
               "skill_execution": "no skill registry is configured (skills are not built yet)"}
    raise GateError(f"cannot execute {parsed.action_type}: "
                    f"{missing.get(parsed.action_type, 'no executor')}")


def _code(orch: Orchestrator, rec: ActionRecord, p: CodeExecutionParams) -> dict[str, Any]:
    from dataclasses import replace

    mgr = orch.sandbox_manager()
    base = mgr.spec_for(p.policy)  # PolicyError (the action fails) for an unknown name
    if base.limits.network_enabled:
        raise GateError(f"policy {p.policy!r} enables the network; code_execution runs "
                        "only in sandboxes without one")
    spec = replace(base, limits=replace(base.limits, timeout_s=p.timeout_s))
    result = mgr.run(p.command(), spec)
    out = result.to_dict()
    orch.audit.append(AuditEvent.SANDBOX_RUN, principal="system", action_id=rec.id,
                      details={"sandbox_id": result.sandbox_id, "exit_code": result.exit_code,
                               "timed_out": result.timed_out, "oom_killed": result.oom_killed,
                               "duration_ms": out["duration_ms"],
                               "isolation": out["isolation"]})
    return out


def _file_read(orch: Orchestrator, rec: ActionRecord, p: FileReadParams) -> dict[str, Any]:
    # read at medium risk only because it is inside the workspace: hold it to that, judged on
    # the file actually opened (so a symlink, or one swapped in meanwhile, cannot lead out)
    confined = rec.security_level.rank < RiskLevel.HIGH.rank
    root = orch.settings.workspace_path.resolve()
    try:
        fd = os.open(p.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise GateError(f"cannot read {p.path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if confined and real != root and root not in real.parents:
            raise GateError(f"{p.path} is {real}, outside the workspace {root}; submit it "
                            "again with that path (it will need an approval)")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise GateError(f"{p.path} is not a regular file")
        try:
            data = f.read(p.max_bytes + 1)
        except OSError as e:
            raise GateError(f"cannot read {p.path}: {e.strerror}") from None
    return {"path": p.path, "content": data[:p.max_bytes].decode("utf-8", "replace"),
            "bytes": min(len(data), p.max_bytes), "truncated": len(data) > p.max_bytes}


def _file_write(p: FileWriteParams) -> dict[str, Any]:
    data = p.content.encode()
    try:
        fd = os.open(p.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o640)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise GateError(f"cannot write {p.path}: {e.strerror}") from None
    return {"path": p.path, "bytes_written": len(data)}


def _network(p: NetworkRequestParams) -> dict[str, Any]:
    import httpx

    try:
        with httpx.Client(timeout=p.timeout_s, follow_redirects=False, trust_env=False) as c, \
                c.stream(p.method, p.url, headers=p.headers,
                         content=p.body.encode() if p.body is not None else None) as r:
            body = b""
            for chunk in r.iter_bytes():
                body += chunk
                if len(body) > BODY_CAP:
                    break
            return {"status_code": r.status_code, "headers": dict(r.headers),
                    "body": body[:BODY_CAP].decode("utf-8", "replace"),
                    "truncated": len(body) > BODY_CAP}
    except httpx.HTTPError as e:
        raise GateError(f"request to {p.url} failed: {type(e).__name__}: {e}") from None
