"""The Gate: the one gate every risky act passes through.

submit -> classify (rules) -> pending (high, critical) or approved at once (low, medium) ->
executing -> completed | failed. Every transition is committed together with its audit entry
(or not at all). Execution runs on a small thread pool; listeners (the API's SSE stream) hear
every committed transition.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from closedpaw.audit import AuditEvent, AuditLog
from closedpaw.errors import (
    ActionNotFound,
    ActionStateError,
    ApprovalRefused,
    ClosedPawError,
    GateError,
    InvalidRequest,
    PermissionDenied,
    QuotaExceeded,
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
from closedpaw.gate.executors.session_store import SandboxSessions
from closedpaw.gate.rules import Decision, RuleSet, raise_to
from closedpaw.gate.store import ActionRecord, ActionRow, Store
from closedpaw.security.keys import load_key, mac
from closedpaw.security.principal import SYSTEM, Principal
from closedpaw.security.tokens import hash_token, new_token
from closedpaw.settings import Settings
from closedpaw.vault import Vault

if TYPE_CHECKING:
    from closedpaw.sandbox import SandboxManager
    from closedpaw.skills import SecretResolver, SkillService

#: action types whose executor uses state only the submitting process holds: run there
PROCESS_BOUND = frozenset({"sandbox_session"})

__all__ = ["Gate", "Listener"]

log = logging.getLogger("closedpaw.gate")
Listener = Callable[[dict[str, Any]], None]
#: a page of actions stops once its parameters and results pass this (at least one row)
LIST_MAX_BYTES = 8 * 1024 * 1024

_EVENT_OF = {ActionStatus.APPROVED: AuditEvent.ACTION_APPROVED,
             ActionStatus.REJECTED: AuditEvent.ACTION_REJECTED,
             ActionStatus.EXPIRED: AuditEvent.ACTION_EXPIRED,
             ActionStatus.EXECUTING: AuditEvent.ACTION_EXECUTING,
             ActionStatus.COMPLETED: AuditEvent.ACTION_COMPLETED,
             ActionStatus.FAILED: AuditEvent.ACTION_FAILED,
             ActionStatus.INTERRUPTED: AuditEvent.ACTION_INTERRUPTED}


#: action types that act on the host itself with the server's privileges (its files, its
#: network position), not in a sandbox: a ``user`` cannot approve them, its own included.
#: A user's self-approval of a host file read outside the workspace read the server's stderr
#: (its one-time admin login link) and so became admin; a host write as root is the host.
HOST_ACTIONS = frozenset({"file_read", "file_write", "network_request"})
#: skills that run in the server's process on host files (beneath ``CLOSEDPAW_FS_ROOTS``),
#: not in a sandbox: the same as host actions for who may approve them
HOST_SKILLS = frozenset({"filesystem"})


def on_host(rec: ActionRecord) -> bool:
    """Does the action act on the host with the server's privileges (no sandbox)?"""
    if rec.action_type in HOST_ACTIONS:
        return True
    p = rec.parameters if isinstance(rec.parameters, dict) else {}
    return rec.action_type == "skill_execution" and p.get("skill") in HOST_SKILLS


#: the error of an action cut off by its process's end (a crash, found at the next start;
#: or a stop, recorded before the process ends)
INTERRUPTED = "interrupted: the server stopped while it was executing"


