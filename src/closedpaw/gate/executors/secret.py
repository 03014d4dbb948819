"""``secret_read``: read one secret of the vault in the execution context.

An approved ``secret_read`` never puts the value in the action's result (stored in the
database and shown to anyone who may read the action): the result names the secret, its level
and the version that was read; the requester then fetches the value once with
``GET /api/actions/{id}/secret`` (:func:`deliver`; recorded in ``vault_reads``, a second fetch
is refused).

Who may read what: the requester's role must reach the stored level
(:func:`closedpaw.vault.may_read`), and a read of an ``elevated`` or ``admin`` secret is
critical at submit (:func:`raise_for_level`) and must have been approved by an admin, never
by a rule. The level is the stored one: a request cannot name a level.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from closedpaw.audit import AuditEvent
from closedpaw.errors import (
    ActionStateError,
    ClosedPawError,
    GateError,
    NotConfigured,
    PermissionDenied,
    VaultNotInitialized,
)
from closedpaw.gate.actions import ActionStatus, RiskLevel, SecretReadParams
from closedpaw.vault import Vault, may_read, needs_admin_approval

if TYPE_CHECKING:
    from pydantic import BaseModel

    from closedpaw.gate.executors.context import ExecutionContext
    from closedpaw.gate.store import ActionRecord
    from closedpaw.settings import Settings

__all__ = ["ACTION_TYPES", "RAISERS", "deliver", "execute_secret", "open_vault",
           "raise_for_level"]

log = logging.getLogger("closedpaw.vault")


def open_vault(vault: Vault, settings: Settings) -> None:
    """At start: unlock a key-file vault (``vault.vault_key_file`` or the recorded path)
    unless ``vault.vault_unlock_at_start`` is off; a passphrase vault stays locked until
    ``POST /api/vault/unlock``. A failure leaves it locked (secret use then fails clearly)."""
    try:
        st = vault.status()
        if st["initialized"] and st["kdf"] == "keyfile" and settings.vault.vault_unlock_at_start:
            vault.unlock(key_file=settings.vault.vault_key_file)
    except ClosedPawError as e:
        log.warning("the vault stays locked: %s", e)


def _vault(ctx: ExecutionContext) -> Vault:
    if ctx.vault is None:
        raise NotConfigured("cannot execute secret_read: no vault is configured")
    if not ctx.vault.initialized:
        raise VaultNotInitialized("cannot execute secret_read: no vault is initialized "
                                  "(run 'closedpaw vault init')")
    return ctx.vault


def raise_for_level(ctx: ExecutionContext, params: BaseModel) -> tuple[RiskLevel, str] | None:
    """At submit: a read of a stored ``elevated`` or ``admin`` secret is critical (only an
    admin approves it), whatever the rules said; the stored level decides, not the request."""
    if not isinstance(params, SecretReadParams) or ctx.vault is None:
        return None
    try:
        level = ctx.vault.info(params.name).level
    except ClosedPawError:        # unknown name: it fails when it runs
        return None
    if not needs_admin_approval(level):
        return None
    return RiskLevel.CRITICAL, f"reads a secret stored at level {level}: an admin approves it"


def execute_secret(ctx: ExecutionContext, rec: ActionRecord, params: BaseModel
                   ) -> dict[str, Any]:
    assert isinstance(params, SecretReadParams)
    vault = _vault(ctx)
    info = vault.info(params.name)
    requester = ctx.role_of(rec.requester)
    if not may_read(requester, info.level):
        raise PermissionDenied(f"secret {params.name!r} is {info.level}; {rec.requester!r} "
                               f"(role {requester or 'none'}) may not read it")
    if needs_admin_approval(info.level):
        decided = rec.decided_by or ""
        approver = "" if decided.startswith("rule:") else ctx.role_of(decided)
        if approver != "admin":
            raise GateError(f"secret {params.name!r} is {info.level}: its read needs an "
                            "approval by an admin; submit it again")
    # decrypt now: a locked vault or a tampered row fails the action here, not at delivery
    _value, row = vault.get_versioned(params.name, role=requester)
    return {"name": info.name, "level": str(info.level), "version": row.version,
            "delivery": f"GET /api/actions/{rec.id}/secret (once, by {rec.requester})"}


def deliver(ctx: ExecutionContext, rec: ActionRecord, who: str) -> dict[str, Any]:
    """The value read by a completed ``secret_read``, for its requester, once (audited with
    the name and version, never the value)."""
    if rec.action_type != "secret_read":
        raise ActionStateError(f"action {rec.id} is a {rec.action_type}, not a secret_read: "
                               "it has no value to fetch")
    if who != rec.requester:
        raise PermissionDenied("only the principal that requested this secret_read may "
                               "fetch its value")
    if rec.status is not ActionStatus.COMPLETED or not rec.result:
        raise ActionStateError(f"action {rec.id} is {rec.status}; a value is delivered only "
                               "after it was approved and completed")
    name, version = str(rec.result["name"]), int(rec.result["version"])
    value = _vault(ctx).deliver(rec.id, name, version, to=who, role=ctx.role_of(who))
    ctx.audit.append(AuditEvent.SECRET_DELIVERED, principal=who, action_id=rec.id,
                     details={"name": name, "version": version})
    return {"action_id": rec.id, "name": name, "version": version, "value": value}


ACTION_TYPES = {"secret_read": execute_secret}
RAISERS = {"secret_read": raise_for_level}
