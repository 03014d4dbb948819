"""AuditLog: an append-only JSONL file, one HMAC-chained entry per line, fsync'd per entry.

Files in the audit directory (created 0700):

- ``audit.key``   32 random bytes, mode 0600, created once; a key file readable by others is
                  refused (the log could be forged by whoever reads it).
- ``audit.jsonl`` the entries being written (the active segment). Opened ``O_APPEND`` for every
                  write (so a store made read-only fails the next write at once) under an
                  exclusive ``flock``, shared by every process that writes (server, CLI).
- ``audit.<first seq>.jsonl`` sealed segments: the active one is renamed once it passes
                  ``segment_bytes``; the chain continues across them. Reading a page starts at
                  the segment holding it (the names are the index), never at the beginning.
- ``audit.head``  the last entry's seq and hash, HMAC'd, replaced atomically after each append
                  of a log with no database anchor: it makes deleting entries at the *end*
                  detectable, which a chain alone is not. A log the gate anchors in its
                  database (:attr:`AuditLog.anchor`, moved in the transaction of each change)
                  needs no head: the anchor is the stronger record (a copy of the head file
                  put back with an older log would match it; the anchor lives elsewhere), so
                  the head is neither written nor checked there, two fsyncs fewer per entry.

Any failure to write raises :class:`~closedpaw.errors.AuditWriteError`; callers refuse the act
they were about to record (fail closed).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from closedpaw.audit.events import GENESIS_HASH, AuditEntry, AuditEvent, canonical_json
from closedpaw.errors import AuditChainBroken, AuditError, AuditWriteError
from closedpaw.keyfile import PrivateFileRefused, create_private, load_raw_key

__all__ = ["Anchor", "AuditLog", "VerifyReport"]


class Anchor(Protocol):
    """Where the latest seq and entry hash are kept outside the log (the gate's database):
    ``set_anchor`` runs in the transaction of the change the entry records, when there is one."""

    def anchor(self) -> tuple[int, str] | None: ...

    def set_anchor(self, seq: int, entry_hash: str) -> None: ...



@dataclass(frozen=True)
class VerifyReport:
    """Outcome of :meth:`AuditLog.verify`. ``first_bad_seq`` is None when intact."""

    ok: bool
    entries: int
    last_seq: int
    first_bad_seq: int | None = None
    problem: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "last_seq": self.last_seq,
                "first_bad_seq": self.first_bad_seq, "problem": self.problem}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AuditLog:
    """The audit log in ``directory``. Thread- and process-safe appends."""

    def __init__(self, directory: Path, *, create: bool = True,
                 segment_bytes: int = 64 * 1024 * 1024) -> None:
        self.dir = Path(directory)
        self.segment_bytes = segment_bytes
        self.path = self.dir / "audit.jsonl"
        self.head_path = self.dir / "audit.head"
        self.key_path = self.dir / "audit.key"
        self._lock = threading.Lock()
        #: set by the composition root (the gate: its vault's redactor): applied to every
        #: entry's details before it is written, so no secret value reaches the log
        self.redact: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        #: set by the gate: the database anchor the writer and verify check against
        self.anchor: Anchor | None = None
        try:
            if create:
                self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._key = self._load_key(create)
        except OSError as e:
            raise AuditWriteError(f"audit directory {self.dir} is not usable: {e.strerror}; "
                                  "check it exists and is writable") from None

    # -- key -------------------------------------------------------------------------------
    def _load_key(self, create: bool) -> bytes:
        try:
            return load_raw_key(self.key_path, create=create)
        except PrivateFileRefused as e:
            if e.missing:
                raise AuditError(f"no audit key at {self.key_path}: is this a ClosedPaw data "
                                 "directory?") from None
            raise AuditError(f"unusable audit key: {e}") from None

    def _mac(self, body: dict[str, Any]) -> str:
        return hmac.new(self._key, canonical_json(body).encode(), hashlib.sha256).hexdigest()

    # -- append -------------------------------------------------------------------------
    def append(self, event: AuditEvent, *, principal: str, action_id: str | None = None,
               details: dict[str, Any] | None = None) -> AuditEntry:
        """Write one entry durably, or raise :class:`AuditWriteError`."""
        return self.append_many([(event, principal, action_id, details)])[0]

    def append_many(self, items: Sequence[tuple[AuditEvent, str, str | None,
                                                 dict[str, Any] | None]]) -> list[AuditEntry]:
        """Write consecutive entries ``(event, principal, action_id, details)`` durably, in
        order, with one write and one fsync (and one head and anchor update); on failure
        raise :class:`AuditWriteError`. A write cut by a crash leaves a torn last line, as
        one entry's would (:meth:`check_tail` and ``closedpaw audit repair`` handle it). For
        entries that record one step with nothing done between them (an action submitted and
        approved by a rule): each is as durable before the caller goes on as with
        :meth:`append` one by one, for a third of the syncs."""
        if not items:
            return []
        with self._lock:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600)
            except OSError as e:
                raise AuditWriteError(f"cannot open {self.path} for appending: {e.strerror}; "
                                      "the action was refused") from None
            try:
                fd = self._lock_active(fd)
                seq, prev = self._tail()
                self._check_anchor(seq, prev)
                entries: list[AuditEntry] = []
                for event, principal, action_id, details in items:
                    body = AuditEntry(seq=seq + 1, ts=_now(), principal=principal,
                                      action_id=action_id, event=str(event),
                                      details=(self.redact(details) if self.redact and details
                                               else details or {}), prev_hash=prev).body()
                    entry = AuditEntry(**body, entry_hash=self._mac(body))
                    entries.append(entry)
                    seq, prev = entry.seq, entry.entry_hash
                data = b"".join((canonical_json(e.to_dict()) + "\n").encode() for e in entries)
                if os.write(fd, data) != len(data):
                    raise OSError(28, "short write")
                os.fsync(fd)
                if self.anchor is None:
                    self._write_head(entries[-1])
            except (OSError, ValueError) as e:
                msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                raise AuditWriteError(f"cannot write to the audit log: {msg}; the action was "
                                      "refused") from None
            finally:
                os.close(fd)  # releases the flock
        if self.anchor is not None:
            # outside the locks (the anchor row may wait for another transaction); it only
            # moves forward, so commits in any order leave it at the highest seq
            self.anchor.set_anchor(entries[-1].seq, entries[-1].entry_hash)
        return entries

    def _lock_active(self, fd: int) -> int:
        """flock ``fd``; if another writer sealed that file meanwhile, take the new active one.
        Seal the active segment (rename it) when it passed ``segment_bytes``. Returns the fd
        to append to, locked."""
        for _ in range(100):
            fcntl.flock(fd, fcntl.LOCK_EX)
            st = os.fstat(fd)
            try:
                now = os.stat(self.path)
            except FileNotFoundError:
                now = None
            if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                os.close(fd)   # sealed (or removed) meanwhile: the name decides
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600)
                continue
            if st.st_size < self.segment_bytes:
                return fd
            first = self._first_seq(self.path)
            if first is None:
                return fd      # unreadable first line: verify will say so; keep appending
            os.rename(self.path, self.dir / f"audit.{first:012d}.jsonl")
            _fsync_dir(self.dir)
        raise OSError(11, "could not settle on the active audit segment")

    @staticmethod
    def _first_seq(path: Path) -> int | None:
        try:
            with open(path, "rb") as f:
                return AuditEntry.from_dict(json.loads(f.readline())).seq
        except (OSError, ValueError):
            return None

    def segments(self) -> list[Path]:
        """Sealed segments oldest first, then the active one (when it exists)."""
        sealed = sorted(p for p in self.dir.glob("audit.*.jsonl")
                        if p.name[6:-6].isdigit())
        return sealed + ([self.path] if self.path.exists() else [])

    def check_tail(self) -> None:
        """Raise :class:`AuditWriteError` when the next append would be refused (a torn
        tail, or a log behind its database anchor): what ``closedpaw serve`` checks first."""
        try:
            seq, prev = self._tail()
            self._check_anchor(seq, prev)
        except (OSError, ValueError) as e:
            msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise AuditWriteError(f"the audit log cannot be appended to: {msg}") from None

    def _check_anchor(self, seq: int, last_hash: str) -> None:
        """Refuse to append when the file's tail is behind the anchor or disagrees with it:
        the log was cut, deleted or rolled back; appending would hide that."""
        if self.anchor is None:
            return
        try:
            a = self.anchor.anchor()
        except Exception as e:  # the store's errors: no anchor, no entry (fail closed)
            raise ValueError(f"cannot read the audit anchor: {e}") from None
        if a is None:
            return
        aseq, ahash = a
        if seq < aseq:
            raise ValueError(f"the log ends at seq {seq} but the database anchors seq {aseq}: "
                             f"entries {seq + 1}..{aseq} are missing (truncated, deleted or "
                             "rolled back); run 'closedpaw audit verify'")
        h = last_hash if seq == aseq else self._hash_of(aseq)
        if h is None or not hmac.compare_digest(h, ahash):
            raise ValueError(f"entry {aseq} does not match the database anchor (the log was "
                             "replaced or rolled back); run 'closedpaw audit verify'")

    def _hash_of(self, seq: int, *, window: int = 1 << 20) -> str | None:
        """entry_hash of entry ``seq`` if it is among the last ``window`` bytes of the last
        two segments."""
        for path in reversed(self.segments()[-2:]):
            try:
                f = open(path, "rb")  # noqa: SIM115
            except FileNotFoundError:
                continue
            with f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - window))
                for raw in f.read().split(b"\n"):
                    with contextlib.suppress(ValueError):
                        e = AuditEntry.from_dict(json.loads(raw))
                        if e.seq == seq:
                            return e.entry_hash
        return None

    def _tail(self) -> tuple[int, str]:
        """seq and hash of the last entry (read from the file: another process may have
        appended since)."""
        last = self._last_line()
        if last is None:
            return 0, GENESIS_HASH
        if not last.endswith(b"\n"):
            raise ValueError("the log ends with a torn entry; 'closedpaw audit repair' moves it "
                             "aside")
        try:
            e = AuditEntry.from_dict(json.loads(last))
        except ValueError as err:
            raise ValueError(f"the last entry is unreadable ({err}); run "
                             "'closedpaw audit verify'") from None
        return e.seq, e.entry_hash

    def last_seq(self) -> int:
        """The seq of the last stored entry (0 when empty, -1 when it is unreadable)."""
        try:
            last = self._last_line()
            return AuditEntry.from_dict(json.loads(last)).seq if last else 0
        except (ValueError, OSError):
            return -1

    def _last_line(self) -> bytes | None:
        """The last line of the active segment, or of the newest sealed one when the active
        one is empty or missing (just sealed)."""
        for path in reversed(self.segments()):
            line = self._last_line_of(path)
            if line is not None:
                return line
        return None

    @staticmethod
    def _last_line_of(path: Path) -> bytes | None:
        try:
            f = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return None
        with f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return None
            block = 4096
            pos = size
            buf = b""
            while pos > 0:
                step = min(block, pos)
                pos -= step
                f.seek(pos)
                buf = f.read(step) + buf
                if buf.count(b"\n") >= 2 or pos == 0:
                    break
            lines = buf.split(b"\n")
            if buf.endswith(b"\n"):
                return lines[-2] + b"\n"
            return lines[-1]

    def _write_head(self, entry: AuditEntry) -> None:
        body = {"seq": entry.seq, "entry_hash": entry.entry_hash}
        data = canonical_json({**body, "mac": self._mac(body)}).encode()
        tmp = self.dir / f".audit.head.{os.getpid()}.{threading.get_ident()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.head_path)
        _fsync_dir(self.dir)

    def _read_head(self) -> tuple[int, str] | None:
        try:
            raw = self.head_path.read_bytes()
        except FileNotFoundError:
            return None
        d = json.loads(raw)
        if not isinstance(d, dict) or set(d) != {"seq", "entry_hash", "mac"}:
            raise ValueError("head record malformed")
        body = {"seq": d["seq"], "entry_hash": d["entry_hash"]}
        if not hmac.compare_digest(self._mac(body), str(d["mac"])):
            raise ValueError("head record fails its HMAC")
        return int(d["seq"]), str(d["entry_hash"])

    # -- read ------------------------------------------------------------------------------
    def _lines(self, after_seq: int = 0) -> Iterator[bytes]:
        """Lines of every segment in order, starting with the one that holds
        ``after_seq + 1`` (segment names carry their first seq)."""
        segs = self.segments()
        start = 0
        for i, p in enumerate(segs):
            if p != self.path and int(p.name[6:-6]) <= after_seq + 1:
                start = i
        for p in segs[start:]:
            try:
                f: IO[bytes] = open(p, "rb")  # noqa: SIM115
            except FileNotFoundError:
                continue
            with f:
                yield from f

    def entries(self, *, after_seq: int = 0, limit: int | None = None) -> list[AuditEntry]:
        """Entries with seq > ``after_seq``, oldest first (unverified; see :meth:`verify`).
        Reads from the segment holding ``after_seq + 1`` on, and stops at ``limit``."""
        out: list[AuditEntry] = []
        for raw in self._lines(after_seq):
            with contextlib.suppress(ValueError):
                e = AuditEntry.from_dict(json.loads(raw))
                if e.seq > after_seq:
                    out.append(e)
                    if limit is not None and len(out) >= limit:
                        break
        return out

    def verify(self) -> VerifyReport:
        """Check every entry: parseable, seq consecutive from 1, chained to the previous
        hash, HMAC valid; then that the database anchor (or, for a log with none, the head
        record) matches (nothing cut off the end, no older copy put back)."""
        expected = 1
        prev = GENESIS_HASH
        count = 0

        def bad(seq: int, problem: str) -> VerifyReport:
            return VerifyReport(False, count, expected - 1, seq, problem)

        try:
            head = self._read_head() if self.anchor is None else None
        except (ValueError, TypeError) as err:
            return bad(1, f"head record: {err}")
        try:
            anchor = self.anchor.anchor() if self.anchor is not None else None
        except Exception as err:
            return bad(1, f"cannot read the database anchor: {err}")
        anchor_hash_seen: str | None = None
        head_hash_seen: str | None = None
        for raw in self._lines():
            if not raw.endswith(b"\n"):
                return bad(expected, "torn entry at the end of the log")
            try:
                e = AuditEntry.from_dict(json.loads(raw))
            except ValueError as err:
                return bad(expected, f"unreadable entry: {err}")
            if e.seq != expected:
                return bad(min(e.seq, expected),
                           f"expected seq {expected}, found {e.seq} (deleted or reordered)")
            if e.prev_hash != prev:
                return bad(e.seq, "prev_hash does not match the previous entry "
                           "(deleted or reordered)")
            if not hmac.compare_digest(self._mac(e.body()), e.entry_hash):
                return bad(e.seq, "entry_hash does not match its content (edited, or written "
                           "without the key)")
            prev = e.entry_hash
            if head is not None and e.seq == head[0]:
                head_hash_seen = e.entry_hash
            if anchor is not None and e.seq == anchor[0]:
                anchor_hash_seen = e.entry_hash
            expected += 1
            count += 1
        if anchor is not None and anchor[0] > count:
            return bad(count + 1, f"entries {count + 1}..{anchor[0]} are missing: the log was "
                       f"truncated, deleted or rolled back (the database anchors seq "
                       f"{anchor[0]})")
        if anchor is not None and anchor[0] > 0 and anchor_hash_seen != anchor[1]:
            return bad(anchor[0], "entry does not match the database anchor (the log was "
                       "replaced or rolled back)")
        if head is None:
            if count and self.anchor is None:
                return bad(1, "head record missing")
        elif head[0] > count:
            return bad(count + 1, f"entries {count + 1}..{head[0]} were deleted from the end")
        elif head[0] > 0 and head_hash_seen != head[1]:
            return bad(head[0], "entry does not match the head record")
        return VerifyReport(True, count, count)

    def verify_or_raise(self) -> VerifyReport:
        r = self.verify()
        if not r.ok:
            assert r.first_bad_seq is not None
            raise AuditChainBroken(r.first_bad_seq, r.problem)
        return r

    def repair(self) -> dict[str, Any] | None:
        """Move a torn tail (bytes after the last complete line) aside to
        ``torn-<time>.bin`` and record that in the log; complete entries are never touched.
        Returns what was done, or None when the tail was whole."""
        with self._lock:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                pos, tail = size, b""
                while pos > 0:
                    step = min(65536, pos)
                    pos -= step
                    tail = os.pread(fd, step, pos) + tail
                    if b"\n" in tail:
                        break
                cut = pos + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
                if cut == size:
                    return None
                torn = os.pread(fd, size - cut, cut)
                aside = self.dir / f"torn-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}.bin"
                if not create_private(aside, torn):
                    raise AuditError(f"{aside} already exists; run the repair again")
                os.ftruncate(fd, cut)
                os.fsync(fd)
            finally:
                os.close(fd)
        done = {"torn_bytes": len(torn), "moved_to": aside.name, "kept_bytes": cut}
        self.append(AuditEvent.AUDIT_REPAIRED, principal="system", details=done)
        return done

    def export(self, out: IO[str]) -> int:
        """Write every stored line as JSONL to ``out``; returns how many."""
        n = 0
        for raw in self._lines():
            out.write(raw.decode("utf-8", "replace").rstrip("\n") + "\n")
            n += 1
        return n
