"""``chat``: needs an LLM provider in the execution context. Until one is configured
(``ctx.providers is None``) the action fails with a clear message: it never runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from closedpaw.errors import NotConfigured
from closedpaw.gate.actions import ChatParams

if TYPE_CHECKING:
    from pydantic import BaseModel

    from closedpaw.gate.executors.context import ExecutionContext
    from closedpaw.gate.store import ActionRecord

__all__ = ["ACTION_TYPES", "execute_chat"]


def execute_chat(ctx: ExecutionContext, rec: ActionRecord, params: BaseModel) -> dict[str, Any]:
    assert isinstance(params, ChatParams)
    if ctx.providers is None:
        raise NotConfigured("cannot execute chat: no LLM provider is configured")
    raise NotConfigured(f"cannot execute chat: {type(ctx.providers).__name__} "
                             "does not support it yet")


ACTION_TYPES = {"chat": execute_chat}
