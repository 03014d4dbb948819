"""``code_execution``: only in a sandbox without a network, under a named execution policy.

It takes a warm sandbox of the policy from the context's pools (one pool per policy, made on
first use; the sandbox runs this one action and is deleted, the pool refills) so an action does
not wait for a container to start; with the ``code_pool`` setting off it starts a cold one."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from closedpaw.audit.events import AuditEvent
from closedpaw.errors import GateError
from closedpaw.gate.actions import CodeExecutionParams

if TYPE_CHECKING:
    from pydantic import BaseModel

    from closedpaw.gate.executors.context import ExecutionContext
    from closedpaw.gate.store import ActionRecord

__all__ = ["ACTION_TYPES", "run_code"]


def run_code(ctx: ExecutionContext, rec: ActionRecord, params: BaseModel) -> dict[str, Any]:
    assert isinstance(params, CodeExecutionParams)
    mgr = ctx.sandboxes()
    base = mgr.spec_for(params.policy)  # PolicyError (the action fails) for an unknown name
    if base.limits.network_enabled:
        raise GateError(f"policy {params.policy!r} enables the network; code_execution runs "
                        "only in sandboxes without one")
    pool = ctx.pools.get(mgr, params.policy) if ctx.settings.pools.code_pool else None
    if pool is not None:
        # a warm sandbox of the policy, used for this action only and deleted
        with pool.acquire() as sb:
            result = sb.exec(params.command(), timeout_s=params.timeout_s)
    else:
        spec = replace(base, limits=replace(base.limits, timeout_s=params.timeout_s))
        result = mgr.run(params.command(), spec)
    out = result.to_dict()
    ctx.audit.append(AuditEvent.SANDBOX_RUN, principal="system", action_id=rec.id,
                     details={"sandbox_id": result.sandbox_id, "exit_code": result.exit_code,
                              "timed_out": result.timed_out, "oom_killed": result.oom_killed,
                              "duration_ms": out["duration_ms"],
                              "isolation": out["isolation"], "warm": pool is not None})
    return out


ACTION_TYPES = {"code_execution": run_code}
