"""``code_execution``: only in a sandbox without a network, under a named execution policy.

A policy may hand the sandbox secrets of the vault (``secrets: {ENV_NAME: name}``,
``secret_files: {file: name}`` under ``/run/secrets``, read-only). They are resolved here, at
run time, with the requester's role (its role must reach each stored level; an ``elevated``
or ``admin`` secret also needs an admin's approval). Asking for any secret makes the action
high at submit (critical for an ``elevated`` or ``admin`` one: :func:`raise_for_secrets`), and
the gate redacts their values from the result (the vault's redactor learns each value as it
is decrypted).

Without secrets, it takes a warm sandbox of the policy from the context's pools (one pool per
policy, made on first use; the sandbox runs this one action and is deleted, the pool refills)
so an action does not wait for a container to start; with the ``code_pool`` setting off it
starts a cold one. The pooled sandboxes have their python kernel started too, and python code
runs in it as ``python3 -c`` would (:func:`as_program`): no interpreter start on the action's
path. The sandbox is deleted in the background once the result is in.
"""

from __future__ import annotations

import re
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any

from closedpaw.audit.events import AuditEvent
from closedpaw.errors import ClosedPawError, GateError, NotConfigured, PermissionDenied
from closedpaw.gate.actions import CodeExecutionParams, RiskLevel
from closedpaw.sandbox.result import ExecutionResult
from closedpaw.vault import may_read, needs_admin_approval

if TYPE_CHECKING:
    from pydantic import BaseModel

    from closedpaw.gate.executors.context import ExecutionContext
    from closedpaw.gate.store import ActionRecord
    from closedpaw.sandbox.policy import ExecutionPolicy

__all__ = ["ACTION_TYPES", "RAISERS", "REACH", "as_program", "raise_for_secrets", "run_code",
           "secrets_handed"]


def _resolve_secrets(ctx: ExecutionContext, rec: ActionRecord, pol: ExecutionPolicy
                     ) -> tuple[dict[str, str], dict[str, str]]:
    """(env additions, secret files) with their values, read as the requester."""
    if not pol.secret_names:
        return {}, {}
    if ctx.vault is None:
        raise NotConfigured(f"policy {pol.name!r} asks for secrets but no vault is configured")
    role = ctx.role_of(rec.requester)
    decided = rec.decided_by or ""
    approver = "" if decided.startswith("rule:") else ctx.role_of(decided)
    values: dict[str, str] = {}
    for name in sorted(pol.secret_names):
        level = ctx.vault.info(name).level
        if not may_read(role, level):
            raise PermissionDenied(f"policy {pol.name!r} asks for secret {name!r} ({level}); "
                                   f"{rec.requester!r} (role {role or 'none'}) may not read it")
        if needs_admin_approval(level) and approver != "admin":
            raise GateError(f"policy {pol.name!r} asks for secret {name!r} ({level}): the "
                            "action needs an approval by an admin; submit it again")
        values[name] = ctx.vault.get(name, role=role)
    return ({k: values[v] for k, v in pol.secrets.items()},
            {k: values[v] for k, v in pol.secret_files.items()})


def run_code(ctx: ExecutionContext, rec: ActionRecord, params: BaseModel) -> dict[str, Any]:
    assert isinstance(params, CodeExecutionParams)
    mgr = ctx.sandboxes()
    pol = mgr.policies().get(params.policy)  # PolicyError (the action fails) for an unknown one
    base = pol.spec
    if base.limits.network_enabled:
        raise GateError(f"policy {params.policy!r} enables the network; code_execution runs "
                        "only in sandboxes without one")
    env, files = _resolve_secrets(ctx, rec, pol)
    pool = (ctx.pools.get(mgr, params.policy)
            if ctx.settings.pools.code_pool and not env and not files else None)
    if pool is not None:
        # a warm sandbox of the policy, used for this action only; deleted in the background
        # once the result is in (the action does not wait for the container to stop)
        sb = pool.acquire()
        try:
            if params.language == "python" and sb.agent:
                # its python kernel is running already (the pool warmed it): the code runs
                # as `python3 -c` would, without the interpreter's start
                result = as_program(sb.code.run("python", params.code,
                                                 timeout_s=params.timeout_s))
            else:
                result = sb.exec(params.command(), timeout_s=params.timeout_s)
        finally:
            # after the pool's settle: the action's end is recorded first
            sb.delete_soon(after_s=pool.settle_s)
    else:
        spec = replace(base, limits=replace(base.limits, timeout_s=params.timeout_s),
                       env={**base.env, **env}, secret_files=files)
        result = mgr.run(params.command(), spec)
    out = result.to_dict()
    # written with the action's end, in one durable write
    ctx.notes.add(rec.id, AuditEvent.SANDBOX_RUN, "system", {
        "sandbox_id": result.sandbox_id, "exit_code": result.exit_code,
        "timed_out": result.timed_out, "oom_killed": result.oom_killed,
        "duration_ms": out["duration_ms"], "isolation": out["isolation"],
        "warm": pool is not None, "secrets": sorted(pol.secret_names)})
    return out


