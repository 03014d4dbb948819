"""``channel_message``: a message through a configured chat channel, delivered by the channel
service the composition root puts in the execution context (``ctx.channels``). Its level: the
rules say medium; :func:`raise_level` makes it high unless the recipient is the requester's own
identity on that channel (a message to anyone else speaks for the requester to a third party).
Without a channel service it is high, and fails when run: it never goes anywhere."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from closedpaw.errors import NotConfigured
from closedpaw.gate.actions import ChannelMessageParams, RiskLevel
from closedpaw.gate.executors.registry import handed_nothing

if TYPE_CHECKING:
    from pydantic import BaseModel

    from closedpaw.gate.executors.context import ExecutionContext
    from closedpaw.gate.store import ActionRecord

__all__ = ["ACTION_TYPES", "REACH", "REQUESTER_RAISERS", "ChannelDelivery", "deliver",
           "raise_level"]


@runtime_checkable
class ChannelDelivery(Protocol):
    """What the executor needs (``ChannelService`` implements it)."""

    def owns(self, requester: str, channel: str, recipient: str) -> bool:
        """True when ``recipient`` on ``channel`` is ``requester``'s own chat identity."""
        ...

    def deliver(self, requester: str, channel: str, recipient: str, text: str
                ) -> dict[str, Any]:
        ...


def raise_level(ctx: ExecutionContext, params: BaseModel, requester: str
                ) -> tuple[RiskLevel, str] | None:
    """High unless ``recipient`` is the requester's own identity on that channel."""
    assert isinstance(params, ChannelMessageParams)
    svc = ctx.channels
    if not isinstance(svc, ChannelDelivery):
        return RiskLevel.HIGH, "no chat channel service to check the recipient"
    if not requester or not svc.owns(requester, params.channel, params.recipient):
        return RiskLevel.HIGH, ("a chat message to someone other than the requester's own "
                                "chat identity")
    return None


def deliver(ctx: ExecutionContext, rec: ActionRecord, params: BaseModel) -> dict[str, Any]:
    assert isinstance(params, ChannelMessageParams)
    svc = ctx.channels
    if not isinstance(svc, ChannelDelivery):
        raise NotConfigured("cannot send a chat message: no chat channel is running")
    if rec.security_level.rank < RiskLevel.HIGH.rank and not svc.owns(
            rec.requester, params.channel, params.recipient):
        # classified before the recipient's binding changed: never sent at the lower level
        raise NotConfigured("the recipient is no longer the requester's own chat identity; "
                            "submit the message again (it needs an approval now)")
    return svc.deliver(rec.requester, params.channel, params.recipient, params.text)


ACTION_TYPES = {"channel_message": deliver}
REQUESTER_RAISERS = {"channel_message": raise_level}


REACH = {"channel_message": handed_nothing}
