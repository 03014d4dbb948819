"""Conversations and their messages, in the gate's database (SQLite or PostgreSQL, the same
engine as the actions), in tables of their own.

A message has a role (system, user, assistant, tool) and a provenance: ``user`` (typed by the
owner), ``assistant`` (written by a model: which provider and model is recorded), ``tool_result``
(what a gate action returned: untrusted data) or ``external`` (content from outside, e.g. a
fetched page; untrusted). A conversation has one owner principal: a user sees only their own,
an admin sees all.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from closedpaw.errors import ConversationNotFound, StoreError, TurnStateError
from closedpaw.security.principal import Principal

__all__ = ["ConversationRecord", "ConversationStore", "MessageRecord", "Provenance"]

Provenance = Literal["user", "assistant", "tool_result", "external", "system"]
STATUSES = ("idle", "running", "awaiting_approval")


class _Base(DeclarativeBase):
    pass


class ConversationRow(_Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(24))
    pending: Mapped[str | None] = mapped_column(Text, nullable=True)   # JSON: a paused turn
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_conversations_owner", "owner"),)


class MessageRow(_Base):
    __tablename__ = "conversation_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(String(36), ForeignKey("conversations.id"))
    role: Mapped[str] = mapped_column(String(16))
    provenance: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    tool_calls: Mapped[str | None] = mapped_column(Text, nullable=True)   # JSON list
    tool_call_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    tool_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    provider: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    usage: Mapped[str | None] = mapped_column(Text, nullable=True)   # JSON
    created_at: Mapped[float] = mapped_column(Float)
    # added by issue 9 (ALTERed into older databases): where the text came from (``api``,
    # ``telegram``, ...) and the screening verdict (JSON: flagged, score, labels)
    source: Mapped[str | None] = mapped_column(String(32), nullable=True)
    screening: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_messages_conversation", "conversation_id", "id"),)


#: columns added after the table was first made: (name, SQL type)
_ADDED_COLUMNS = (("source", "VARCHAR(32)"), ("screening", "TEXT"))


@dataclass(frozen=True)
class MessageRecord:
    id: int
    role: str
    provenance: str
    content: str
    tool_calls: list[dict[str, Any]]
    tool_call_id: str | None
    tool_name: str | None
    action_id: str | None
    provider: str | None
    model: str | None
    usage: dict[str, Any] | None
    created_at: float
    source: str | None = None
    screening: dict[str, Any] | None = None   # {"flagged", "score", "labels"}

    @property
    def flagged(self) -> bool:
        return bool(self.screening and self.screening.get("flagged"))

    @classmethod
    def of(cls, r: MessageRow) -> MessageRecord:
        return cls(r.id, r.role, r.provenance, r.content,
                   json.loads(r.tool_calls) if r.tool_calls else [], r.tool_call_id,
                   r.tool_name, r.action_id, r.provider, r.model,
                   json.loads(r.usage) if r.usage else None, r.created_at, r.source,
                   json.loads(r.screening) if r.screening else None)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "role": self.role, "provenance": self.provenance,
                "content": self.content, "tool_calls": self.tool_calls,
                "tool_call_id": self.tool_call_id, "tool_name": self.tool_name,
                "action_id": self.action_id, "provider": self.provider, "model": self.model,
                "usage": self.usage, "created_at": self.created_at, "source": self.source,
                "screening": self.screening}


@dataclass(frozen=True)
class ConversationRecord:
    id: str
    owner: str
    title: str
    provider: str | None
    model: str | None
    status: str
    pending: dict[str, Any] | None
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, r: ConversationRow) -> ConversationRecord:
        return cls(r.id, r.owner, r.title, r.provider, r.model, r.status,
                   json.loads(r.pending) if r.pending else None, r.created_at, r.updated_at)

    def to_dict(self) -> dict[str, Any]:
        p = self.pending or {}
        return {"conversation_id": self.id, "owner": self.owner, "title": self.title,
                "provider": self.provider, "model": self.model, "status": self.status,
                "pending_action_id": p.get("action_id"), "created_at": self.created_at,
                "updated_at": self.updated_at}


class ConversationStore:
    """On the gate store's engine; creates its tables if missing."""

    def __init__(self, engine: Engine, *,
                 transaction: Callable[[], AbstractContextManager[Session]] | None = None
                 ) -> None:
        """``transaction``: the gate store's ``session`` (same engine), so a write here and
        the audit entry about it (whose anchor moves in the gate's open transaction) commit
        together; without it, a transaction of its own per call."""
        self.engine = engine
        self._transaction = transaction
        try:
            _Base.metadata.create_all(engine)
            have = {c["name"] for c in inspect(engine).get_columns("conversation_messages")}
            with engine.begin() as c:
                for name, sql_type in _ADDED_COLUMNS:
                    if name not in have:
                        c.execute(text(f"ALTER TABLE conversation_messages ADD COLUMN {name} "
                                       f"{sql_type}"))
        except SQLAlchemyError as e:
            raise StoreError(f"cannot create the conversation tables: {e}") from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        if self._transaction is not None:
            with self._transaction() as s:
                yield s
            return
        try:
            with Session(self.engine, expire_on_commit=False) as s, s.begin():
                yield s
        except SQLAlchemyError as e:
            raise StoreError(f"database error: {' '.join(str(e).split())[:300]}") from None

    def create(self, owner: str, *, title: str = "", provider: str | None = None,
               model: str | None = None) -> ConversationRecord:
        now = time.time()
        row = ConversationRow(id=str(uuid.uuid4()), owner=owner, title=title[:200],
                              provider=provider, model=model, status="idle", pending=None,
                              created_at=now, updated_at=now)
        with self.session() as s:
            s.add(row)
            s.flush()
            return ConversationRecord.of(row)

    def get(self, conv_id: str, principal: Principal) -> ConversationRecord:
        """The conversation when ``principal`` may see it (owner, or admin); else not
        found (a user cannot learn that someone else's id exists)."""
        try:
            uuid.UUID(conv_id)
        except (ValueError, TypeError, AttributeError):
            raise ConversationNotFound(f"no conversation {str(conv_id)[:80]!r}") from None
        with self.session() as s:
            row = s.get(ConversationRow, conv_id)
            if row is None or (row.owner != principal.name and not principal.is_admin):
                raise ConversationNotFound(f"no conversation {conv_id}")
            return ConversationRecord.of(row)

    def list_for(self, principal: Principal, *, limit: int = 100, offset: int = 0
             ) -> list[ConversationRecord]:
        q = select(ConversationRow).order_by(ConversationRow.updated_at.desc())
        if not principal.is_admin:
            q = q.where(ConversationRow.owner == principal.name)
        with self.session() as s:
            return [ConversationRecord.of(r) for r in s.scalars(q.limit(limit).offset(offset))]

    def messages(self, conv_id: str) -> list[MessageRecord]:
        with self.session() as s:
            rows = s.scalars(select(MessageRow).where(MessageRow.conversation_id == conv_id)
                             .order_by(MessageRow.id))
            return [MessageRecord.of(r) for r in rows]

    def add_message(self, conv_id: str, role: str, provenance: Provenance, content: str, *,
                    tool_calls: list[dict[str, Any]] | None = None,
                    tool_call_id: str | None = None, tool_name: str | None = None,
                    action_id: str | None = None, provider: str | None = None,
                    model: str | None = None, usage: dict[str, Any] | None = None,
                    source: str | None = None, screening: dict[str, Any] | None = None
                    ) -> MessageRecord:
        now = time.time()
        row = MessageRow(conversation_id=conv_id, role=role, provenance=provenance,
                         content=content, tool_calls=json.dumps(tool_calls)
                         if tool_calls else None, tool_call_id=tool_call_id,
                         tool_name=tool_name, action_id=action_id, provider=provider,
                         model=model, usage=json.dumps(usage) if usage else None,
                         created_at=now, source=source,
                         screening=json.dumps(screening) if screening else None)
        with self.session() as s:
            s.add(row)
            s.flush()
            s.execute(update(ConversationRow).where(ConversationRow.id == conv_id)
                      .values(updated_at=now))
            return MessageRecord.of(row)

    def start_turn(self, conv_id: str, content: str, *, source: str | None = None,
                   screening: dict[str, Any] | None = None,
                   pin: tuple[str, str] | None = None,
                   also: Callable[[], object] | None = None) -> MessageRecord:
        """Compare-and-set the conversation from idle to running and store the user's
        message, in one transaction: one commit (not two) before the model is asked, and no
        turn is left running without its message. TurnStateError when it was not idle.
        ``pin``: (provider, model) to record if the conversation has none yet (its first
        turn); ``also``: run inside the transaction after the message (the turn's audit
        entry, whose anchor then commits with it)."""
        now = time.time()
        with self.session() as s:
            n = s.execute(update(ConversationRow).where(
                ConversationRow.id == conv_id, ConversationRow.status == "idle").values(
                status="running", updated_at=now, pending=None)).rowcount  # type: ignore[attr-defined]
            if n != 1:
                raise TurnStateError(f"conversation {conv_id} is not idle")
            row = MessageRow(conversation_id=conv_id, role="user", provenance="user",
                             content=content, tool_calls=None, tool_call_id=None,
                             tool_name=None, action_id=None, provider=None, model=None,
                             usage=None, created_at=now, source=source,
                             screening=json.dumps(screening) if screening else None)
            s.add(row)
            s.flush()
            if pin is not None:
                s.execute(update(ConversationRow).where(ConversationRow.id == conv_id,
                                                        ConversationRow.provider.is_(None))
                          .values(provider=pin[0], model=pin[1]))
            rec = MessageRecord.of(row)
            if also is not None:
                also()
            return rec

    def set_state(self, conv_id: str, status: str, pending: dict[str, Any] | None, *,
                  expect: tuple[str, ...] | None = None, **values: Any) -> None:
        """Compare-and-set the turn state; TurnStateError when it was not in ``expect``."""
        assert status in STATUSES
        with self.session() as s:
            q = update(ConversationRow).where(ConversationRow.id == conv_id)
            if expect is not None:
                q = q.where(ConversationRow.status.in_(expect))
            n = s.execute(q.values(status=status, updated_at=time.time(),
                                   pending=json.dumps(pending) if pending else None,
                                   **values)).rowcount  # type: ignore[attr-defined]
            if n != 1:
                raise TurnStateError(f"conversation {conv_id} is not "
                                     f"{' or '.join(expect or ('known',))}")

    def record_provider(self, conv_id: str, provider: str, model: str) -> None:
        """Pin the provider and model a conversation's data goes to (on its first turn)."""
        with self.session() as s:
            s.execute(update(ConversationRow).where(ConversationRow.id == conv_id,
                                                    ConversationRow.provider.is_(None))
                      .values(provider=provider, model=model))

    def find_paused_on(self, action_id: str) -> ConversationRecord | None:
        with self.session() as s:
            for r in s.scalars(select(ConversationRow).where(
                    ConversationRow.status == "awaiting_approval")):
                if r.pending and json.loads(r.pending).get("action_id") == action_id:
                    return ConversationRecord.of(r)
        return None
