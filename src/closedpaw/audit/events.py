"""Typed audit events and the canonical JSON their HMAC is computed over."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["GENESIS_HASH", "AuditEntry", "AuditEvent", "canonical_json"]

#: ``prev_hash`` of the first entry.
GENESIS_HASH = "0" * 64


class AuditEvent(StrEnum):
    """Every kind of entry. The value is what is stored; never rename one."""

    ACTION_SUBMITTED = "action.submitted"
    ACTION_APPROVED = "action.approved"
    ACTION_REJECTED = "action.rejected"
    ACTION_EXPIRED = "action.expired"
    ACTION_EXECUTING = "action.executing"
    ACTION_COMPLETED = "action.completed"
    ACTION_FAILED = "action.failed"
    ACTION_INTERRUPTED = "action.interrupted"
    APPROVAL_REFUSED = "approval.refused"
    SANDBOX_RUN = "sandbox.run"
    SANDBOX_REAPED = "sandbox.reaped"
    AUTH_FAILED = "auth.failed"
    PERMISSION_DENIED = "auth.forbidden"
    RATE_LIMITED = "ratelimit.hit"
    TOKEN_CREATED = "token.created"
    TOKEN_REVOKED = "token.revoked"
    SERVER_STARTED = "server.started"
    SERVER_STOPPED = "server.stopped"
    SKILL_INSTALLED = "skill.installed"
    SKILL_REMOVED = "skill.removed"
    SKILL_FILE = "skill.file"
    MCP_CALL = "mcp.call"
    # the vault (issue 9): names, levels and versions only, never a value
    VAULT_INITIALIZED = "vault.initialized"
    VAULT_UNLOCKED = "vault.unlocked"
    VAULT_ROTATED = "vault.rotated"
    SECRET_SET = "secret.set"
    SECRET_DELETED = "secret.deleted"
    SECRET_DELIVERED = "secret.delivered"
    AUTH_FAILED_SUMMARY = "auth.failed.summary"
    RATE_LIMITED_SUMMARY = "ratelimit.summary"
    AUDIT_REPAIRED = "audit.repaired"
    # the assistant (issue 14)
    CONVERSATION_CREATED = "conversation.created"
    ASSISTANT_TURN = "assistant.turn"           # which provider and model saw the data
    ASSISTANT_TOOL_CALL = "assistant.tool_call"  # a model's call, submitted as a gate action
    # chat channels (issue 12): ids and screening signals, never message text
    CHANNEL_STARTED = "channel.started"
    CHANNEL_MESSAGE = "channel.message"          # an allowed user's message, screened
    CHANNEL_STRANGER = "channel.stranger"        # dropped: not allowlisted nor paired
    CHANNEL_STRANGER_SUMMARY = "channel.stranger.summary"   # the rest, counted per period
    CHANNEL_BUTTON = "channel.button"            # an approval button press and its outcome
    PAIRING_REQUESTED = "pairing.requested"
    PAIRING_APPROVED = "pairing.approved"
    PAIRING_REVOKED = "pairing.revoked"


def canonical_json(value: Any) -> str:
    """One byte-exact JSON form: sorted keys, no spaces, ASCII only (every other character
    escaped, so any string, even a lone surrogate, round-trips), no NaN/Infinity."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


@dataclass(frozen=True)
class AuditEntry:
    """One line of the log. ``entry_hash`` = HMAC-SHA256(key, canonical JSON of every other
    field); ``prev_hash`` is the previous entry's ``entry_hash``."""

    seq: int
    ts: str
    principal: str
    action_id: str | None
    event: str
    details: dict[str, Any] = field(default_factory=dict)
    prev_hash: str = GENESIS_HASH
    entry_hash: str = ""

    def body(self) -> dict[str, Any]:
        """The fields the HMAC covers."""
        return {"seq": self.seq, "ts": self.ts, "principal": self.principal,
                "action_id": self.action_id, "event": self.event, "details": self.details,
                "prev_hash": self.prev_hash}

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "entry_hash": self.entry_hash}

    @classmethod
    def from_dict(cls, d: Any) -> AuditEntry:
        """Parse a stored entry; raises ValueError naming what is wrong."""
        if not isinstance(d, dict):
            raise ValueError("entry is not a JSON object")
        want = {"seq", "ts", "principal", "action_id", "event", "details", "prev_hash",
                "entry_hash"}
        if set(d) != want:
            raise ValueError(f"fields {sorted(set(d) ^ want)} missing or unexpected")
        types = {"seq": int, "ts": str, "principal": str, "event": str, "details": dict,
                 "prev_hash": str, "entry_hash": str}
        for k, t in types.items():
            if not isinstance(d[k], t) or isinstance(d[k], bool):
                raise ValueError(f"{k} has the wrong type")
        if d["action_id"] is not None and not isinstance(d["action_id"], str):
            raise ValueError("action_id has the wrong type")
        return cls(**d)
