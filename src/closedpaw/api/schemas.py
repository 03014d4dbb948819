"""Request and response bodies of the HTTP API (also its OpenAPI schema). An action is
answered with the store's own :class:`~closedpaw.gate.store.ActionRecord`, not a copy of it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from closedpaw.gate import ActionRecord
from closedpaw.gate.actions import check_json_value
from closedpaw.vault.levels import Level
from closedpaw.vault.vault import MAX_VALUE_BYTES

__all__ = ["PROVIDER_NAME", "SHA256", "ActionList", "ApproveBody", "AuditPage", "ChatBody",
           "ConversationList", "ConversationOut", "ConversationWithMessages", "Health",
           "MessageBody", "MessageOut", "NewConversation", "RejectBody", "SecretDeleted",
           "SecretDelivery", "SecretInfoOut", "SecretList", "SecretSet", "SubmitResponse",
           "VaultStatus", "VaultUnlock"]

SHA256 = r"^[0-9a-f]{64}$"


class SubmitResponse(BaseModel):
    """What a submitter needs at once: the id, the level and whether it waits."""

    action_id: str
    status: str
    security_level: str
    requires_approval: bool
    params_sha256: str
    level_reason: str
    expires_at: float | None

    @classmethod
    def of(cls, rec: ActionRecord) -> SubmitResponse:
        return cls(action_id=rec.id, status=str(rec.status),
                   security_level=str(rec.security_level),
                   requires_approval=rec.requires_approval, params_sha256=rec.params_sha256,
                   level_reason=rec.level_reason, expires_at=rec.expires_at)


class ActionList(BaseModel):
    actions: list[ActionRecord]


class ApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    params_sha256: str = Field(pattern=SHA256, description="sha256 of canonical_parameters")


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=1000)

    _r = field_validator("reason")(check_json_value)


class AuditPage(BaseModel):
    entries: list[dict[str, Any]]
    next_after_seq: int | None


class Health(BaseModel):
    status: str


# -- the vault (issue 9): names, levels, versions and times; a value only in SecretDelivery --
class SecretInfoOut(BaseModel):
    name: str
    level: str
    version: int
    versions: list[int]
    created_at: float
    updated_at: float
    created_by: str


class SecretList(BaseModel):
    secrets: list[SecretInfoOut]


class SecretSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # characters: at most 4 UTF-8 bytes each, so any accepted value fits the vault's limit
    value: str = Field(min_length=1, max_length=MAX_VALUE_BYTES // 4)
    level: Level | None = Field(default=None, description="default: the current version's "
                                "level, standard for a new secret")


class SecretDeleted(BaseModel):
    name: str
    deleted_versions: int


class VaultStatus(BaseModel):
    initialized: bool
    locked: bool
    kdf: str | None = None
    generation: int | None = None
    secrets: int | None = None


class VaultUnlock(BaseModel):
    model_config = ConfigDict(extra="forbid")
    passphrase: str = Field(min_length=1, max_length=4096)


class SecretDelivery(BaseModel):
    """The one answer that carries a value: an approved secret_read, to its requester, once."""

    action_id: str
    name: str
    version: int
    value: str


# -- the assistant (conversations, POST /api/chat) -----------------------------------------
PROVIDER_NAME = r"^[a-z][a-z0-9_-]{0,31}$"


class NewConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: str | None = Field(default=None, pattern=PROVIDER_NAME)
    model: str | None = Field(default=None, max_length=200)
    title: str = Field(default="", max_length=200)


class MessageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: str = Field(min_length=1, max_length=100_000)


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(min_length=1, max_length=100_000)
    conversation_id: str | None = Field(default=None, pattern=r"^[0-9a-f-]{36}$")
    provider: str | None = Field(default=None, pattern=PROVIDER_NAME)
    model: str | None = Field(default=None, max_length=200)


class ConversationOut(BaseModel):
    conversation_id: str
    owner: str
    title: str
    provider: str | None
    model: str | None
    status: str = Field(description="idle, running or awaiting_approval")
    pending_action_id: str | None
    created_at: float
    updated_at: float


class MessageOut(BaseModel):
    id: int
    role: str
    provenance: str = Field(description="user, assistant, tool_result, external or system")
    content: str
    tool_calls: list[dict[str, Any]]
    tool_call_id: str | None
    tool_name: str | None
    action_id: str | None
    provider: str | None
    model: str | None
    usage: dict[str, Any] | None
    created_at: float
    source: str | None = Field(default=None, description="where the text came from: api, a "
                               "channel (telegram, ...), tool")
    screening: dict[str, Any] | None = Field(
        default=None, description="the screening verdict: flagged, score, labels")


class ConversationWithMessages(ConversationOut):
    messages: list[MessageOut]


class ConversationList(BaseModel):
    conversations: list[ConversationOut]
