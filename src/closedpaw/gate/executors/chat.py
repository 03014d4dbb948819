"""``chat``: one assistant turn, run by the chat service the composition root puts in the
execution context (``ctx.providers``). Without one the action fails with a clear message: it
never runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from closedpaw.errors import NotConfigured
from closedpaw.gate.actions import ChatParams
from closedpaw.gate.executors.registry import handed_nothing

if TYPE_CHECKING:
    from pydantic import BaseModel

    from closedpaw.gate.executors.context import ExecutionContext
    from closedpaw.gate.store import ActionRecord

__all__ = ["ACTION_TYPES", "REACH", "ChatService", "execute_chat"]


@runtime_checkable
class ChatService(Protocol):
    """What the ``chat`` executor needs (the assistant implements it): run one turn for the
    action's requester and return the turn's JSON result."""

    def handle_chat_action(self, requester: str, params: dict[str, Any]) -> dict[str, Any]:
        ...


def execute_chat(ctx: ExecutionContext, rec: ActionRecord, params: BaseModel) -> dict[str, Any]:
    assert isinstance(params, ChatParams)
    if ctx.providers is None:
        raise NotConfigured("cannot execute chat: no LLM provider is configured")
    if not isinstance(ctx.providers, ChatService):
        raise NotConfigured(f"cannot execute chat: {type(ctx.providers).__name__} "
                            "does not run chat turns")
    return ctx.providers.handle_chat_action(rec.requester,
                                            params.model_dump(exclude_none=True))


ACTION_TYPES = {"chat": execute_chat}


REACH = {"chat": handed_nothing}   # the model sees no value: tool results reach it redacted
