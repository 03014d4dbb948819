"""The vault: secrets encrypted at rest in the gate's database, opened by a master key that
lives only in memory while the vault is unlocked.

Every write that depends on the master key first compare-and-sets the meta row's generation
(``UPDATE ... WHERE generation = mine``): on SQLite that takes the write lock, on PostgreSQL
the row lock, so a ``set`` can never slip a row wrapped under an old key past a rotation in
another process; it is refused with :class:`VaultLocked` instead (unlock again).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, event, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from closedpaw.errors import (
    ConfigError,
    InvalidRequest,
    PermissionDenied,
    SecretNotFound,
    SecretTampered,
    StoreError,
    VaultError,
    VaultKeyInvalid,
    VaultLocked,
    VaultNotInitialized,
)
from closedpaw.vault import crypto
from closedpaw.vault.levels import Level, may_read, parse_level
from closedpaw.vault.redact import Redactor
from closedpaw.vault.tables import MetaRow, ReadRow, SecretRow, VaultBase

__all__ = ["MAX_VALUE_BYTES", "NAME_PATTERN", "Progress", "SecretInfo", "Vault"]

NAME_PATTERN = r"^[A-Za-z0-9_.\-/]{1,256}$"
_NAME = re.compile(NAME_PATTERN)
MAX_VALUE_BYTES = 64 * 1024
_CHECK = b"closedpaw-vault-check"
#: (done, total) after each re-wrapped data key during a rotation
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SecretInfo:
    """What listing shows: never a value."""

    name: str
    level: Level
    version: int
    versions: list[int]
    created_at: float
    updated_at: float
    created_by: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "level": str(self.level), "version": self.version,
                "versions": list(self.versions), "created_at": self.created_at,
                "updated_at": self.updated_at, "created_by": self.created_by}


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidRequest("name: 1-256 letters, digits, '_', '.', '-' or '/'")
    return name


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _engine_for(url: str) -> Engine:
    kwargs: dict[str, Any] = {"future": True}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            if not p.exists():
                os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
    elif url.startswith("postgresql"):
        kwargs["pool_pre_ping"] = True
    else:
        raise ConfigError(f"db_url: {url.split(':', 1)[0]!r} is not supported")
    try:
        engine = create_engine(url, **kwargs)
    except (SQLAlchemyError, ImportError, ValueError) as e:
        raise ConfigError(f"db_url: cannot use it: {e}") from None
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _describe(e: SQLAlchemyError) -> str:
    return " ".join(str(getattr(e, "orig", None) or e).split())[:300]


class Vault:
    """Secrets in the database at ``url`` (or on an existing ``engine``, e.g. the gate
    store's). Locked until :meth:`unlock`."""

    def __init__(self, url: str | None = None, *, engine: Engine | None = None) -> None:
        if (url is None) == (engine is None):
            raise ConfigError("Vault: give exactly one of url or engine")
        self._owns_engine = engine is None
        self.engine: Engine = engine if engine is not None else _engine_for(str(url))
        try:
            VaultBase.metadata.create_all(self.engine)
        except SQLAlchemyError as e:
            if self._owns_engine:
                self.engine.dispose()
            raise StoreError(f"vault database unreachable: {_describe(e)}") from None
        self._kek: bytes | None = None
        self._generation = -1
        self._lock = threading.Lock()
        #: knows every value this process decrypted or stored (all of them once unlocked);
        #: one object for the vault's lifetime, so filters holding it stay current
        self.redactor = Redactor()
        #: names of the secrets this process holds for itself (read as ``system`` through
        #: :meth:`resolver`: provider keys, channel tokens): :meth:`scoped` always covers them
        self.held: frozenset[str] = frozenset()
        self._held_lock = threading.Lock()
        self._seen: tuple[int, int] = (-1, -1)

    def close(self) -> None:
        self.lock()
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as s, s.begin():
                yield s
        except IntegrityError as e:
            raise InvalidRequest(f"conflicts with existing data: {_describe(e)}") from None
        except SQLAlchemyError as e:
            raise StoreError(f"database error: {_describe(e)}") from None

    # -- state -------------------------------------------------------------------------
    def _meta(self, s: Session) -> MetaRow:
        row = s.get(MetaRow, 1, populate_existing=True)
        if row is None:
            raise VaultNotInitialized("no vault in this database: run 'closedpaw vault init "
                                      "(--key-file PATH | --passphrase-stdin)'")
        return row

    @property
    def initialized(self) -> bool:
        with self._session() as s:
            return s.get(MetaRow, 1) is not None

    @property
    def locked(self) -> bool:
        return self._kek is None

    def status(self) -> dict[str, Any]:
        with self._session() as s:
            meta = s.get(MetaRow, 1)
            if meta is None:
                return {"initialized": False, "locked": True}
            n = s.scalar(select(func.count(func.distinct(SecretRow.name)))) or 0
            return {"initialized": True, "locked": self.locked, "kdf": meta.kdf,
                    "key_file": meta.key_file, "generation": meta.generation,
                    "secrets": int(n), "created_at": meta.created_at,
                    "rotated_at": meta.rotated_at}

    # -- init / unlock -------------------------------------------------------------------
    def init_passphrase(self, passphrase: str,
                        params: crypto.KdfParams | None = None) -> None:
        params = params or crypto.KdfParams()
        salt = os.urandom(16)
        kek = crypto.derive_key(passphrase, salt, params)
        self._init("argon2id", kek, salt=salt, params=params.__dict__, key_file=None)

    def init_key_file(self, path: Path) -> bool:
        """Use the key in ``path``, creating it (0600) when it does not exist. Returns True
        when a new key file was written."""
        path = path.absolute()
        if self.initialized:
            raise VaultError("a vault exists in this database already; 'closedpaw vault "
                             "rotate' changes its key")
        created = not path.exists()
        if created:
            crypto.write_key_file(path, crypto.new_key())
        kek = crypto.read_key_file(path)
        self._init("keyfile", kek, salt=None, params={}, key_file=str(path))
        return created

    def _init(self, kdf: str, kek: bytes, *, salt: bytes | None, params: dict[str, Any],
              key_file: str | None) -> None:
        vault_id = str(uuid.uuid4())
        with self._session() as s:
            if s.get(MetaRow, 1) is not None:
                raise VaultError("a vault exists in this database already; 'closedpaw vault "
                                 "rotate' changes its key")
            s.add(MetaRow(id=1, vault_id=vault_id, kdf=kdf, salt=salt,
                          params=json.dumps(params), key_file=key_file,
                          check_blob=crypto.seal(kek, _CHECK, self._check_aad(vault_id, 0)),
                          generation=0, created_at=time.time(), rotated_at=None))
        with self._lock:
            self._kek, self._generation = kek, 0

    @staticmethod
    def _check_aad(vault_id: str, generation: int) -> bytes:
        return crypto.aad_for("check", vault_id, "", "", generation)

    def _opens(self, meta: MetaRow, kek: bytes) -> bool:
        try:
            crypto.open_sealed(kek, meta.check_blob,
                               self._check_aad(meta.vault_id, meta.generation), "check")
            return True
        except SecretTampered:
            return False

    def unlock(self, passphrase: str | None = None, *, key_file: Path | None = None) -> None:
        """Open with the passphrase (``argon2id`` vaults) or the key file (``key_file``, else
        the one recorded at init). A wrong one raises :class:`VaultKeyInvalid` and leaves the
        vault locked. Once open, the redactor learns every stored value."""
        with self._session() as s:
            meta = self._meta(s)
            if meta.kdf == "argon2id":
                if passphrase is None:
                    raise VaultLocked("this vault is opened by a passphrase: unlock it with "
                                      "'--passphrase-stdin' or POST /api/vault/unlock")
                p = json.loads(meta.params)
                kek = crypto.derive_key(passphrase, meta.salt or b"",
                                        crypto.KdfParams(p["memory_kib"], p["iterations"],
                                                         p["lanes"]))
                if not self._opens(meta, kek):
                    raise VaultKeyInvalid("wrong passphrase: the vault stays locked")
            else:
                assert meta.key_file is not None
                kek = self._unlock_key_file(meta, key_file or Path(meta.key_file))
            gen = meta.generation
        with self._lock:
            self._kek, self._generation = kek, gen
        self.refresh_redactor(force=True)

    def _unlock_key_file(self, meta: MetaRow, path: Path) -> bytes:
        """The key in ``path``; after a rotation that committed but was cut off before it
        could move ``path.next`` into place, that one opens the vault: finish the move."""
        nxt = path.with_name(path.name + ".next")
        err: VaultKeyInvalid | None = None
        try:
            kek = crypto.read_key_file(path)
            if self._opens(meta, kek):
                if nxt.exists():   # a rotation that never committed: its key is useless
                    nxt.unlink()
                return kek
        except VaultKeyInvalid as e:
            err = e
        if nxt.exists():
            kek = crypto.read_key_file(nxt)
            if self._opens(meta, kek):
                os.replace(nxt, path)
                _fsync_dir(path.parent)
                return kek
        raise err or VaultKeyInvalid(f"key file {path} does not open this vault")

    def lock(self) -> None:
        with self._lock:
            self._kek, self._generation = None, -1

    def _key(self) -> tuple[bytes, int]:
        with self._lock:
            if self._kek is None:
                raise VaultLocked("the vault is locked: unlock it (key file: at server start; "
                                  "passphrase: 'closedpaw vault unlock' or POST "
                                  "/api/vault/unlock)")
            return self._kek, self._generation

    def _claim(self, s: Session, generation: int, *, bump: bool = False) -> MetaRow:
        """Compare-and-set the generation inside the transaction (serialises against a
        rotation in any process)."""
        n = s.execute(update(MetaRow).where(MetaRow.id == 1, MetaRow.generation == generation)
                      .values(generation=generation + (1 if bump else 0))
                      ).rowcount  # type: ignore[attr-defined]
        if n != 1:
            self.lock()
            raise VaultLocked("the vault's key was rotated by another process: unlock it "
                              "again")
        return self._meta(s)

    # -- secrets -------------------------------------------------------------------------
    def set(self, name: str, value: str, level: Level | str | None = None, *,
            by: str = "system") -> SecretInfo:
        """Store a new version of ``name``; earlier versions stay until :meth:`prune`.
        Without ``level`` a new version keeps the level of the current one (``standard``
        for a new secret): lowering a level is always explicit."""
        check_name(name)
        lv = (None if level is None else level if isinstance(level, Level)
              else parse_level(level))
        if not isinstance(value, str) or not value:
            raise InvalidRequest("value: must be a non-empty string")
        data = value.encode("utf-8")
        if len(data) > MAX_VALUE_BYTES:
            raise InvalidRequest(f"value: at most {MAX_VALUE_BYTES} bytes")
        kek, gen = self._key()
        with self._session() as s:
            meta = self._claim(s, gen)
            last = s.scalar(select(SecretRow).where(SecretRow.name == name)
                            .order_by(SecretRow.version.desc()).limit(1))
            version = (last.version if last is not None else 0) + 1
            if lv is None:
                lv = parse_level(last.level) if last is not None else Level.STANDARD
            dek = crypto.new_key()
            row = SecretRow(
                name=name, version=version, level=str(lv),
                wrapped_key=crypto.seal(kek, dek, crypto.aad_for(
                    "dek", meta.vault_id, name, str(lv), version)),
                ciphertext=crypto.seal(dek, data, crypto.aad_for(
                    "value", meta.vault_id, name, str(lv), version)),
                created_at=time.time(), created_by=by[:64])
            s.add(row)
            s.flush()
        self.redactor.add(name, value)
        return self.info(name)

    def _rows(self, s: Session, name: str) -> list[SecretRow]:
        return list(s.scalars(select(SecretRow).where(SecretRow.name == name)
                              .order_by(SecretRow.version)))

    def info(self, name: str) -> SecretInfo:
        check_name(name)
        with self._session() as s:
            rows = self._rows(s, name)
        if not rows:
            raise SecretNotFound(f"no secret named {name!r}")
        return _info(rows)

    def list(self) -> list[SecretInfo]:
        with self._session() as s:
            rows = list(s.scalars(select(SecretRow).order_by(SecretRow.name,
                                                              SecretRow.version)))
        by: dict[str, list[SecretRow]] = {}
        for r in rows:
            by.setdefault(r.name, []).append(r)
        return [_info(v) for _, v in sorted(by.items())]

    def _decrypt(self, kek: bytes, vault_id: str, row: SecretRow, *, learn: bool = True
                 ) -> str:
        what = f"secret {row.name!r} version {row.version}"
        dek = crypto.open_sealed(kek, row.wrapped_key, crypto.aad_for(
            "dek", vault_id, row.name, row.level, row.version), what)
        value = crypto.open_sealed(dek, row.ciphertext, crypto.aad_for(
            "value", vault_id, row.name, row.level, row.version), what).decode("utf-8")
        if learn and not self.redactor.knows(value):
            self.redactor.add(row.name, value)
        return value

    def get(self, name: str, *, role: str, version: int | None = None) -> str:
        """The value of ``name`` (its latest version unless ``version``) for a reader of
        ``role``; :class:`PermissionDenied` when the stored level is above that role."""
        value, _ = self.get_versioned(name, role=role, version=version)
        return value

    def get_versioned(self, name: str, *, role: str, version: int | None = None
                      ) -> tuple[str, SecretRow]:
        check_name(name)
        kek, _ = self._key()
        with self._session() as s:
            meta = self._meta(s)
            q = select(SecretRow).where(SecretRow.name == name)
            q = (q.where(SecretRow.version == version) if version is not None
                 else q.order_by(SecretRow.version.desc()).limit(1))
            row = s.scalar(q)
            if row is None:
                raise SecretNotFound(f"no secret named {name!r}" + (
                    f" with version {version}" if version is not None else ""))
            level = parse_level(row.level) if row.level in Level._value2member_map_ else None
            if level is None:
                raise SecretTampered(f"secret {name!r}: unknown stored level")
            if not may_read(role, level):
                raise PermissionDenied(f"secret {name!r} is {level}; role {role!r} may not "
                                       "read it")
            return self._decrypt(kek, meta.vault_id, row), row

    def delete(self, name: str) -> int:
        """Remove every version of ``name``; returns how many."""
        check_name(name)
        with self._session() as s:
            n = s.execute(delete(SecretRow).where(SecretRow.name == name)
                          ).rowcount  # type: ignore[attr-defined]
        if not n:
            raise SecretNotFound(f"no secret named {name!r}")
        return int(n)

    def prune(self, name: str | None = None, *, keep: int = 1) -> int:
        """Drop all but the newest ``keep`` versions (of ``name``, or of every secret)."""
        if keep < 1:
            raise InvalidRequest("keep: at least 1")
        removed = 0
        with self._session() as s:
            names = [check_name(name)] if name else list(
                s.scalars(select(SecretRow.name).distinct()))
            for n in names:
                versions = sorted(s.scalars(select(SecretRow.version)
                                            .where(SecretRow.name == n)), reverse=True)
                old = versions[keep:]
                if old:
                    removed += s.execute(delete(SecretRow).where(
                        SecretRow.name == n, SecretRow.version.in_(old))
                    ).rowcount  # type: ignore[attr-defined]
        return removed

    # -- rotation --------------------------------------------------------------------------
    def rotate(self, *, new_passphrase: str | None = None,
               params: crypto.KdfParams | None = None,
               progress: Progress | None = None) -> int:
        """Re-wrap every data key under a new master key, in one transaction: a crash at any
        point leaves either the old key or the new one working, never a mix. A key-file
        vault gets a fresh key (written to ``KEYFILE.next`` first, moved into place after the
        commit; unlocking finishes a move that was cut off). Returns the rows re-wrapped."""
        old_kek, gen = self._key()
        with self._session() as s:
            meta = self._meta(s)
            kdf = meta.kdf
            key_file = Path(meta.key_file) if meta.key_file else None
        salt: bytes | None = None
        nparams: dict[str, Any] = {}
        nxt: Path | None = None
        if kdf == "argon2id":
            if new_passphrase is None:
                raise InvalidRequest("a passphrase vault needs the new passphrase to rotate")
            kp = params or crypto.KdfParams()
            salt = os.urandom(16)
            new_kek = crypto.derive_key(new_passphrase, salt, kp)
            nparams = kp.__dict__
        else:
            assert key_file is not None
            new_kek = crypto.new_key()
            nxt = key_file.with_name(key_file.name + ".next")
            if nxt.exists():
                nxt.unlink()
            crypto.write_key_file(nxt, new_kek)
        try:
            with self._session() as s:
                meta = self._claim(s, gen, bump=True)
                rows = list(s.scalars(select(SecretRow).order_by(SecretRow.id)))
                for i, row in enumerate(rows, 1):
                    aad = crypto.aad_for("dek", meta.vault_id, row.name, row.level,
                                         row.version)
                    dek = crypto.open_sealed(old_kek, row.wrapped_key, aad,
                                             f"secret {row.name!r} version {row.version}")
                    row.wrapped_key = crypto.seal(new_kek, dek, aad)
                    s.flush()
                    if progress is not None:
                        progress(i, len(rows))
                meta.check_blob = crypto.seal(new_kek, _CHECK,
                                              self._check_aad(meta.vault_id, gen + 1))
                meta.rotated_at = time.time()
                if salt is not None:
                    meta.salt, meta.params = salt, json.dumps(nparams)
        except BaseException:
            if nxt is not None and nxt.exists():
                nxt.unlink()
            raise
        if nxt is not None and key_file is not None:
            os.replace(nxt, key_file)
            _fsync_dir(key_file.parent)
        with self._lock:
            self._kek, self._generation = new_kek, gen + 1
        return len(rows)

    # -- what other parts use ------------------------------------------------------------
    def resolver(self, role: str = "system") -> Callable[[str], str]:
        """``resolve("secret:NAME")`` (or ``"NAME"``) -> the value, read as ``role``: what
        providers get for ``api_key: secret:NAME``. Raises VaultLocked/SecretNotFound."""
        def resolve(ref: str) -> str:
            name = ref[len("secret:"):] if ref.startswith("secret:") else ref
            value = self.get(name, role=role)
            if role == "system" and name not in self.held:
                with self._held_lock:
                    self.held = self.held | {name}
            return value
        return resolve

    def scoped(self, names: Iterable[str] = ()) -> Redactor:
        """The redactor for what a principal authored or an action made from it: the named
        secrets (those the action was handed) and the ones this process holds for itself.

        Redacting every stored value there would be an oracle: a user who prints (or types,
        or has the model repeat) guesses sees which one turns into ``[secret:NAME]``. Text
        that no secret reached holds a value only if its author knew it; see docs/vault.md."""
        return self.redactor.only({*names, *self.held})

    def refresh_redactor(self, *, force: bool = False) -> bool:
        """Teach :attr:`redactor` every stored version's value when the table changed since
        the last look (a ``secret set`` by another process); a no-op while locked. Cheap when
        nothing changed (one aggregate query). Returns True when it re-read the values."""
        if self._kek is None:
            return False
        try:
            kek, _ = self._key()
        except VaultLocked:
            return False
        with self._session() as s:
            count, top = s.execute(select(func.count(SecretRow.id),
                                          func.coalesce(func.max(SecretRow.id), 0))).one()
            mark = (int(count), int(top))
            if not force and mark == self._seen:
                return False
            meta = self._meta(s)
            rows = list(s.scalars(select(SecretRow)))
            vid = meta.vault_id
        pairs = []
        for r in rows:
            try:
                pairs.append((r.name, self._decrypt(kek, vid, r, learn=False)))
            except SecretTampered:   # refused where it is read; nothing to learn here
                continue
        self.redactor.update(pairs)
        self._seen = mark
        return True

    def deliver(self, action_id: str, name: str, version: int, *, to: str, role: str) -> str:
        """Hand out the value an approved ``secret_read`` action read, once: a second call for
        the same action is refused (recorded in ``vault_reads``)."""
        value, _ = self.get_versioned(name, role=role, version=version)
        try:
            with self._session() as s:
                s.add(ReadRow(action_id=action_id, name=name, version=version,
                              delivered_to=to[:64], delivered_at=time.time()))
        except InvalidRequest:
            raise PermissionDenied(f"the value of action {action_id} was delivered already; "
                                   "submit a new secret_read") from None
        return value


def _info(rows: list[SecretRow]) -> SecretInfo:
    last = rows[-1]
    return SecretInfo(name=last.name, level=Level(last.level), version=last.version,
                      versions=[r.version for r in rows], created_at=rows[0].created_at,
                      updated_at=last.created_at, created_by=last.created_by)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