def as_program(cell: ExecutionResult) -> ExecutionResult:
    """A python cell's result as ``python3 -c CODE`` reports it: an uncaught exception's
    traceback on stderr and exit 1; ``SystemExit`` its code (a message on stderr and 1, as
    the interpreter does); no value of the last expression."""
    err = getattr(cell, "error", None)
    code, extra = cell.exit_code, ""
    if err is None or cell.timed_out or cell.oom_killed:
        pass   # 0, or 137 for a command the engine or the kernel killed
    elif err.name == "KernelDied":
        # the interpreter ended itself (os._exit, a crash): its own status, as for a process
        m = re.search(r"\((exit status|signal) (\d+)\)", err.message)
        if m is not None:
            n = int(m.group(2))
            code = n & 0xFF if m.group(1) == "exit status" else 128 + n
    elif err.name == "SystemExit":
        msg = err.message
        if msg in ("", "None"):
            code = 0
        elif msg.lstrip("-").isdigit():
            code = int(msg) & 0xFF
        else:
            code, extra = 1, msg + "\n"
    else:
        code, extra = 1, err.traceback if err.traceback.endswith("\n") else \
            err.traceback + "\n"
    plain = {f.name: getattr(cell, f.name) for f in fields(ExecutionResult)}
    if extra:
        data = extra.encode("utf-8", "replace")
        plain.update(stderr=cell.stderr + data,
                     stderr_total_bytes=cell.stderr_total_bytes + len(data))
    plain["exit_code"] = code
    return ExecutionResult(**plain)


def raise_for_secrets(ctx: ExecutionContext, params: BaseModel
                      ) -> tuple[RiskLevel, str] | None:
    """At submit: code under a policy that hands the sandbox secrets is high (critical when
    one of them is stored ``elevated`` or ``admin``)."""
    if not isinstance(params, CodeExecutionParams):
        return None
    try:
        pol = ctx.sandboxes().policies().get(params.policy)
    except ClosedPawError:   # an unknown policy is refused by the gate's own check
        return None
    names = sorted(pol.secret_names)
    if not names:
        return None
    level = RiskLevel.HIGH
    if ctx.vault is not None:
        for name in names:
            try:
                if needs_admin_approval(ctx.vault.info(name).level):
                    level = RiskLevel.CRITICAL
            except ClosedPawError:   # unknown: the run fails; still at least high
                continue
    return level, (f"policy {pol.name!r} hands the sandbox secrets {', '.join(names)}"
                   + (": an admin approves it" if level is RiskLevel.CRITICAL else ""))


ACTION_TYPES = {"code_execution": run_code}
RAISERS = {"code_execution": raise_for_secrets}


def secrets_handed(ctx: ExecutionContext, params: BaseModel) -> frozenset[str] | None:
    """The secrets the sandbox is handed (its policy's): the only values its output is
    redacted of, besides the ones the process holds for itself."""
    if not isinstance(params, CodeExecutionParams):
        return frozenset()
    try:
        return frozenset(ctx.sandboxes().policies().get(params.policy).secret_names)
    except ClosedPawError:   # an unknown policy: it does not run
        return frozenset()


REACH = {"code_execution": secrets_handed}