class Gate:
    """Owns the store, the audit log, the rules and the sandbox manager. Call :meth:`start`
    once (recovers crashed work), and :meth:`close` at the end."""

    def __init__(self, settings: Settings, *, store: Store | None = None,
                 audit: AuditLog | None = None, rules: RuleSet | None = None,
                 manager: SandboxManager | None = None,
                 executors: ExecutorRegistry | None = None, workers: int | None = None,
                 skills: SkillService | None = None,
                 secrets: SecretResolver | None = None,
                 vault: Vault | None = None) -> None:
        self.settings = settings
        #: this gate's identity among the processes sharing the database: an action on
        #: state only this process holds (a sandbox session) is marked to run here
        self.instance_id = uuid.uuid4().hex
        self.audit = audit or AuditLog(settings.audit_dir,
                                       segment_bytes=settings.gate.audit_segment_bytes)
        self.store = store or Store(settings.database_url)
        db_file = (settings.database_url.split("///", 1)[1]
                   if settings.database_url.startswith("sqlite") and "///" in
                   settings.database_url else "")
        extra = tuple(x for x in (db_file, db_file + "-wal", db_file + "-shm") if x)
        self.rules = rules or RuleSet.load(user_file=settings.rules_path,
                                           workspace=settings.workspace_path,
                                           data_dir=settings.data_dir,
                                           rules_file=settings.rules_path,
                                           extra_protected=extra)
        # the keyed MAC binding parameters and approvals: a database writer without this key
        # cannot make other parameters run (kept like audit.key: 0600, refused otherwise)
        self._key = load_key(settings.data_dir / "gate.key")
        self.audit.anchor = self.store
        self._manager = manager
        self._owns_manager = manager is None
        self.executors = executors if executors is not None else default_registry()
        if skills is None:
            from closedpaw.skills import SkillService

            skills = SkillService(settings, sandboxes=self.sandbox_manager)
        # the vault lives in the gate's database; locked until start() (key file) or unlock
        self.vault = vault if vault is not None else Vault(engine=self.store.engine)
        self.audit.redact = self.vault.redactor.redact_obj
        self.context = ExecutionContext(settings=settings, audit=self.audit,
                                        sandboxes=self.sandbox_manager, vault=self.vault,
                                        role_of=self.role_of, skills=skills, secrets=secrets,
                                        protected=self.rules.protected,
                                        secret_resolver=secret_resolver_for(settings,
                                                                            self.vault),
                                        sessions=SandboxSessions(
                                            max_sessions=settings.mcp.max_sandbox_sessions,
                                            max_per_principal=settings.mcp
                                            .max_sandbox_sessions_per_principal,
                                            idle_s=settings.mcp.session_idle_s))
        self.context.sessions.audit = self.audit
        self.workers = workers or settings.gate.workers
        self.max_running = (settings.gate.max_executions_per_principal
                            or max(1, self.workers - 1))
        self._pool = ThreadPoolExecutor(max_workers=self.workers,
                                        thread_name_prefix="closedpaw-exec")
        self._running: dict[str, int] = {}
        self._queued: dict[str, deque[str]] = {}
        self._listeners: list[Listener] = []
        #: wait(): action id -> [(event, [final record])] told by _publish
        self._waiters: dict[str, list[tuple[threading.Event, list[ActionRecord]]]] = {}
        #: actions this gate scheduled and has not seen end: their end is published here
        self._inflight: set[str] = set()
        self._adopted: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False
        #: close_sandboxes() was called: nothing more starts, and what still runs ends
        #: interrupted (its sandbox is stopped under it)
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> list[str]:
        """Mark work cut off by a crash ``interrupted`` (audited) and expire overdue actions.
        Returns the ids that were interrupted."""
        self.settings.workspace_path.mkdir(mode=0o750, parents=True, exist_ok=True)
        self._anchor_first_use()
        cut = []
        for aid in self.store.ids_where(status=[ActionStatus.EXECUTING, ActionStatus.APPROVED]):
            rec = self._move(aid, [ActionStatus.EXECUTING, ActionStatus.APPROVED],
                             ActionStatus.INTERRUPTED, SYSTEM,
                             details={"why": "the process running it stopped"},
                             error=INTERRUPTED)
            if rec is not None:
                cut.append(aid)
        self.expire_due()
        self._reap_leftovers()
        from closedpaw.gate.executors.secret import open_vault

        open_vault(self.vault, self.settings)
        self.protect_vault_keys()
        return cut

    def protect_vault_keys(self) -> None:
        """The vault's key file (the one recorded at init, its ``.next`` during a rotation,
        the configured one) may live outside the data directory: it joins ClosedPaw's own
        state, so a host action on it is critical (an admin decides). An approver's self-
        approved read of it (high) gave them every secret, admin-level ones included. Called
        at start, and by the server's sweeper (a ``vault init`` while it runs)."""
        protected = self.rules.protected
        if protected is None:
            return
        keys = [self.settings.vault.vault_key_file]
        with contextlib.suppress(ClosedPawError):
            recorded = self.vault.status().get("key_file")
            keys.append(Path(recorded) if recorded else None)
        for k in keys:
            if k is None:
                continue
            for path in (k, k.with_name(k.name + ".next")):
                if path not in protected.extra:
                    protected.extra.append(path)

    def _anchor_first_use(self) -> None:
        """A database from before the anchor existed: anchor the log's tail once (audited).
        From then on the log may never fall behind it."""
        if self.store.anchor() is not None:
            return
        self.audit.anchor = None
        try:
            last = self.audit.last_seq()
            if last > 0:
                e = self.audit.append(AuditEvent.SERVER_STARTED, principal=SYSTEM.name,
                                      details={"anchored": "the database anchor starts here"})
                self.store.set_anchor(e.seq, e.entry_hash)
        finally:
            self.audit.anchor = self.store

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
        self.close_sandboxes()   # the manager's cleanup included
        self.vault.close()
        self.store.close()

    def close_sandboxes(self, wait_s: float = 10.0) -> None:
        """Stop every sandbox of this process before it ends: nothing more starts on this
        gate's workers; the sandbox sessions end (they die with their process); the warm
        pools (``code_execution``'s and the sessions') close; every sandbox still live (a
        running action's) is stopped and deleted, and those actions end ``interrupted``, as
        after a crash; then waits (up to ``wait_s``) for their ends to be recorded and for
        the teardown (it runs on the manager's reaper thread). A server whose process ends
        right after its shutdown, as uvicorn's does by re-raising SIGTERM, left all of them
        behind, the running code included. Idempotent."""
        with self._lock:
            self._stopping = True
        self.context.sessions.close_all()
        self.context.pools.close()
        with self._lock:
            mgr = self._manager
        if mgr is not None:
            mgr.cleanup()   # the running actions' sandboxes: their jobs end now
        end = time.monotonic() + wait_s
        while time.monotonic() < end:
            with self._lock:
                if not self._inflight:
                    break
            time.sleep(0.02)
        if mgr is not None:
            mgr.reaper.drain()

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
              "security_level": str(rec.security_level), "ts": rec.updated_at,
              "requester": rec.requester}
        with self._lock:
            listeners = list(self._listeners)
            waiters: Sequence[tuple[threading.Event, list[ActionRecord]]] = ()
            if rec.status.final:
                waiters = self._waiters.pop(rec.id, ())
                self._inflight.discard(rec.id)
        for done, box in waiters:
            box.append(rec)
            done.set()
        for fn in listeners:
            try:
                fn(ev)
            except Exception:  # a broken listener must not break the gate
                log.exception("event listener failed")

    def wait(self, action_id: str, timeout_s: float, principal: Principal | None = None
             ) -> ActionRecord:
        """The action once final, or as it is after ``timeout_s``. An action this gate runs
        is not read: its end hands the committed record over. Any other (decided already, run
        by another process, not visible to ``principal``) is read first, and again after
        ``timeout_s``."""
        self._check_id(action_id)
        done = threading.Event()
        box: list[ActionRecord] = []
        with self._lock:
            self._waiters.setdefault(action_id, []).append((done, box))
            ours = action_id in self._inflight
        try:
            if not ours or principal is not None:
                rec = self.get(action_id, principal)
                if rec.status.final:
                    return rec
            if done.wait(timeout_s) and box:
                return box[0]
            return self.get(action_id, principal)
        finally:
            with self._lock:
                left = [w for w in self._waiters.get(action_id, ()) if w[0] is not done]
                if left:
                    self._waiters[action_id] = left
                else:
                    self._waiters.pop(action_id, None)

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

    def role_of(self, name: str | None) -> str:
        """The role of an active principal, '' when there is none of that name."""
        for n, role, _created, disabled in (self.store.principals() if name else []):
            if n == name and not disabled:
                return role
        return ""

    def authenticate(self, token: str) -> Principal | None:
        row = self.store.principal_by_hash(hash_token(token))
        return Principal(row.name, row.role) if row else None

    # -- MACs (gate.key) ---------------------------------------------------------------------
    def _params_mac(self, aid: str, level: str, requester: str, canonical: str,
                    via: str | None = None) -> str:
        if via:   # the front door is bound too: clearing it in the database breaks the MAC
            return mac(self._key, "params", aid, level, requester, canonical, "via", via)
        return mac(self._key, "params", aid, level, requester, canonical)

    def _approval_mac(self, aid: str, sha: str, by: str) -> str:
        return mac(self._key, "approval", aid, sha, by)

    def _verify_macs(self, rec: ActionRecord) -> str | None:
        """Why ``rec`` must not run (its row was written without the gate key), or None."""
        want = self._params_mac(rec.id, str(rec.security_level), rec.requester, rec.canonical,
                                rec.via)
        if not rec.params_mac or not hmac.compare_digest(want, rec.params_mac):
            return "the stored parameters do not carry the gate's MAC (changed in the database)"
        if rec.approved_sha256 is None or rec.decided_by is None or rec.approval_mac is None:
            return "the approval does not carry the gate's MAC (changed in the database)"
        if not hmac.compare_digest(rec.approved_sha256, rec.params_sha256) \
                or hashlib.sha256(rec.canonical.encode()).hexdigest() != rec.params_sha256:
            return "stored parameters no longer match the approved hash"
        want = self._approval_mac(rec.id, rec.approved_sha256, rec.decided_by)
        if not hmac.compare_digest(want, rec.approval_mac):
            return "the approval does not carry the gate's MAC (changed in the database)"
        return None

    def _use_once(self, action_id: str) -> str | None:
        """Mark ``action_id`` executed outside the database (``DATA_DIR/executed/<id>``,
        made with O_EXCL): an approval reset in the database to run again finds the mark."""
        d = self.settings.data_dir / "executed" / action_id[:2]
        try:
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(d / action_id, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         0o600)
        except FileExistsError:
            return ("this approval was used already (the row was set back to approved in the "
                    "database)")
        except OSError as e:
            return f"cannot mark the action executed: {e.strerror}"
        os.close(fd)
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return None

    # -- who sees what -----------------------------------------------------------------------
    @staticmethod
    def may_see(principal: Principal | None, rec: ActionRecord) -> bool:
        """admin and approver see every action; a user its own (None: the gate itself)."""
        return principal is None or principal.sees_all or principal.name == rec.requester

    # -- actions ---------------------------------------------------------------------------
    def _check_policy(self, parsed: ParsedAction) -> None:
        """Code naming an execution policy that does not exist is refused at once (422),
        rather than waiting for an approval it could never use."""
        from closedpaw.errors import PolicyError
        from closedpaw.gate.actions import SandboxSessionParams

        p = parsed.action.parameters if parsed.action is not None else None
        policy = (p.policy if isinstance(p, CodeExecutionParams) else
                  p.policy if isinstance(p, SandboxSessionParams) and p.policy else None)
        if policy is not None:
            try:
                self.sandbox_manager().policies().get(policy)
            except PolicyError as e:
                raise InvalidRequest(f"parameters.policy: {e}") from None

    def _skill_decision(self, parsed: ParsedAction, min_level: RiskLevel | None,
                        why: str | None = None) -> Decision | None:
        """A skill run's level derives from what the skill declared (the skills service
        says); a request that could never run (unknown skill, arguments off its schema, an
        install that does not show what the package declares) is refused at once."""
        from closedpaw.gate.actions import SkillExecutionParams

        p = parsed.action.parameters if parsed.action is not None else None
        if not isinstance(p, SkillExecutionParams) or self.context.skills is None:
            return None
        try:
            level, reason = self.context.skills.check_request(p.skill, dict(p.arguments),
                                                              p.install)
        except ClosedPawError as e:
            raise InvalidRequest(f"parameters: {e}") from None
        return raise_to(Decision(RiskLevel(level), reason), min_level, why)

    def submit(self, principal: Principal, req: ActionRequest, *,
               via: str | None = None,
               note: tuple[AuditEvent, dict[str, Any]] | None = None) -> ActionRecord:
        """Classify, record and (low/medium) schedule ``req`` for ``principal``.

        ``via``: the front door it came through (e.g. ``mcp:exec``), recorded in the
        ``action.submitted`` audit entry. ``note``: one more audit entry about this action,
        ``(event, details)``, written with the submission in the same durable write, so it is
        on record before the action can run (the assistant's tool call: which conversation
        and model asked for it); its details get the action's ``params_sha256``."""
        parsed = parse_action(req.action_type, req.parameters)
        self._check_policy(parsed)
        decision = self._skill_decision(parsed, req.min_level, req.min_level_reason) or \
            self.rules.classify(parsed, req.min_level, req.min_level_reason)
        floor = self.executors.floor(self.context, parsed.action_type, parsed.action.parameters
                                     if parsed.action is not None else None, principal.name)
        if floor is not None and floor[0].rank >= decision.level.rank:
            decision = Decision(floor[0], f"{floor[1]} ({decision.reason})")
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
        row.via = via[:64] if via else None
        row.runner = self.instance_id if parsed.action_type in PROCESS_BOUND else None
        row.params_mac = self._params_mac(row.id, row.security_level, row.requester,
                                          row.parameters, row.via)
        if not needs:
            row.approved_sha256 = row.params_sha256
            row.approval_mac = self._approval_mac(row.id, row.params_sha256,
                                                  f"rule:{decision.level}")
        g = self.settings.gate
        # a rule-approved action with a free execution slot starts in this very write: its
        # `executing` entry goes with the submission's (one durable write and one commit fewer
        # than a separate start); with none free it waits in its requester's queue, approved
        claimed = not needs and self._claim(principal.name)
        if claimed:
            row.status = str(ActionStatus.EXECUTING)
        try:
            with self.store.connection() as c:
                n, held = self.store.held_by(c, principal.name, [
                    ActionStatus.PENDING, ActionStatus.APPROVED, ActionStatus.EXECUTING])
                if n >= g.max_pending_per_principal:
                    raise QuotaExceeded(
                        f"{principal.name} has {n} actions waiting (pending, approved or "
                        f"executing), the most allowed (max_pending_per_principal); decide or "
                        "wait for some first")
                if held + len(row.parameters) > g.max_pending_bytes_per_principal:
                    raise QuotaExceeded(
                        f"{principal.name}'s waiting actions would hold "
                        f"{held + len(row.parameters)} bytes of parameters, over "
                        f"max_pending_bytes_per_principal ({g.max_pending_bytes_per_principal})")
                rec = self.store.insert_action(c, row)
                entries: list[tuple[AuditEvent, str, str | None, dict[str, Any] | None]] = [
                    (AuditEvent.ACTION_SUBMITTED, principal.name, rec.id, {
                        "action_type": rec.action_type, "params_sha256": rec.params_sha256,
                        "security_level": str(rec.security_level), "reason": rec.level_reason,
                        "min_level": None if req.min_level is None else str(req.min_level),
                        "requires_approval": needs, "problem": parsed.problem,
                        **({"via": via} if via else {})})]
                if not needs:  # approved by the rule in the same step: one durable write
                    entries.append((AuditEvent.ACTION_APPROVED, SYSTEM.name, rec.id, {
                        "by": "rule", "security_level": str(rec.security_level),
                        "params_sha256": rec.params_sha256}))
                if note is not None:
                    entries.append((note[0], principal.name, rec.id,
                                    {**note[1], "params_sha256": rec.params_sha256}))
                if claimed:
                    entries.append(self._entry(ActionStatus.EXECUTING, SYSTEM, rec))
                self.audit.append_many(entries)
        except BaseException:
            if claimed:
                self._done(principal.name)
            raise
        if claimed:
            with self._lock:
                self._inflight.add(rec.id)
            self._publish(rec.model_copy(update={"status": ActionStatus.APPROVED}))
            self._publish(rec)
            self._submit(rec.id, principal.name, rec)
        else:
            self._publish(rec)
            if not needs:
                self._schedule(rec.id, rec.requester)
        return rec

    def get(self, action_id: str, principal: Principal | None = None) -> ActionRecord:
        """The action; a principal that may not see it is told it does not exist."""
        self._check_id(action_id)
        rec = self.store.get(action_id)
        if rec is None or not self.may_see(principal, rec):
            raise ActionNotFound(f"no action {action_id}")
        if rec.status is ActionStatus.PENDING and rec.expires_at is not None \
                and rec.expires_at <= time.time():
            self.expire_due()
            rec = self.store.get(action_id) or rec
        return rec

    def list_actions(self, *, status: list[ActionStatus] | None = None, limit: int = 100,
             offset: int = 0, principal: Principal | None = None) -> list[ActionRecord]:
        self.expire_due()
        mine = principal.name if principal is not None and not principal.sees_all else None
        return self.store.list_actions(status=status, limit=limit, offset=offset,
                                       requester=mine, max_bytes=LIST_MAX_BYTES)

    def pending(self, principal: Principal | None = None, *, limit: int = 1000
                ) -> list[ActionRecord]:
        return self.list_actions(status=[ActionStatus.PENDING], limit=limit,
                                 principal=principal)

    def _decider_check(self, principal: Principal, rec: ActionRecord, verb: str) -> None:
        """Deciding on another principal's action needs admin or approver."""
        if principal.name != rec.requester and not principal.sees_all:
            self.audit.append(AuditEvent.PERMISSION_DENIED, principal=principal.name,
                              action_id=rec.id, details={"verb": verb})
            raise PermissionDenied(f"{verb} another principal's action needs the admin or "
                                   "approver role")

    def approve(self, principal: Principal, action_id: str, params_sha256: str) -> ActionRecord:
        rec = self.get(action_id, principal)
        self._decider_check(principal, rec, "approving")

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
        if on_host(rec) and not principal.sees_all:
            raise refuse("role", f"a {rec.action_type} acts on the host with the server's "
                         "privileges (root): it needs an approval by an approver or admin, "
                         "never the requesting user's own")
        if self.settings.gate.require_distinct_approver and principal.name == rec.requester:
            raise refuse("self_approval", "the approver must be another principal than the "
                         "requester (require_distinct_approver is on)")
        if rec.via and rec.via.startswith("mcp") and principal.name == rec.requester:
            # an agent holding a token must not approve what it asked for itself, through
            # the API or otherwise: a human (another principal) decides
            raise refuse("self_approval", "an action an MCP client submitted needs the "
                         "approval of another principal (an approver or admin)")
        if hmac.compare_digest(self._params_mac(rec.id, str(rec.security_level), rec.requester,
                                                rec.canonical, rec.via),
                               rec.params_mac or "") is False:
            raise refuse("integrity", "the stored action does not carry the gate's MAC (the "
                         "database was changed behind the gate); it cannot be approved")
        out = self._move(action_id, [ActionStatus.PENDING], ActionStatus.APPROVED, principal,
                         where_unexpired=time.time(), where_sha256=rec.params_sha256,
                         decided_by=principal.name, decided_at=time.time(),
                         approved_sha256=rec.params_sha256,
                         approval_mac=self._approval_mac(rec.id, rec.params_sha256,
                                                         principal.name))
        if out is None:
            now = self.get(action_id)
            if now.status is ActionStatus.EXPIRED:
                raise refuse("expired", f"action {action_id} expired at its TTL")
            raise ActionStateError(f"action {action_id} is {now.status}, not pending")
        if out.runner in (None, self.instance_id):
            self._schedule(action_id, out.requester)
        # else: approved here for another process (a `closedpaw mcp` holding the session),
        # which runs it when it sees the approval (:meth:`adopt`)
        return out

    def adopt(self, action_id: str) -> bool:
        """Run ``action_id`` here if it was approved elsewhere (another process sharing the
        database) and is marked to run in this gate; True when it was scheduled. Running it
        starts with the compare-and-set approved -> executing, so it runs at most once
        whoever else tries."""
        rec = self.store.get(action_id)
        if rec is None or rec.status is not ActionStatus.APPROVED \
                or rec.runner != self.instance_id:
            return False
        with self._lock:
            if action_id in self._adopted:
                return False
            if len(self._adopted) > 10_000:   # only a double schedule is kept off by it
                self._adopted.clear()
            self._adopted.add(action_id)
        self._schedule(action_id, rec.requester)
        return True

    def reject(self, principal: Principal, action_id: str, reason: str = "") -> ActionRecord:
        rec = self.get(action_id, principal)
        self._decider_check(principal, rec, "rejecting")
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
    def _claim(self, requester: str) -> bool:
        """Take one of ``requester``'s execution slots if one is free (:meth:`_done` gives
        it back)."""
        with self._lock:
            if self._closed or self._running.get(requester, 0) >= self.max_running:
                return False
            self._running[requester] = self._running.get(requester, 0) + 1
            return True

    def _settle(self, action_id: str) -> None:
        """A job of ``action_id`` is over: if no end of it was published (it was not in the
        expected state, or cannot be recorded), its waiters read it instead."""
        with self._lock:
            if action_id not in self._inflight:
                return
            self._inflight.discard(action_id)
            waiters = self._waiters.pop(action_id, ())
        for done, _box in waiters:
            done.set()

    def _schedule(self, action_id: str, requester: str) -> None:
        """Run on the pool, at most ``max_running`` per requester at once: the rest wait in
        the requester's own queue, so one principal never holds every worker."""
        with self._lock:
            self._inflight.add(action_id)
            if self._running.get(requester, 0) >= self.max_running:
                self._queued.setdefault(requester, deque()).append(action_id)
                return
            self._running[requester] = self._running.get(requester, 0) + 1
        self._submit(action_id, requester)

    def _submit(self, action_id: str, requester: str,
                started: ActionRecord | None = None) -> None:
        def job() -> None:
            try:
                self._run(action_id, started)
            finally:
                self._settle(action_id)
                self._done(requester)
        try:
            self._pool.submit(job)
        except RuntimeError:  # shutting down: leave it approved; start() will interrupt it
            log.warning("not executing %s: shutting down", action_id)
            self._settle(action_id)
            with self._lock:
                self._running[requester] -= 1

    def _done(self, requester: str) -> None:
        with self._lock:
            q = self._queued.get(requester)
            nxt = q.popleft() if q else None
            if q is not None and not q:
                del self._queued[requester]
            if nxt is None:
                self._running[requester] -= 1
                if not self._running[requester]:
                    del self._running[requester]
        if nxt is not None:
            self._submit(nxt, requester)

    def queue_status(self) -> dict[str, Any]:
        with self._lock:
            return {"workers": self.workers, "max_per_principal": self.max_running,
                    "running": dict(self._running),
                    "queued": {k: len(v) for k, v in self._queued.items()}}

    def run_now(self, action_id: str) -> ActionRecord:
        """Execute an approved action on this thread (the pool uses this too)."""
        self._run(action_id)
        return self.get(action_id)

    def _run(self, action_id: str, started: ActionRecord | None = None) -> None:
        """Start (approved -> executing) and execute ``action_id``; ``started``: its record
        when its submission started it already."""
        rec = started
        with self._lock:
            stopping = self._stopping
        if stopping:   # the process is stopping: a queued one stays approved (start() ends it)
            if rec is not None:   # started in its submission's write: it ends interrupted
                self._finish(rec)
            return
        if rec is None:
            try:
                rec = self._move(action_id, [ActionStatus.APPROVED], ActionStatus.EXECUTING,
                                 SYSTEM)
            except ClosedPawError:
                log.exception("cannot start %s", action_id)
                return
            if rec is None:
                return
        bad = self._verify_macs(rec)   # never run what the gate did not approve
        parsed = parse_action(rec.action_type, rec.parameters)
        if bad is None and parsed.params_sha256 != rec.params_sha256:
            bad = "stored parameters no longer match the approved hash"
        if bad is None:
            bad = self._use_once(rec.id)
        if bad is not None:
            self.audit.append(AuditEvent.APPROVAL_REFUSED, principal=SYSTEM.name,
                              action_id=rec.id, details={"reason": "integrity", "why": bad})
            self._finish(rec, error=bad)
            return
        reach: frozenset[str] | None = frozenset()
        try:
            if parsed.action is None:
                raise GateError(f"cannot execute: {parsed.problem}")
            reach = self.executors.reach(self.context, parsed.action_type,
                                         parsed.action.parameters)
            run = self.executors.executor(parsed.action_type)
            result = run(self.context, rec, parsed.action.parameters)
        except ClosedPawError as e:
            self._finish(rec, error=str(e), reach=reach)
        except Exception as e:  # an unexpected bug fails the action, never the server
            log.exception("executing %s", action_id)
            self._finish(rec, error=f"internal error: {type(e).__name__}")
        else:
            self._finish(rec, result=result, reach=reach)

    def _finish(self, rec: ActionRecord, *, result: dict[str, Any] | None = None,
                error: str | None = None, reach: frozenset[str] | None = frozenset()) -> None:
        # what an action produced never carries a value of a secret that reached it: the ones
        # it was handed (``reach``; None: any, a host read), the ones this process holds.
        # Only those: the requester wrote the rest (code printing guesses, a path in an error),
        # and redacting every stored value there would tell them which guess is a secret
        if result is not None:
            red = self.vault.redactor if reach is None else self.vault.scoped(reach)
            result = red.redact_obj(result)
        if error is not None:
            error = self.vault.scoped(reach or ()).redact(error)
        to = ActionStatus.FAILED if error is not None else ActionStatus.COMPLETED
        with self._lock:
            cut = self._stopping
        if cut:   # its sandbox was stopped under it: what it returned is not its result
            to, result = ActionStatus.INTERRUPTED, None
            error = INTERRUPTED
        details: dict[str, Any] = {"error": error} if error else {}
        if result is not None and "exit_code" in result:
            details.update(exit_code=result["exit_code"], sandbox_id=result.get("sandbox_id"),
                           isolation=result.get("isolation", {}).get("runtime"))
        try:
            self._move(rec.id, [ActionStatus.EXECUTING], to, SYSTEM, details=details,
                       before=self.context.notes.take(rec.id), result=result, error=error)
        except ClosedPawError:
            log.exception("cannot record the end of %s; it stays executing and will be "
                          "marked interrupted at the next start", rec.id)

    # -- helpers -------------------------------------------------------------------------
    def _move(self, action_id: str, frm: list[ActionStatus], to: ActionStatus,
              principal: Principal, *, details: dict[str, Any] | None = None,
              where_unexpired: float | None = None, where_sha256: str | None = None,
              before: Sequence[tuple[AuditEvent, str, dict[str, Any]]] = (),
              **values: Any) -> ActionRecord | None:
        """Compare-and-set the action's status, audited in the same transaction; ``before``:
        entries about the action (an executor's notes) written ahead of the transition's own
        in one durable write."""
        def audit(rec: ActionRecord) -> None:
            self.audit.append_many([*((ev, who, action_id, d) for ev, who, d in before),
                                    self._entry(to, principal, rec, details)])
        rec = self.store.transition(action_id, frm, to, audit=audit,
                                    where_unexpired=where_unexpired,
                                    where_sha256=where_sha256, **values)
        if rec is not None:
            self._publish(rec)
        return rec

    @staticmethod
    def _entry(to: ActionStatus, principal: Principal, rec: ActionRecord,
               details: dict[str, Any] | None = None
               ) -> tuple[AuditEvent, str, str, dict[str, Any]]:
        """The audit entry of ``rec``'s move to ``to`` by ``principal``."""
        return (_EVENT_OF[to], principal.name, rec.id,
                {"to": str(to), "params_sha256": rec.params_sha256,
                 "security_level": str(rec.security_level), **(details or {})})

    @staticmethod
    def _check_id(action_id: str) -> None:
        try:
            uuid.UUID(action_id)
        except (ValueError, TypeError, AttributeError):
            raise ActionNotFound(f"no action {str(action_id)[:80]!r}") from None

    def status(self, principal: Principal | None = None) -> dict[str, Any]:
        """Counts, the audit's size, the database and the execution queue; for a principal
        that sees only its own actions (a ``user``), its own counts and queue entries and
        nothing of the server's (an outsider's finding: a user saw who was running what, how
        many actions every principal had, and where the database is)."""
        if principal is None or principal.sees_all:
            counts = self.store.counts()
            return {"actions": counts, "pending": counts.get("pending", 0),
                    "audit_entries": self.audit.last_seq(), "database": self.store.safe_url,
                    "queue": self.queue_status()}
        counts = self.store.counts(principal.name)
        queue = self.queue_status()
        for k in ("running", "queued"):
            queue[k] = {n: v for n, v in queue[k].items() if n == principal.name}
        return {"actions": counts, "pending": counts.get("pending", 0), "queue": queue}

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
