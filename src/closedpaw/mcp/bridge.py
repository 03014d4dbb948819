"""What the MCP tools do, apart from the SDK. Every tool that runs code, touches files or
acts (``run_code``, the session tools, ``run_skill``, ``submit_action``) submits a gate
action with the MCP client as the principal: a risk level from the rules, an approval bound
to the exact parameters for high ones, the gate's audit entries (``action.submitted`` says
``via: mcp:<tool>``). One that needs approval is answered at once with ``status: pending``,
its id and hash; ``action_status`` (with ``wait_s`` to long-poll) tells the decision and the
result. The two tools that do not act (``list_skills``, ``action_status``) are audited as
``mcp.call`` entries. Sessions are ``sandbox_session`` actions (see
:mod:`closedpaw.gate.executors.sessions`): long-lived sandboxes owned by the principal."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from closedpaw.audit import AuditEvent
from closedpaw.errors import ActionNotFound, GateError, InvalidRequest
from closedpaw.gate import ActionRequest, ActionStatus, parse_action

if TYPE_CHECKING:
    from closedpaw.gate import ActionRecord, Gate
    from closedpaw.security import Principal

__all__ = ["TOOLS", "McpBridge"]

#: every tool the server offers, in the order it lists them
TOOLS = ("run_code", "create_session", "exec", "run_cell", "write_file", "read_file",
         "close_session", "list_skills", "run_skill", "submit_action", "action_status")
#: how often a wait looks at the database for a decision taken by another process
POLL_S = 0.2
#: the longest any tool waits for an action (the client polls action_status after that)
MAX_WAIT_S = 600.0
#: the longest action_status long-polls
MAX_POLL_S = 60.0
_RESULT_KEYS = ("stdout", "stderr", "exit_code", "timed_out", "oom_killed", "isolation",
                "duration_ms")


class _Ends:
    """The gate's events, for one action: :attr:`done` is set when it reaches a final status.
    Subscribed before the action is submitted (its id not known yet): the ends heard until
    :meth:`watch` names it are kept (a bounded few; past the bound the waiter's poll of the
    database notices the end instead)."""

    _EARLY_MAX = 1024

    def __init__(self, gate: Gate) -> None:
        self.done = threading.Event()
        self._aid: str | None = None
        self._early: set[str] = set()
        self._lock = threading.Lock()
        self._unsubscribe = gate.subscribe(self._on)

    def _on(self, ev: dict[str, Any]) -> None:
        if not ActionStatus(ev["status"]).final:
            return
        aid = ev["action_id"]
        with self._lock:
            if self._aid is None:
                if len(self._early) < self._EARLY_MAX:
                    self._early.add(aid)
            elif aid == self._aid:
                self.done.set()

    def watch(self, aid: str) -> None:
        with self._lock:
            self._aid = aid
            if aid in self._early:
                self.done.set()
            self._early.clear()

    def close(self) -> None:
        self._unsubscribe()


class McpBridge:
    """``wait_s``: how long a tool waits for an action that needs no approval to finish
    (bounded; after it the tool answers with the action's current status)."""

    def __init__(self, gate: Gate, *, wait_s: float = 300.0) -> None:
        self.gate = gate
        self.wait_s = wait_s

    # -- plumbing --------------------------------------------------------------------------
    def audit(self, principal: Principal, tool: str, **details: Any) -> None:
        self.gate.audit.append(AuditEvent.MCP_CALL, principal=principal.name,
                               action_id=details.pop("action_id", None),
                               details={"tool": tool, **details})

    def _wait(self, aid: str, timeout_s: float, *, pending_too: bool = False,
              ends: _Ends | None = None) -> ActionRecord:
        """The action once final, or as it is after ``timeout_s`` (bounded by MAX_WAIT_S).
        A pending action is waited for only with ``pending_too`` (a poll). ``ends``: the
        listener subscribed before the action was submitted here (its end is then heard, and
        the database is not read before the first POLL_S: the gate runs it)."""
        waiting = [ActionStatus.APPROVED, ActionStatus.EXECUTING]
        if pending_too:
            waiting.append(ActionStatus.PENDING)
        fresh = ends is not None
        if ends is None:
            ends = _Ends(self.gate)
        ends.watch(aid)
        try:
            end = time.monotonic() + min(timeout_s, MAX_WAIT_S)
            while True:
                if not fresh:
                    # decided by another process (a person in the web UI, `closedpaw actions
                    # approve`): its events do not reach this one, so the database is asked
                    # too; an action only this process can run (a step on its session) is
                    # run here once approved
                    rec = self.gate.get(aid)
                    if rec.status not in waiting:
                        break
                    if rec.status is ActionStatus.APPROVED:
                        self.gate.adopt(aid)
                fresh = False
                left = end - time.monotonic()
                if left <= 0 or ends.done.wait(min(POLL_S, left)):
                    break
        finally:
            ends.close()
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
            out["poll_with"] = f"action_status(action_id={rec.id!r}, wait_s=30)"
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
        if tool != "submit_action":
            # the tools' own arguments: refused at once when they do not parse (through
            # submit_action an unparseable action is kept and gated at high, as by the API)
            problem = parse_action(action_type, parameters).problem
            if problem is not None:
                raise InvalidRequest(problem)
        # listening before the submission: an action that ends before submit() returns is
        # heard too, and its end needs no database read to notice
        ends = _Ends(self.gate)
        try:
            rec = self.gate.submit(principal, req, via=f"mcp:{tool}")
        except BaseException:
            ends.close()
            raise
        if rec.status is ActionStatus.PENDING:   # never waits for a human
            ends.close()
            return rec
        return self._wait(rec.id, self.wait_s if wait_s is None else wait_s, ends=ends)

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

    def action_status(self, principal: Principal, action_id: str,
                      wait_s: float = 0.0, *, client_session: str | None = None
                      ) -> dict[str, Any]:
        """One of your actions (an approver or admin: anyone's). ``wait_s`` (at most
        MAX_POLL_S): wait that long for it to end (decided and run, rejected, expired). A
        session created after an approval is bound here to the client session that polls
        it (it ends with that client session)."""
        try:
            rec = self.gate.get(action_id, principal)
        except ActionNotFound:
            self.audit(principal, "action_status", refused=str(action_id)[:80])
            raise
        if rec.status is ActionStatus.APPROVED and self.gate.adopt(rec.id):
            rec = self.gate.get(rec.id)   # approved elsewhere, to run here: started now
        if wait_s > 0 and not rec.status.final:
            rec = self._wait(rec.id, min(float(wait_s), MAX_POLL_S), pending_too=True)
        self.audit(principal, "action_status", action_id=rec.id, status=str(rec.status))
        sid = (rec.result or {}).get("session_id")
        if client_session and rec.action_type == "sandbox_session" and isinstance(sid, str) \
                and rec.parameters.get("op") == "create" and rec.requester == principal.name:
            self.gate.context.sessions.bind(sid, client_session)
        return self.outcome(rec)

    def list_skills(self, principal: Principal) -> list[dict[str, Any]]:
        self.audit(principal, "list_skills")
        skills = self.gate.context.skills
        return [] if skills is None else skills.list()

    # -- sessions: sandbox_session actions ----------------------------------------------
    def _session_op(self, principal: Principal, tool: str, parameters: dict[str, Any],
                    *, bind: str | None = None, wait_s: float | None = None
                    ) -> dict[str, Any]:
        """Submit one step; completed: the outcome with the step's result flattened in;
        pending: the outcome (id, hash, how to approve and poll); failed: a tool error."""
        rec = self._submit(principal, tool, "sandbox_session", parameters, wait_s=wait_s)
        out = self.outcome(rec)
        if rec.status is ActionStatus.FAILED:
            raise GateError(f"action {rec.id} failed: {rec.error}")
        res = out.pop("result", None)
        if isinstance(res, dict):
            out.update(res)
            sid = res.get("session_id")
            if bind and parameters["op"] == "create" and isinstance(sid, str):
                self.gate.context.sessions.bind(sid, bind)
        return out

    def create_session(self, principal: Principal, policy: str = "python", *,
                       client_session: str | None = None) -> dict[str, Any]:
        return self._session_op(principal, "create_session", {"op": "create",
                                                              "policy": policy},
                                bind=client_session)

    def exec(self, principal: Principal, session_id: str, argv: list[str],
             timeout_s: float = 60.0) -> dict[str, Any]:
        return self._session_op(principal, "exec", {"op": "exec", "session_id": session_id,
                                                    "argv": argv, "timeout_s": timeout_s},
                                wait_s=timeout_s + 60.0)

    def run_cell(self, principal: Principal, session_id: str, code: str,
                 language: str = "python", timeout_s: float = 60.0) -> dict[str, Any]:
        return self._session_op(principal, "run_cell", {
            "op": "run_cell", "session_id": session_id, "code": code, "language": language,
            "timeout_s": timeout_s}, wait_s=timeout_s + 60.0)

    def write_file(self, principal: Principal, session_id: str, path: str,
                   content: str) -> dict[str, Any]:
        return self._session_op(principal, "write_file", {
            "op": "write_file", "session_id": session_id, "path": path, "content": content})

    def read_file(self, principal: Principal, session_id: str, path: str) -> dict[str, Any]:
        return self._session_op(principal, "read_file", {"op": "read_file",
                                                         "session_id": session_id,
                                                         "path": path})

    def close_session(self, principal: Principal, session_id: str) -> dict[str, Any]:
        return self._session_op(principal, "close_session", {"op": "close",
                                                             "session_id": session_id})

    def close_bound(self, alive: Any) -> list[str]:
        """Close the sandbox sessions whose MCP client session has ended."""
        return self.gate.context.sessions.close_bound(alive)

    def close(self) -> None:
        """Nothing of its own: sessions belong to the gate (closed with it)."""


