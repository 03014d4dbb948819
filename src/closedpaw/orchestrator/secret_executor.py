"""The ``secret_read`` executor and the gate's vault (to move to gate/executors/secret.py).

An approved ``secret_read`` never puts the value in the action's result (which is stored in
the database and shown to anyone who may read the action): the result names the secret,
its level and the version that was read; the requester then fetches the value once with
``GET /api/actions/{id}/secret`` (recorded in ``vault_reads``; a second fetch is refused).

Who may read what: the requester's role must reach the stored level
(:func:`closedpaw.vault.may_read`), and a read of an ``elevated`` or ``admin`` secret must
have been approved by an admin (never by a rule). The level is the stored one: a request
cannot name a level.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from closedpaw.errors import (
    ActionStateError,
    ClosedPawError,
    GateError,
    PermissionDenied,
)
from closedpaw.vault import Vault, may_read, needs_admin_approval

if TYPE_CHECKING:
    from closedpaw.orchestrator.actions import ParsedAction, SecretReadParams
    from closedpaw.orchestrator.engine import Orchestrator
    from closedpaw.orchestrator.rules import Decision
    from closedpaw.orchestrator.store import ActionRecord, Store

__all__ = ["deliver", "open_vault", "raise_for_level", "role_of", "secret_read"]

log = logging.getLogger("closedpaw.vault")


def open_vault(store: Store) -> Vault:
    """The vault on the gate's own database. A key-file vault is unlocked at once; a
    passphrase vault stays locked until ``POST /api/vault/unlock``."""
    v = Vault(engine=store.engine)
    try:
        st = v.status()
        if st["initialized"] and st["kdf"] == "keyfile":
            v.unlock()
    except ClosedPawError as e:   # stays locked: secret use fails with a clear error
        log.warning("the vault stays locked: %s", e)
    return v


def role_of(orch: Orchestrator, name: str | None) -> str:
    """The role of an active principal, '' when there is none of that name."""
    if not name:
        return ""
    for n, role, _created, disabled in orch.store.principals():
        if n == name and not disabled:
            return role
    return ""


def raise_for_level(orch: Orchestrator, parsed: ParsedAction, d: Decision) -> Decision:
    """At submit: a read of a stored ``elevated`` or ``admin`` secret is critical (only an
    admin approves it), whatever the rules said; the stored level decides, not the request."""
    from closedpaw.orchestrator.actions import RiskLevel, SecretReadParams
    from closedpaw.orchestrator.rules import Decision

    p = parsed.action.parameters if parsed.action is not None else None
    if not isinstance(p, SecretReadParams) or d.level is RiskLevel.CRITICAL:
        return d
    try:
        level = orch.vault().info(p.name).level
    except ClosedPawError:        # unknown name or no vault: it fails when it runs
        return d
    if not needs_admin_approval(level):
        return d
    return Decision(RiskLevel.CRITICAL, f"reads a secret stored at level {level}: an admin "
                    f"approves it ({d.reason})")


def secret_read(orch: Orchestrator, rec: ActionRecord, p: SecretReadParams) -> dict[str, Any]:
    vault = orch.vault()
    info = vault.info(p.name)
    requester = role_of(orch, rec.requester)
    if not may_read(requester, info.level):
        raise PermissionDenied(f"secret {p.name!r} is {info.level}; {rec.requester!r} "
                               f"(role {requester or 'none'}) may not read it")
    if needs_admin_approval(info.level):
        approver = "" if (rec.decided_by or "").startswith("rule:") else role_of(
            orch, rec.decided_by)
        if approver != "admin":
            raise GateError(f"secret {p.name!r} is {info.level}: its read needs an approval "
                            "by an admin; submit it again")
    # decrypt now: a locked vault or a tampered row fails the action here, not at delivery
    _value, row = vault.get_versioned(p.name, role=requester)
    return {"name": info.name, "level": str(info.level), "version": row.version,
            "delivery": f"GET /api/actions/{rec.id}/secret (once, by {rec.requester})"}


def deliver(orch: Orchestrator, rec: ActionRecord, who: str) -> dict[str, Any]:
    """The value read by a completed ``secret_read``, for its requester, once."""
    from closedpaw.audit import AuditEvent
    from closedpaw.orchestrator.actions import ActionStatus

    if rec.action_type != "secret_read":
        raise ActionStateError(f"action {rec.id} is a {rec.action_type}, not a secret_read: it "
                               "has no value to fetch")
    if who != rec.requester:
        raise PermissionDenied("only the principal that requested this secret_read may "
                               "fetch its value")
    if rec.status is not ActionStatus.COMPLETED or not rec.result:
        raise ActionStateError(f"action {rec.id} is {rec.status}; a value is delivered only "
                               "after it was approved and completed")
    name, version = str(rec.result["name"]), int(rec.result["version"])
    value = orch.vault().deliver(rec.id, name, version, to=who, role=role_of(orch, who))
    orch.audit.append(AuditEvent.SECRET_DELIVERED, principal=who, action_id=rec.id,
                      details={"name": name, "version": version})
    return {"action_id": rec.id, "name": name, "version": version, "value": value}
