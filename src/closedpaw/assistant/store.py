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
    text,
)
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from closedpaw.errors import ConversationNotFound, StoreError, TurnStateError
from closedpaw.gate.store import Store
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
    def of(cls, r: MessageRow | Row[Any]) -> MessageRecord:
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
    def of(cls, r: ConversationRow | Row[Any]) -> ConversationRecord:
        return cls(r.id, r.owner, r.title, r.provider, r.model, r.status,
                   json.loads(r.pending) if r.pending else None, r.created_at, r.updated_at)

    def to_dict(self) -> dict[str, Any]:
        p = self.pending or {}
        return {"conversation_id": self.id, "owner": self.owner, "title": self.title,
                "provider": self.provider, "model": self.model, "status": self.status,
                "pending_action_id": p.get("action_id"), "created_at": self.created_at,
                "updated_at": self.updated_at}


_MSG_COLS = ("id, role, provenance, content, tool_calls, tool_call_id, tool_name, action_id, "
             "provider, model, usage, created_at, source, screening")
_CONV_COLS = "id, owner, title, provider, model, status, pending, created_at, updated_at"


class ConversationStore:
    """On the gate store's engine; creates its tables if missing. Reads and writes are plain
    SQL on one connection (the ORM's unit of work cost ~2 ms a message on the assistant's
    path, for one row)."""

    def __init__(self, engine: Engine, *,
                 connection: Callable[[], AbstractContextManager[Connection]] | None = None
                 ) -> None:
        """``connection``: the gate store's :meth:`~closedpaw.gate.store.Store.connection`
        (same engine), so a write here and the audit entry about it (whose anchor moves in
        the gate's open transaction) commit together; without it, a transaction of its own
        per call."""
        self.engine = engine
        self._connection = connection
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
    def _conn(self) -> Iterator[Connection]:
        """A transaction (the gate's open one when there is one): committed on success, rolled
        back on any exception."""
        if self._connection is not None:
            with self._connection() as c:
                yield c
            return
        try:
            with self.engine.begin() as c:
                yield c
        except SQLAlchemyError as e:
            raise StoreError(f"database error: {' '.join(str(e).split())[:300]}") from None

    @staticmethod
    def _sql(c: Connection, sql: str, *params: Any) -> Any:
        """``sql`` with ``?`` placeholders, straight to the driver (the gate store's)."""
        return Store.sql(c, sql, *params)

    def create(self, owner: str, *, title: str = "", provider: str | None = None,
               model: str | None = None) -> ConversationRecord:
        now = time.time()
        rec = ConversationRecord(str(uuid.uuid4()), owner, title[:200], provider, model, "idle",
                                 None, now, now)
        with self._conn() as c:
            self._sql(c, f"INSERT INTO conversations ({_CONV_COLS}) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rec.id, rec.owner, rec.title,
                      rec.provider, rec.model, rec.status, None, now, now)
        return rec

    def get(self, conv_id: str, principal: Principal) -> ConversationRecord:
        """The conversation when ``principal`` may see it (owner, or admin); else not
        found (a user cannot learn that someone else's id exists)."""
        try:
            uuid.UUID(conv_id)
        except (ValueError, TypeError, AttributeError):
            raise ConversationNotFound(f"no conversation {str(conv_id)[:80]!r}") from None
        with self._conn() as c:
            row = self._sql(c, f"SELECT {_CONV_COLS} FROM conversations WHERE id = ?",
                            conv_id).first()
        if row is None or (row.owner != principal.name and not principal.is_admin):
            raise ConversationNotFound(f"no conversation {conv_id}")
        return ConversationRecord.of(row)

    def list_for(self, principal: Principal, *, limit: int = 100, offset: int = 0
                 ) -> list[ConversationRecord]:
        where, args = ("", ()) if principal.is_admin else ("WHERE owner = ? ", (principal.name,))
        with self._conn() as c:
            rows = self._sql(c, f"SELECT {_CONV_COLS} FROM conversations {where}"
                             "ORDER BY updated_at DESC LIMIT ? OFFSET ?",
                             *args, int(limit), int(offset)).all()
        return [ConversationRecord.of(r) for r in rows]

    def messages(self, conv_id: str) -> list[MessageRecord]:
        with self._conn() as c:
            rows = self._sql(c, f"SELECT {_MSG_COLS} FROM conversation_messages "
                             "WHERE conversation_id = ? ORDER BY id", conv_id).all()
        return [MessageRecord.of(r) for r in rows]

    def _insert_message(self, c: Connection, conv_id: str, now: float, role: str,
                        provenance: str, content: str, tool_calls: list[dict[str, Any]] | None,
                        tool_call_id: str | None, tool_name: str | None,
                        action_id: str | None, provider: str | None, model: str | None,
                        usage: dict[str, Any] | None, source: str | None,
                        screening: dict[str, Any] | None) -> MessageRecord:
        cur = self._sql(
            c, "INSERT INTO conversation_messages (conversation_id, role, provenance, content, "
            "tool_calls, tool_call_id, tool_name, action_id, provider, model, usage, "
            "created_at, source, screening) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "RETURNING id", conv_id, role, provenance, content,
            json.dumps(tool_calls) if tool_calls else None, tool_call_id, tool_name,
            action_id, provider, model, json.dumps(usage) if usage else None, now, source,
            json.dumps(screening) if screening else None)
        return MessageRecord(int(cur.scalar_one()), role, provenance, content,
                             list(tool_calls or []), tool_call_id, tool_name, action_id,
                             provider, model, usage or None, now, source, screening or None)

    def add_message(self, conv_id: str, role: str, provenance: Provenance, content: str, *,
                    tool_calls: list[dict[str, Any]] | None = None,
                    tool_call_id: str | None = None, tool_name: str | None = None,
                    action_id: str | None = None, provider: str | None = None,
                    model: str | None = None, usage: dict[str, Any] | None = None,
                    source: str | None = None, screening: dict[str, Any] | None = None
                    ) -> MessageRecord:
        now = time.time()
        with self._conn() as c:
            rec = self._insert_message(c, conv_id, now, role, provenance, content, tool_calls,
                                       tool_call_id, tool_name, action_id, provider, model,
                                       usage, source, screening)
            self._sql(c, "UPDATE conversations SET updated_at = ? WHERE id = ?", now, conv_id)
        return rec

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
        with self._conn() as c:
            n = self._sql(c, "UPDATE conversations SET status = 'running', updated_at = ?, "
                          "pending = NULL WHERE id = ? AND status = 'idle'", now,
                          conv_id).rowcount
            if n != 1:
                raise TurnStateError(f"conversation {conv_id} is not idle")
            rec = self._insert_message(c, conv_id, now, "user", "user", content, None, None,
                                       None, None, None, None, None, source, screening)
            if pin is not None:
                self._sql(c, "UPDATE conversations SET provider = ?, model = ? "
                          "WHERE id = ? AND provider IS NULL", pin[0], pin[1], conv_id)
            if also is not None:
                also()
        return rec

    def set_state(self, conv_id: str, status: str, pending: dict[str, Any] | None, *,
                  expect: tuple[str, ...] | None = None) -> None:
        """Compare-and-set the turn state; TurnStateError when it was not in ``expect``."""
        assert status in STATUSES
        sql = "UPDATE conversations SET status = ?, updated_at = ?, pending = ? WHERE id = ?"
        args: list[Any] = [status, time.time(), json.dumps(pending) if pending else None,
                           conv_id]
        if expect is not None:
            sql += " AND status IN (" + ", ".join("?" for _ in expect) + ")"
            args += expect
        with self._conn() as c:
            n = self._sql(c, sql, *args).rowcount
            if n != 1:
                raise TurnStateError(f"conversation {conv_id} is not "
                                     f"{' or '.join(expect or ('known',))}")

    def record_provider(self, conv_id: str, provider: str, model: str) -> None:
        """Pin the provider and model a conversation's data goes to (on its first turn)."""
        with self._conn() as c:
            self._sql(c, "UPDATE conversations SET provider = ?, model = ? "
                      "WHERE id = ? AND provider IS NULL", provider, model, conv_id)

    def find_paused_on(self, action_id: str) -> ConversationRecord | None:
        with self._conn() as c:
            rows = self._sql(c, f"SELECT {_CONV_COLS} FROM conversations "
                             "WHERE status = 'awaiting_approval'").all()
        for r in rows:
            if r.pending and json.loads(r.pending).get("action_id") == action_id:
                return ConversationRecord.of(r)
        return None
