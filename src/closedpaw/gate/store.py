"""Persistence with SQLAlchemy 2: principals and actions. SQLite (WAL, synchronous=FULL) in
the data directory by default; the same code runs on PostgreSQL by URL.

State changes are compare-and-set: ``UPDATE ... WHERE id = ? AND status IN (...)``, so two
approvals of one action cannot both succeed, in one process or many. Each change and its audit
entry go together: the row is changed in a transaction, the entry is written, then the
transaction commits; if the entry cannot be written the change is rolled back (fail closed).
"""

from __future__ import annotations

import contextvars
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field
from sqlalchemy import (
    Boolean,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from closedpaw.errors import ConfigError, InvalidRequest, StoreError
from closedpaw.gate.actions import ActionStatus, RiskLevel

__all__ = ["ActionRecord", "ActionRow", "AuditAnchorRow", "PrincipalRow", "Store"]

#: the transaction open on this thread/task, so the audit anchor commits with the change
_CURRENT: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "closedpaw_store_session", default=None)
#: ... or the plain connection of one opened by :meth:`Store.connection`
_CONN: contextvars.ContextVar[Connection | None] = contextvars.ContextVar(
    "closedpaw_store_connection", default=None)


class Base(DeclarativeBase):
    pass


class PrincipalRow(Base):
    __tablename__ = "principals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class ActionRow(Base):
    __tablename__ = "actions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    action_type: Mapped[str] = mapped_column(String(64))
    parameters: Mapped[str] = mapped_column(Text)  # canonical {"action_type", "parameters"}
    params_sha256: Mapped[str] = mapped_column(String(64))
    security_level: Mapped[str] = mapped_column(String(16))
    level_reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    requester: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    decided_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    result: Mapped[str | None] = mapped_column(Text, nullable=True)   # JSON
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # keyed MACs (gate.key): over id, level, requester and canonical parameters at submission;
    # over id, the approved hash and the approver at approval. Execution checks both.
    params_mac: Mapped[str | None] = mapped_column(String(64), nullable=True)
    approved_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    approval_mac: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # the front door an action came through when not the API (``mcp:<tool>``): an action an
    # MCP client submitted needs another principal's approval (issue 11); under params_mac
    via: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: the gate instance that must execute it (an action on state only that process holds,
    #: a sandbox session); None: any gate on the database
    runner: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (Index("ix_actions_status", "status"),
                      Index("ix_actions_created", "created_at"))


class AuditAnchorRow(Base):
    """The audit log's latest seq and entry hash, kept outside the log: one row, updated in
    the transaction of the change each entry records (monotonic)."""

    __tablename__ = "audit_anchor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    entry_hash: Mapped[str] = mapped_column(String(64))


_ADDED_COLUMNS = ("params_mac", "approved_sha256", "approval_mac", "via", "runner")


class ActionRecord(BaseModel):
    """An action as stored. The same model is the API's answer (``GET /api/actions/{id}``),
    the CLI's ``--json`` and what listeners are told about: serialised by its aliases
    (``action_id``, ``canonical_parameters``) with ``requires_approval`` computed."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    id: str = Field(serialization_alias="action_id")
    action_type: str
    parameters: dict[str, Any]
    canonical: str = Field(serialization_alias="canonical_parameters",
                           description="the exact JSON params_sha256 is taken of")
    params_sha256: str
    security_level: RiskLevel
    level_reason: str
    status: ActionStatus
    requester: str
    created_at: float
    updated_at: float
    expires_at: float | None
    decided_by: str | None
    decided_at: float | None
    result: dict[str, Any] | None
    error: str | None
    params_mac: str | None = Field(default=None, exclude=True)
    approved_sha256: str | None = Field(default=None, exclude=True)
    approval_mac: str | None = Field(default=None, exclude=True)
    via: str | None = None
    runner: str | None = Field(default=None, exclude=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def requires_approval(self) -> bool:
        return self.security_level.needs_approval

    @classmethod
    def of(cls, r: ActionRow | Row[Any]) -> ActionRecord:
        """From an ORM row or a Core result row (the same column names)."""
        return cls(id=r.id, action_type=r.action_type,
                   parameters=json.loads(r.parameters)["parameters"],
                   canonical=r.parameters, params_sha256=r.params_sha256,
                   security_level=RiskLevel(r.security_level), level_reason=r.level_reason,
                   status=ActionStatus(r.status), requester=r.requester,
                   created_at=r.created_at, updated_at=r.updated_at, expires_at=r.expires_at,
                   decided_by=r.decided_by, decided_at=r.decided_at,
                   result=json.loads(r.result) if r.result else None, error=r.error,
                   params_mac=r.params_mac, approved_sha256=r.approved_sha256,
                   approval_mac=r.approval_mac, via=r.via,
                   runner=r.runner)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape (the API's, the CLI's)."""
        return self.model_dump(mode="json", by_alias=True)


#: plain SQL of the hot paths (Store.sql): an action's columns in the table's order
_ACTION_COLUMNS = tuple(c.name for c in ActionRow.__table__.columns)
_INSERT_ACTION = (f"INSERT INTO actions ({', '.join(_ACTION_COLUMNS)}) VALUES ("
                  + ", ".join("?" for _ in _ACTION_COLUMNS) + ")")
_SELECT_ACTION = f"SELECT {', '.join(_ACTION_COLUMNS)} FROM actions WHERE id = ?"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _describe(e: SQLAlchemyError) -> str:
    orig = getattr(e, "orig", None)
    return " ".join(str(orig or e).split())[:300]


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """The driver's errors as ours: a conflict is the request's fault, the rest the store's."""
    try:
        yield
    except IntegrityError as e:
        raise InvalidRequest(f"conflicts with existing data: {_describe(e)}") from None
    except SQLAlchemyError as e:
        raise StoreError(f"database error: {_describe(e)}") from None


@contextmanager
def _current(var: contextvars.ContextVar[Any], value: Any) -> Iterator[None]:
    """``var`` set to ``value`` (the open transaction) for the block."""
    tok = var.set(value)
    try:
        yield
    finally:
        var.reset(tok)


class Store:
    """The database. ``url`` is any SQLAlchemy URL (sqlite:///..., postgresql+psycopg://...)."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                p = Path(path)
                p.parent.mkdir(parents=True, exist_ok=True)
                if not p.exists():   # token hashes live here: not world-readable
                    os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
        elif url.startswith("postgresql"):
            kwargs["pool_pre_ping"] = True
        else:
            raise ConfigError(f"db_url: {url.split(':', 1)[0]!r} is not supported; use "
                              "sqlite:///PATH or postgresql+psycopg://...")
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except (SQLAlchemyError, ImportError, ValueError) as e:
            raise ConfigError(f"db_url: cannot use {url!r}: {e}") from None
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            Base.metadata.create_all(self.engine)
            self._add_columns()
        except SQLAlchemyError as e:
            self.engine.dispose()
            raise StoreError(f"database {self.safe_url} is unreachable: {_describe(e)}") from None

    def _add_columns(self) -> None:
        """Columns added after a database was made (issue 13): added in place."""
        have = {c["name"] for c in inspect(self.engine).get_columns("actions")}
        with self.engine.begin() as c:
            for name in _ADDED_COLUMNS:
                if name not in have:
                    c.execute(text(f"ALTER TABLE actions ADD COLUMN {name} VARCHAR(64)"))

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True) if hasattr(
            self, "engine") else self.url.split("@")[-1]

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any exception."""
        outer = _CURRENT.get()
        if outer is not None:   # nested: one transaction
            yield outer
            return
        conn = _CONN.get()
        # inside a plain connection's transaction: a session joined to it, which leaves the
        # commit to that transaction
        with _mapped_errors(), Session(conn if conn is not None else self.engine,
                                       expire_on_commit=False) as s, s.begin(), \
                _current(_CURRENT, s):
            yield s

    # -- principals --------------------------------------------------------------------
    def add_principal(self, s: Session, name: str, role: str, token_hash: str) -> None:
        if s.scalar(select(PrincipalRow.id).where(PrincipalRow.name == name)) is not None:
            raise InvalidRequest(f"a principal named {name!r} exists already")
        s.add(PrincipalRow(name=name, role=role, token_hash=token_hash, created_at=time.time(),
                           disabled=False))
        s.flush()

    def disable_principal(self, s: Session, name: str) -> None:
        n = s.execute(update(PrincipalRow).where(PrincipalRow.name == name,
                                                 PrincipalRow.disabled.is_(False))
                      .values(disabled=True)).rowcount  # type: ignore[attr-defined]
        if n != 1:
            raise InvalidRequest(f"no active principal named {name!r}")

    def principals(self) -> list[tuple[str, str, float, bool]]:
        with self.session() as s:
            rows = s.execute(select(PrincipalRow.name, PrincipalRow.role,
                                    PrincipalRow.created_at, PrincipalRow.disabled)
                             .order_by(PrincipalRow.id))
            return [(n, r, float(c), bool(d)) for n, r, c, d in rows]

    def principal_by_hash(self, token_hash: str) -> Row[Any] | None:
        """The active principal (``name``, ``role``) of a token hash: asked on every
        authenticated request, so plain SQL (the ORM's session cost ~1 ms)."""
        with self.connection() as c:
            return self.sql(c, "SELECT name, role FROM principals "   # type: ignore[no-any-return]
                            "WHERE token_hash = ? AND disabled = ?", token_hash, False).first()

    def count_admins(self) -> int:
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(PrincipalRow)
                                .where(PrincipalRow.role == "admin")) or 0)

    # -- the audit anchor --------------------------------------------------------------
    # Core statements on the transaction's connection: every audit entry reads and moves
    # the anchor, and the ORM's unit of work cost ~1 ms per call here for one row.
    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """The open transaction's connection (a :meth:`session`'s or an outer
        ``connection()``'s), or a transaction of its own, committed on success and rolled
        back on any exception: for plain SQL (:meth:`sql`) without the ORM's unit of work.
        Audit entries written inside it move the anchor in the same transaction."""
        outer = _CURRENT.get()
        if outer is not None:
            yield outer.connection()
            return
        conn = _CONN.get()
        if conn is not None:
            yield conn
            return
        with _mapped_errors(), self.engine.begin() as c, _current(_CONN, c):
            yield c


    @staticmethod
    def sql(c: Connection, sql: str, *params: Any) -> Any:
        """``sql`` with ``?`` placeholders, straight to the driver (no statement compiling)."""
        if c.dialect.paramstyle != "qmark":
            sql = sql.replace("?", "%s")
        return c.exec_driver_sql(sql, params)

    def anchor(self) -> tuple[int, str] | None:
        """The anchored (seq, entry_hash), seen from the open transaction if there is one."""
        with self.connection() as c:
            row = self.sql(c, "SELECT seq, entry_hash FROM audit_anchor WHERE id = 1").first()
            return (int(row[0]), str(row[1])) if row else None

    def set_anchor(self, seq: int, entry_hash: str) -> None:
        """Move the anchor forward to ``seq`` (never back), in the open transaction if there
        is one, else in its own."""
        with self.connection() as c:
            n = self.sql(c, "UPDATE audit_anchor SET seq = ?, entry_hash = ? "
                          "WHERE id = 1 AND seq < ?", seq, entry_hash, seq).rowcount
            if n == 0 and self.sql(c, "SELECT 1 FROM audit_anchor WHERE id = 1").first() is None:
                self.sql(c, "INSERT INTO audit_anchor (id, seq, entry_hash) VALUES (1, ?, ?)",
                          seq, entry_hash)

    # -- actions -----------------------------------------------------------------------
    def get(self, action_id: str) -> ActionRecord | None:
        with self.connection() as c:
            row = self.sql(c, _SELECT_ACTION, action_id).first()
        return ActionRecord.of(row) if row else None

    def list_actions(self, *, status: Sequence[ActionStatus] | None = None, limit: int = 100,
             offset: int = 0, requester: str | None = None,
             max_bytes: int | None = None) -> list[ActionRecord]:
        """Newest first; with ``max_bytes``, stops once the rows' parameters and results pass
        it (at least one row), so a page never holds more than about that much."""
        q = select(ActionRow).order_by(ActionRow.created_at.desc(), ActionRow.id)
        if requester is not None:
            q = q.where(ActionRow.requester == requester)
        if status:
            q = q.where(ActionRow.status.in_([str(x) for x in status]))
        out: list[ActionRecord] = []
        held = 0
        with self.session() as s:
            for r in s.scalars(q.limit(limit).offset(offset)):
                # parameters are sent twice (as parameters and canonical_parameters)
                held += 2 * len(r.parameters) + len(r.result or "")
                if out and max_bytes is not None and held > max_bytes:
                    break
                out.append(ActionRecord.of(r))
        return out

    def ids_where(self, *, status: Sequence[ActionStatus], expires_before: float | None = None
                  ) -> list[str]:
        q = select(ActionRow.id).where(ActionRow.status.in_([str(x) for x in status]))
        if expires_before is not None:
            q = q.where(ActionRow.expires_at.is_not(None), ActionRow.expires_at <= expires_before)
        with self.session() as s:
            return list(s.scalars(q))

    def held_by(self, c: Connection, requester: str, status: Sequence[ActionStatus]
                ) -> tuple[int, int]:
        """How many actions ``requester`` has in ``status`` and their parameter bytes."""
        n, b = self.sql(c, "SELECT count(*), coalesce(sum(length(parameters)), 0) FROM actions "
                        "WHERE requester = ? AND status IN ("
                        + ", ".join("?" for _ in status) + ")",
                        requester, *(str(x) for x in status)).one()
        return int(n), int(b)

    def insert_action(self, c: Connection, row: ActionRow) -> ActionRecord:
        """Insert ``row`` (a new action, not in any session) in ``c``'s transaction."""
        self.sql(c, _INSERT_ACTION, *(getattr(row, k) for k in _ACTION_COLUMNS))
        return ActionRecord.of(row)

    def counts(self, requester: str | None = None) -> dict[str, int]:
        """Actions per status: every principal's, or ``requester``'s."""
        q = select(ActionRow.status, func.count())
        if requester is not None:
            q = q.where(ActionRow.requester == requester)
        with self.session() as s:
            rows = s.execute(q.group_by(ActionRow.status))
            return {str(st): int(n) for st, n in rows}

    def transition(self, action_id: str, frm: Sequence[ActionStatus], to: ActionStatus, *,
                   audit: Callable[[ActionRecord], None], where_unexpired: float | None = None,
                   where_sha256: str | None = None, **values: Any) -> ActionRecord | None:
        """Compare-and-set ``frm`` -> ``to``; ``audit`` runs inside the transaction with the
        new record and may raise to roll it back. None when the action was not in ``frm``."""
        values = {k: (json.dumps(v) if k == "result" and v is not None else v)
                  for k, v in values.items()}
        t: Table = ActionRow.__table__  # type: ignore[assignment]
        with self.connection() as c:
            # Core UPDATE ... RETURNING (SQLite >= 3.35, PostgreSQL): one statement instead of
            # the ORM's update, its session sync and a SELECT of the row
            q = (update(t)
                 .where(t.c.id == action_id, t.c.status.in_([str(x) for x in frm]))
                 .values(status=str(to), updated_at=time.time(), **values))
            if where_unexpired is not None:
                q = q.where(t.c.expires_at > where_unexpired)
            if where_sha256 is not None:   # the approval is of this hash, or nothing
                q = q.where(t.c.params_sha256 == where_sha256)
            row = c.execute(q.returning(*t.c)).first()
            if row is None:
                return None
            rec = ActionRecord.of(row)
            audit(rec)
            return rec
