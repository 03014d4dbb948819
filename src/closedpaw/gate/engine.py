"""The Gate: the one gate every risky act passes through.

submit -> classify (rules) -> pending (high, critical) or approved at once (low, medium) ->
executing -> completed | failed. Every transition is committed together with its audit entry
(or not at all). Execution runs on a small thread pool; listeners (the API's SSE stream) hear
every committed transition.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from closedpaw.audit import AuditEvent, AuditLog
from closedpaw.errors import (
    ActionNotFound,
    ActionStateError,
    ApprovalRefused,
    ClosedPawError,
    GateError,
    InvalidRequest,
)
from closedpaw.gate.actions import (
    ActionRequest,
    ActionStatus,
    CodeExecutionParams,
    ParsedAction,
    RiskLevel,
    parse_action,
)
from closedpaw.gate.executors import (
    ExecutionContext,
    ExecutorRegistry,
    default_registry,
)
from closedpaw.gate.executors.context import secret_resolver_for
from closedpaw.gate.rules import RuleSet
from closedpaw.gate.store import ActionRecord, ActionRow, Store
from closedpaw.security.principal import SYSTEM, Principal
from closedpaw.security.tokens import hash_token, new_token
from closedpaw.settings import Settings

if TYPE_CHECKING:
    from closedpaw.sandbox import SandboxManager

__all__ = ["Gate", "Listener"]

log = logging.getLogger("closedpaw.gate")
Listener = Callable[[dict[str, Any]], None]

_EVENT_OF = {ActionStatus.APPROVED: AuditEvent.ACTION_APPROVED,
             ActionStatus.REJECTED: AuditEvent.ACTION_REJECTED,
             ActionStatus.EXPIRED: AuditEvent.ACTION_EXPIRED,
             ActionStatus.EXECUTING: AuditEvent.ACTION_EXECUTING,
             ActionStatus.COMPLETED: AuditEvent.ACTION_COMPLETED,
             ActionStatus.FAILED: AuditEvent.ACTION_FAILED,
             ActionStatus.INTERRUPTED: AuditEvent.ACTION_INTERRUPTED}


class Gate:
    """Owns the store, the audit log, the rules and the sandbox manager. Call :meth:`start`
    once (recovers crashed work), and :meth:`close` at the end."""

    def __init__(self, settings: Settings, *, store: Store | None = None,
                 audit: AuditLog | None = None, rules: RuleSet | None = None,
                 manager: SandboxManager | None = None,
                 executors: ExecutorRegistry | None = None, workers: int = 4) -> None:
        self.settings = settings
        self.audit = audit or AuditLog(settings.audit_dir)
        self.rules = rules or RuleSet.load(user_file=settings.rules_path,
                                           workspace=settings.workspace_path,
                                           data_dir=settings.data_dir,
                                           rules_file=settings.rules_path)
        self.store = store or Store(settings.database_url)
        self._manager = manager
        self._owns_manager = manager is None
        self.executors = executors if executors is not None else default_registry()
        self.context = ExecutionContext(settings=settings, audit=self.audit,
                                        sandboxes=self.sandbox_manager,
                                        secret_resolver=secret_resolver_for(settings))
        self._pool = ThreadPoolExecutor(max_workers=workers,
                                        thread_name_prefix="closedpaw-exec")
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> list[str]:
        """Mark work cut off by a crash ``interrupted`` (audited) and expire overdue actions.
        Returns the ids that were interrupted."""
        self.settings.workspace_path.mkdir(mode=0o750, parents=True, exist_ok=True)
        cut = []
        for aid in self.store.ids_where(status=[ActionStatus.EXECUTING, ActionStatus.APPROVED]):
            rec = self._move(aid, [ActionStatus.EXECUTING, ActionStatus.APPROVED],
                             ActionStatus.INTERRUPTED, SYSTEM,
                             details={"why": "the process running it stopped"},
                             error="interrupted: the server stopped while it was executing")
            if rec is not None:
                cut.append(aid)
        self.expire_due()
        self._reap_leftovers()
        return cut

    def _reap_leftovers(self) -> None:
        """Remove sandboxes that a crashed predecessor left running (``closedpaw gc``);
        audited when anything was found. Live sandboxes of other processes are spared."""
        from closedpaw.errors import RuntimeUnavailable

        try:
            report = self.sandbox_manager().gc()
        except RuntimeUnavailable:
            return  # not root, or no runtime: no sandbox of ours can be running either
        if report.removed or report.errors:
            self.audit.append(AuditEvent.SANDBOX_REAPED, principal=SYSTEM.name,
                              details=report.to_dict())

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.context.pools.close()  # warm sandboxes of code_execution
        if self._manager is not None:
            self._manager.cleanup()
        self.store.close()

    def sandbox_manager(self) -> SandboxManager:
        with self._lock:
            if self._manager is None:
                from closedpaw.sandbox import SandboxManager

                self._manager = SandboxManager(self.settings)
            return self._manager

    # -- listeners ---------------------------------------------------------------------
    def subscribe(self, fn: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._listeners:
                    self._listeners.remove(fn)
        return unsubscribe

    def _publish(self, rec: ActionRecord) -> None:
        ev = {"action_id": rec.id, "status": str(rec.status), "action_type": rec.action_type,
              "security_level": str(rec.security_level), "ts": rec.updated_at}
        with self._lock:
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(ev)
            except Exception:  # a broken listener must not break the gate
                log.exception("event listener failed")

    # -- principals ----------------------------------------------------------------------
    def create_principal(self, name: str, role: str, *, by: Principal = SYSTEM) -> str:
        """Create a principal and return its new token (shown once; only its hash is kept)."""
        from closedpaw.security.principal import ROLES

        if role not in ROLES:
            raise InvalidRequest(f"role: {role!r} is not one of {', '.join(ROLES)}")
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(
                ".", "").isalnum():
            raise InvalidRequest("name: 1-64 letters, digits, '.', '-' or '_'")
        if name == SYSTEM.name:
            raise InvalidRequest("name: 'system' is reserved")
        token = new_token()
        with self.store.session() as s:
            self.store.add_principal(s, name, role, hash_token(token))
            self.audit.append(AuditEvent.TOKEN_CREATED, principal=by.name,
                              details={"name": name, "role": role})
        return token

    def revoke_principal(self, name: str, *, by: Principal = SYSTEM) -> None:
        """Disable a principal: its token stops working at its next request."""
        with self.store.session() as s:
            self.store.disable_principal(s, name)
            self.audit.append(AuditEvent.TOKEN_REVOKED, principal=by.name,
                              details={"name": name})

    def authenticate(self, token: str) -> Principal | None:
        row = self.store.principal_by_hash(hash_token(token))
        return Principal(row.name, row.role) if row else None

    # -- actions ---------------------------------------------------------------------------
    def _check_policy(self, parsed: ParsedAction) -> None:
        """Code naming an execution policy that does not exist is refused at once (422),
        rather than waiting for an approval it could never use."""
        from closedpaw.errors import PolicyError

        p = parsed.action.parameters if parsed.action is not None else None
        if isinstance(p, CodeExecutionParams):
            try:
                self.sandbox_manager().policies().get(p.policy)
            except PolicyError as e:
                raise InvalidRequest(f"parameters.policy: {e}") from None

    def submit(self, principal: Principal, req: ActionRequest) -> ActionRecord:
        parsed = parse_action(req.action_type, req.parameters)
        self._check_policy(parsed)
        decision = self.rules.classify(parsed, req.min_level)
        now = time.time()
        needs = decision.level.needs_approval
        row = ActionRow(
            id=str(uuid.uuid4()), action_type=parsed.action_type, parameters=parsed.canonical,
            params_sha256=parsed.params_sha256, security_level=str(decision.level),
            level_reason=decision.reason,
            status=str(ActionStatus.PENDING if needs else ActionStatus.APPROVED),
            requester=principal.name, created_at=now, updated_at=now,
            expires_at=now + self.settings.gate.approval_ttl_s if needs else None,
            decided_by=None if needs else f"rule:{decision.level}",
            decided_at=None if needs else now, result=None, error=None)
        with self.store.session() as s:
            s.add(row)
            s.flush()
            rec = ActionRecord.of(row)
            self.audit.append(AuditEvent.ACTION_SUBMITTED, principal=principal.name,
                              action_id=rec.id, details={
                                  "action_type": rec.action_type,
                                  "params_sha256": rec.params_sha256,
                                  "security_level": str(rec.security_level),
                                  "reason": rec.level_reason,
                                  "requires_approval": needs,
                                  "problem": parsed.problem})
            if not needs:
                self.audit.append(AuditEvent.ACTION_APPROVED, principal=SYSTEM.name,
                                  action_id=rec.id, details={
                                      "by": "rule", "security_level": str(rec.security_level),
                                      "params_sha256": rec.params_sha256})
        self._publish(rec)
        if not needs:
            self._schedule(rec.id)
        return rec

    def get(self, action_id: str) -> ActionRecord:
        self._check_id(action_id)
        rec = self.store.get(action_id)
        if rec is None:
            raise ActionNotFound(f"no action {action_id}")
        if rec.status is ActionStatus.PENDING and rec.expires_at is not None \
                and rec.expires_at <= time.time():
            self.expire_due()
            rec = self.store.get(action_id) or rec
        return rec

    def list_actions(self, *, status: list[ActionStatus] | None = None, limit: int = 100,
             offset: int = 0) -> list[ActionRecord]:
        self.expire_due()
        return self.store.list_actions(status=status, limit=limit, offset=offset)

    def pending(self) -> list[ActionRecord]:
        return self.list_actions(status=[ActionStatus.PENDING], limit=1000)

    def approve(self, principal: Principal, action_id: str, params_sha256: str) -> ActionRecord:
        rec = self.get(action_id)

        def refuse(reason: str, message: str) -> ApprovalRefused:
            self.audit.append(AuditEvent.APPROVAL_REFUSED, principal=principal.name,
                              action_id=action_id, details={"reason": reason,
                                                            "status": str(rec.status)})
            return ApprovalRefused(reason, message)

        if rec.status is ActionStatus.EXPIRED:
            raise refuse("expired", f"action {action_id} expired at its TTL; submit it again")
        if rec.status is not ActionStatus.PENDING:
            self.audit.append(AuditEvent.APPROVAL_REFUSED, principal=principal.name,
                              action_id=action_id, details={"reason": "not_pending",
                                                            "status": str(rec.status)})
            raise ActionStateError(f"action {action_id} is {rec.status}, not pending; an "
                                   "approval is used once")
        if not isinstance(params_sha256, str) or not hmac.compare_digest(
                params_sha256.lower().encode(), rec.params_sha256.encode()):
            raise refuse("hash_mismatch", "params_sha256 does not match the action's "
                         "canonical parameters; review them again (GET the action)")
        if hashlib.sha256(rec.canonical.encode()).hexdigest() != rec.params_sha256:
            raise refuse("integrity", "the stored parameters no longer match their hash (the "
                         "database was changed behind the gate); the action cannot be approved")
        if rec.security_level is RiskLevel.CRITICAL and not principal.is_admin:
            raise refuse("role", "a critical action needs an approval by an admin")
        if self.settings.gate.require_distinct_approver and principal.name == rec.requester:
            raise refuse("self_approval", "the approver must be another principal than the "
                         "requester (require_distinct_approver is on)")
        out = self._move(action_id, [ActionStatus.PENDING], ActionStatus.APPROVED, principal,
                         where_unexpired=time.time(), decided_by=principal.name,
                         decided_at=time.time())
        if out is None:
            now = self.get(action_id)
            if now.status is ActionStatus.EXPIRED:
                raise refuse("expired", f"action {action_id} expired at its TTL")
            raise ActionStateError(f"action {action_id} is {now.status}, not pending")
        self._schedule(action_id)
        return out

    def reject(self, principal: Principal, action_id: str, reason: str = "") -> ActionRecord:
        rec = self.get(action_id)
        if rec.status is not ActionStatus.PENDING:
            raise ActionStateError(f"action {action_id} is {rec.status}, not pending")
        out = self._move(action_id, [ActionStatus.PENDING], ActionStatus.REJECTED, principal,
                         details={"reason": reason[:1000]}, decided_by=principal.name,
                         decided_at=time.time(), error=f"rejected by {principal.name}"
                         + (f": {reason[:1000]}" if reason else ""))
        if out is None:
            raise ActionStateError(f"action {action_id} is no longer pending")
        return out

    def expire_due(self) -> int:
        n = 0
        now = time.time()
        for aid in self.store.ids_where(status=[ActionStatus.PENDING], expires_before=now):
            if self._move(aid, [ActionStatus.PENDING], ActionStatus.EXPIRED, SYSTEM,
                          details={"ttl_s": self.settings.gate.approval_ttl_s},
                          error="expired: nobody decided within the approval TTL"):
                n += 1
        return n

    # -- execution -------------------------------------------------------------------------
    def _schedule(self, action_id: str) -> None:
        try:
            self._pool.submit(self._run, action_id)
        except RuntimeError:  # shutting down: leave it approved; start() will interrupt it
            log.warning("not executing %s: shutting down", action_id)

    def run_now(self, action_id: str) -> ActionRecord:
        """Execute an approved action on this thread (the pool uses this too)."""
        self._run(action_id)
        return self.get(action_id)

    def _run(self, action_id: str) -> None:
        try:
            rec = self._move(action_id, [ActionStatus.APPROVED], ActionStatus.EXECUTING, SYSTEM)
        except ClosedPawError:
            log.exception("cannot start %s", action_id)
            return
        if rec is None:
            return
        parsed = parse_action(rec.action_type, rec.parameters)
        if parsed.params_sha256 != rec.params_sha256:  # never run what was not approved
            self._finish(rec, error="stored parameters no longer match the approved hash")
            return
        try:
            if parsed.action is None:
                raise GateError(f"cannot execute: {parsed.problem}")
            run = self.executors.executor(parsed.action_type)
            result = run(self.context, rec, parsed.action.parameters)
        except ClosedPawError as e:
            self._finish(rec, error=str(e))
        except Exception as e:  # an unexpected bug fails the action, never the server
            log.exception("executing %s", action_id)
            self._finish(rec, error=f"internal error: {type(e).__name__}")
        else:
            self._finish(rec, result=result)

    def _finish(self, rec: ActionRecord, *, result: dict[str, Any] | None = None,
                error: str | None = None) -> None:
        to = ActionStatus.FAILED if error is not None else ActionStatus.COMPLETED
        details: dict[str, Any] = {"error": error} if error else {}
        if result is not None and "exit_code" in result:
            details.update(exit_code=result["exit_code"], sandbox_id=result.get("sandbox_id"),
                           isolation=result.get("isolation", {}).get("runtime"))
        try:
            self._move(rec.id, [ActionStatus.EXECUTING], to, SYSTEM, details=details,
                       result=result, error=error)
        except ClosedPawError:
            log.exception("cannot record the end of %s; it stays executing and will be "
                          "marked interrupted at the next start", rec.id)

    # -- helpers -------------------------------------------------------------------------
    def _move(self, action_id: str, frm: list[ActionStatus], to: ActionStatus,
              principal: Principal, *, details: dict[str, Any] | None = None,
              where_unexpired: float | None = None, **values: Any) -> ActionRecord | None:
        def audit(rec: ActionRecord) -> None:
            self.audit.append(_EVENT_OF[to], principal=principal.name, action_id=action_id,
                              details={"to": str(to), "params_sha256": rec.params_sha256,
                                       "security_level": str(rec.security_level),
                                       **(details or {})})
        rec = self.store.transition(action_id, frm, to, audit=audit,
                                    where_unexpired=where_unexpired, **values)
        if rec is not None:
            self._publish(rec)
        return rec

    @staticmethod
    def _check_id(action_id: str) -> None:
        try:
            uuid.UUID(action_id)
        except (ValueError, TypeError, AttributeError):
            raise ActionNotFound(f"no action {str(action_id)[:80]!r}") from None

    def status(self) -> dict[str, Any]:
        counts = self.store.counts()
        return {"actions": counts, "pending": counts.get("pending", 0),
                "audit_entries": self.audit.last_seq(), "database": self.store.safe_url}

    def sandbox_status(self) -> dict[str, Any]:
        """The runtimes installed, and the one actions run in (chosen by a live probe,
        cached)."""
        from closedpaw.sandbox.drivers.detect import PREFERENCE

        mgr = self.sandbox_manager()
        installed = []
        for name in PREFERENCE:
            try:
                f = mgr.registry.driver(name).features()
                installed.append({"name": name, "version": f.version, "platform": f.platform})
            except ClosedPawError:
                continue
        try:
            drv = mgr.driver()
            f = drv.features()
            return {"usable": True, "runtime": drv.name, "version": f.version,
                    "platform": f.platform, "network": "none", "seccomp": True,
                    "installed": installed}
        except ClosedPawError as e:
            return {"usable": False, "detail": str(e), "installed": installed}
