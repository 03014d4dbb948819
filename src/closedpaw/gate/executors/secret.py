"""``secret_read``: needs a vault in the execution context. Until one is configured
(``ctx.vault is None``) the action fails with a clear message: it never runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from closedpaw.errors import NotConfigured
from closedpaw.gate.actions import SecretReadParams

if TYPE_CHECKING:
    from pydantic import BaseModel

    from closedpaw.gate.executors.context import ExecutionContext
    from closedpaw.gate.store import ActionRecord

__all__ = ["ACTION_TYPES", "execute_secret"]


def execute_secret(ctx: ExecutionContext, rec: ActionRecord, params: BaseModel) -> dict[str, Any]:
    assert isinstance(params, SecretReadParams)
    if ctx.vault is None:
        raise NotConfigured("cannot execute secret_read: no vault is configured")
    raise NotConfigured(f"cannot execute secret_read: {type(ctx.vault).__name__} "
                             "does not support it yet")


ACTION_TYPES = {"secret_read": execute_secret}
