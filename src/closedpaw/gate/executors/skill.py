"""``skill_execution``: install a skill (exactly the package the approver saw) or run one
(an installed skill in a sandbox with exactly its declared mounts and secrets; the built-in
``filesystem`` skill on the host beneath its roots, every operation audited; ``code`` in a
sandbox). Without a skills service in the context the action fails: it never runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from closedpaw.audit.events import AuditEvent
from closedpaw.errors import ClosedPawError, NotConfigured
from closedpaw.gate.actions import SkillExecutionParams

if TYPE_CHECKING:
    from pydantic import BaseModel

    from closedpaw.gate.executors.context import ExecutionContext
    from closedpaw.gate.store import ActionRecord

__all__ = ["ACTION_TYPES", "REACH", "execute_skill", "skill_reach"]


def execute_skill(ctx: ExecutionContext, rec: ActionRecord, params: BaseModel) -> dict[str, Any]:
    assert isinstance(params, SkillExecutionParams)
    skills = ctx.skills
    if skills is None:
        raise NotConfigured("cannot execute skill_execution: no skill registry is configured")
    if params.install:
        out = skills.install(params.skill, dict(params.arguments))
        ctx.audit.append(AuditEvent.SKILL_INSTALLED, principal=rec.requester, action_id=rec.id,
                         details={"skill": params.skill,
                                  "sha256": out["installed"]["sha256"],
                                  "capabilities": out["installed"]["capabilities"]})
        return out

    def fs_audit(op: str, details: dict[str, Any]) -> None:
        ctx.audit.append(AuditEvent.SKILL_FILE, principal=rec.requester, action_id=rec.id,
                         details={"op": op, **details})

    secrets = ctx.secrets
    if secrets is None and ctx.vault is not None:
        # the requester's role reads: a skill never gets a secret its requester could not
        secrets = ctx.vault.resolver(ctx.role_of(rec.requester))
    out = skills.run(params.skill, dict(params.arguments), secrets=secrets,
                     fs_audit=fs_audit)
    if "exit_code" in out:
        ctx.audit.append(AuditEvent.SANDBOX_RUN, principal="system", action_id=rec.id,
                         details={"skill": params.skill, "sandbox_id": out.get("sandbox_id"),
                                  "exit_code": out["exit_code"],
                                  "timed_out": out.get("timed_out"),
                                  "isolation": out.get("isolation")})
    return out


ACTION_TYPES = {"skill_execution": execute_skill}


def skill_reach(ctx: ExecutionContext, params: BaseModel) -> frozenset[str] | None:
    """What a skill's result may carry: the secrets it declares; anything for the built-in
    filesystem skill, which reads host files beneath the roots in the server's process (its
    user cannot write there: a write needs an approver). An installed skill's declared host
    paths are not "anything": it was installed to show them to its user, and it echoes
    arguments its user wrote, which a redactor of every value would turn into an oracle."""
    if not isinstance(params, SkillExecutionParams) or params.install:
        return frozenset()
    if params.skill == "filesystem":
        return None
    if params.skill == "code" or ctx.skills is None:
        return frozenset()
    try:
        m = ctx.skills.store.get(params.skill).manifest
    except ClosedPawError:   # not installed: it does not run
        return frozenset()
    return frozenset(m.secrets)


REACH = {"skill_execution": skill_reach}
