"""Pairing and the channel users it makes, in the gate's database (SQLite or PostgreSQL, the
engine of the actions), in tables of their own.

A stranger who writes ``/pair`` to a channel with pairing on gets an 8-character one-time code
(alphabet without look-alikes, about 40 bits; only its sha256 is stored). An admin approves the
code (``closedpaw channels pair approve CODE`` or the API): the stranger's immutable identity
is bound to a new principal ``<channel>-<id>`` with the ``user`` role, never more (an admin who
wants a person to act as an approver lists them in the channels file with ``principal:``).
A code is used once, expires after an hour, and a channel holds at most 3 pending at once (one
per person). Revoking unbinds the identity and disables its principal (its conversations stay
for the audit). The conversation a chat continues is recorded here too (one per channel, user
and chat).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, Index, String, UniqueConstraint, delete, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from closedpaw.errors import PairingRefused, StoreError

__all__ = ["CODE_ALPHABET", "CODE_LEN", "CODE_TTL_S", "MAX_PENDING", "ChannelUser",
           "PairingRequest", "PairingStore", "principal_name"]

#: no 0/O, 1/I/L: a code read aloud or retyped survives
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LEN = 8
CODE_TTL_S = 3600.0
MAX_PENDING = 3


class _Base(DeclarativeBase):
    pass


class PairingRow(_Base):
    __tablename__ = "channel_pairings"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    code_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    channel: Mapped[str] = mapped_column(String(32))
    user_key: Mapped[str] = mapped_column(String(300))
    display_name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))   # pending | approved | expired
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decided_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (Index("ix_channel_pairings_channel", "channel", "status"),)


class ChannelUserRow(_Base):
    __tablename__ = "channel_users"

    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_key: Mapped[str] = mapped_column(String(300), primary_key=True)
    principal: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(200))
    paired_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)


class ChannelConversationRow(_Base):
    __tablename__ = "channel_conversations"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(32))
    user_key: Mapped[str] = mapped_column(String(300))
    chat_id: Mapped[str] = mapped_column(String(300))
    conversation_id: Mapped[str] = mapped_column(String(36))
    principal: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (UniqueConstraint("channel", "user_key", "chat_id", "principal",
                                       name="uq_channel_conversation"),)


@dataclass(frozen=True)
class PairingRequest:
    id: str
    channel: str
    user_key: str
    display_name: str
    status: str
    created_at: float
    expires_at: float
    decided_by: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "channel": self.channel, "user": self.user_key,
                "display_name": self.display_name, "status": self.status,
                "created_at": self.created_at, "expires_at": self.expires_at,
                "decided_by": self.decided_by}


@dataclass(frozen=True)
class ChannelUser:
    channel: str
    user_key: str
    principal: str
    display_name: str
    paired_by: str
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "user": self.user_key, "principal": self.principal,
                "display_name": self.display_name, "paired_by": self.paired_by,
                "created_at": self.created_at}


def principal_name(channel: str, user_key: str) -> str:
    """The principal a paired (or listed without ``principal:``) person acts as:
    ``<channel>-<id>`` with anything outside [A-Za-z0-9._-] as '_'; a long one is cut and
    given a hash suffix so two ids never share a name."""
    raw = f"{channel}-{user_key}"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", raw)
    if safe == raw and len(safe) <= 64:
        return safe
    return f"{safe[:47]}-{hashlib.sha256(raw.encode()).hexdigest()[:16]}"


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


class PairingStore:
    """On the gate store's engine; creates its tables if missing. ``clock`` is injectable so
    expiry is testable without waiting an hour."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock
        self._lock = threading.Lock()   # one request at a time per process (see request)
        try:
            _Base.metadata.create_all(engine)
        except SQLAlchemyError as e:
            raise StoreError(f"cannot create the channel tables: {e}") from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as s, s.begin():
                yield s
        except SQLAlchemyError as e:
            raise StoreError(f"database error: {' '.join(str(e).split())[:300]}") from None

    # -- pairing ---------------------------------------------------------------------------
    def _expire(self, s: Session, now: float) -> None:
        s.execute(update(PairingRow).where(PairingRow.status == "pending",
                                           PairingRow.expires_at <= now)
                  .values(status="expired"))

    def request(self, channel: str, user_key: str, display_name: str = ""
                ) -> tuple[str | None, PairingRequest]:
        """A new code for ``user_key`` (returned once, in clear), or (None, the request
        already pending for them). PairingRefused when the channel has MAX_PENDING already."""
        now = self.clock()
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LEN))
        with self._lock:
            return self._request(channel, user_key, display_name, code, now)

    def _request(self, channel: str, user_key: str, display_name: str, code: str, now: float
                 ) -> tuple[str | None, PairingRequest]:
        with self.session() as s:
            self._expire(s, now)
            mine = s.scalar(select(PairingRow).where(
                PairingRow.channel == channel, PairingRow.user_key == user_key,
                PairingRow.status == "pending"))
            if mine is not None:
                return None, _req(mine)
            n = s.scalar(select(func.count()).select_from(PairingRow).where(
                PairingRow.channel == channel, PairingRow.status == "pending")) or 0
            if n >= MAX_PENDING:
                raise PairingRefused(f"channel {channel} has {n} pairing requests pending, the "
                                     f"most allowed ({MAX_PENDING}); try again after an admin "
                                     "decides or they expire (1 hour)")
            row = PairingRow(id=str(uuid.uuid4()), code_sha256=_hash(code), channel=channel,
                             user_key=user_key, display_name=display_name[:200],
                             status="pending", created_at=now, expires_at=now + CODE_TTL_S)
            s.add(row)
            s.flush()
            # counted again after the insert: another process sharing the database cannot
            # push the channel past the cap either (both may be refused: fail closed)
            n = s.scalar(select(func.count()).select_from(PairingRow).where(
                PairingRow.channel == channel, PairingRow.status == "pending")) or 0
            if n > MAX_PENDING:   # raised inside the transaction: the insert is rolled back
                raise PairingRefused(f"channel {channel} has the most pairing requests "
                                     f"pending ({MAX_PENDING})")
            return code, _req(row)

    def approve(self, code: str, *, by: str, principal_for: Callable[[str, str], str]
                ) -> ChannelUser:
        """Use ``code`` once: bind its identity to ``principal_for(channel, user_key)``
        (which creates the ``user`` principal). PairingRefused when the code is unknown,
        used or expired (all alike to the caller)."""
        code = code.strip().upper()
        if len(code) != CODE_LEN or any(c not in CODE_ALPHABET for c in code):
            raise PairingRefused(f"a pairing code is {CODE_LEN} characters of "
                                 f"{CODE_ALPHABET}")
        now = self.clock()
        digest = _hash(code)
        with self.session() as s:
            self._expire(s, now)
            row = s.scalar(select(PairingRow).where(PairingRow.code_sha256 == digest))
            if row is None or not hmac.compare_digest(row.code_sha256, digest) \
                    or row.status != "pending":
                raise PairingRefused("no pending pairing request has that code (unknown, "
                                     "already used, or expired after 1 hour)")
            # compare-and-set: of two concurrent approvals only one binds
            n = s.execute(update(PairingRow).where(PairingRow.id == row.id,
                                                   PairingRow.status == "pending")
                          .values(status="approved", decided_by=by, decided_at=now)).rowcount  # type: ignore[attr-defined]
            if n != 1:
                raise PairingRefused("that pairing code was used already")
            channel, user_key, name = row.channel, row.user_key, row.display_name
        principal = principal_for(channel, user_key)
        try:
            with self.session() as s:
                u = ChannelUserRow(channel=channel, user_key=user_key, principal=principal,
                                   display_name=name, paired_by=by, created_at=now)
                s.add(u)
                s.flush()
                return _user(u)
        except StoreError:
            with self.session() as s:
                u2 = s.get(ChannelUserRow, (channel, user_key))
                if u2 is not None:
                    return _user(u2)
            raise

    def pending(self, channel: str | None = None) -> list[PairingRequest]:
        now = self.clock()
        with self.session() as s:
            self._expire(s, now)
            q = select(PairingRow).where(PairingRow.status == "pending")
            if channel is not None:
                q = q.where(PairingRow.channel == channel)
            return [_req(r) for r in s.scalars(q.order_by(PairingRow.created_at))]

    # -- paired users ----------------------------------------------------------------------
    def user(self, channel: str, user_key: str) -> ChannelUser | None:
        with self.session() as s:
            row = s.get(ChannelUserRow, (channel, user_key))
            return _user(row) if row is not None else None

    def users(self, channel: str | None = None) -> list[ChannelUser]:
        with self.session() as s:
            q = select(ChannelUserRow).order_by(ChannelUserRow.created_at)
            if channel is not None:
                q = q.where(ChannelUserRow.channel == channel)
            return [_user(r) for r in s.scalars(q)]

    def revoke(self, channel: str, user_key: str) -> ChannelUser | None:
        """Unbind a paired identity (None when it was not paired); its conversations are
        forgotten by the channel (kept in the conversation store)."""
        with self.session() as s:
            row = s.get(ChannelUserRow, (channel, user_key))
            if row is None:
                return None
            out = _user(row)
            s.delete(row)
            s.execute(delete(ChannelConversationRow).where(
                ChannelConversationRow.channel == channel,
                ChannelConversationRow.user_key == user_key))
            return out

    # -- conversations ---------------------------------------------------------------------
    def conversation(self, channel: str, user_key: str, chat_id: str, principal: str
                     ) -> str | None:
        with self.session() as s:
            return s.scalar(select(ChannelConversationRow.conversation_id).where(
                ChannelConversationRow.channel == channel,
                ChannelConversationRow.user_key == user_key,
                ChannelConversationRow.chat_id == chat_id,
                ChannelConversationRow.principal == principal))

    def chats(self, channel: str) -> dict[str, str]:
        """conversation id -> chat id of every conversation this channel continues."""
        with self.session() as s:
            rows = s.execute(select(ChannelConversationRow.conversation_id,
                                    ChannelConversationRow.chat_id).where(
                ChannelConversationRow.channel == channel))
            return {str(c): str(ch) for c, ch in rows}

    def set_conversation(self, channel: str, user_key: str, chat_id: str, principal: str,
                         conversation_id: str) -> str:
        """Record the chat's conversation; when another thread recorded one first, that one
        is returned (and used)."""
        try:
            with self.session() as s:
                s.add(ChannelConversationRow(channel=channel, user_key=user_key,
                                             chat_id=chat_id, principal=principal,
                                             conversation_id=conversation_id,
                                             created_at=self.clock()))
            return conversation_id
        except (StoreError, IntegrityError):
            got = self.conversation(channel, user_key, chat_id, principal)
            if got is None:
                raise
            return got


def _req(r: PairingRow) -> PairingRequest:
    return PairingRequest(r.id, r.channel, r.user_key, r.display_name, r.status, r.created_at,
                          r.expires_at, r.decided_by)


def _user(r: ChannelUserRow) -> ChannelUser:
    return ChannelUser(r.channel, r.user_key, r.principal, r.display_name, r.paired_by,
                       r.created_at)
