"""Channels (layer L5): chat platforms as one more way into a conversation. ``base`` is the
adapter interface (identity, inbound message, approval payload and card, splitting, 429
backoff); ``core`` joins an adapter to the assistant and the gate in-process (allowlist and
pairing, screening, approvals); one module per platform on its official library, imported only
when a channel of that type is configured."""

from closedpaw.channels.base import (
    Adapter,
    Allowlist,
    ApprovalCard,
    ApprovalPayload,
    ButtonPress,
    Handler,
    Identity,
    Inbound,
    InboundFile,
    RateLimited,
    split_message,
    with_backoff,
)

__all__ = ["Adapter", "Allowlist", "ApprovalCard", "ApprovalPayload", "ButtonPress", "Handler",
           "Identity", "Inbound", "InboundFile", "RateLimited", "split_message", "with_backoff"]
