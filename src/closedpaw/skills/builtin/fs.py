"""The built-in ``filesystem`` skill: list, read, write and search beneath directories the
user allowlisted (``CLOSEDPAW_FS_ROOTS``), on the host, for the gate.

A path is never checked as a string and then opened: it is matched to a root by whole path
components (``/srv/data2`` is not under ``/srv/data``), then the rest is resolved by the kernel
*beneath* an open descriptor of the root with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
RESOLVE_NO_MAGICLINKS)`` (Linux >= 5.6), or, where the kernel lacks it, by a walk of
``openat(O_NOFOLLOW)`` one component at a time. Either way a symbolic link anywhere on the
path, ``..`` leading out, or a link swapped in between a check and the use fails: there is no
check apart from the use. The file is first opened with ``O_PATH`` (no side effect even on a
FIFO or a device), checked with ``fstat`` (a regular file with one link: a hard link may be
another name of a file outside the root), and only then reopened for reading. Writes go to a
new file in the same directory which is renamed over the name, so they never write through a
link, a FIFO or a second name of another file.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from closedpaw.errors import InvalidRequest, PathRefused

__all__ = ["FS_OPS", "FileSystemSkill", "has_openat2"]

FS_OPS = ("list", "read", "write", "search")
_SYS_OPENAT2 = 437   # the same number on every architecture (asm-generic)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
_SNIFF = 8192


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_openat2_ok: bool | None = None


def _openat2(dirfd: int, path: str, flags: int, mode: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, _RESOLVE)
    fd = _libc.syscall(_SYS_OPENAT2, ctypes.c_int(dirfd), ctypes.c_char_p(os.fsencode(path)),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    return int(fd)


def has_openat2() -> bool:
    """Does this kernel have openat2 (ENOSYS otherwise)? Probed once."""
    global _openat2_ok
    if _openat2_ok is None:
        try:
            os.close(_openat2(-100, "/", os.O_PATH))   # AT_FDCWD; "/" is beneath nothing
            _openat2_ok = True
        except OSError as e:
            _openat2_ok = e.errno != errno.ENOSYS
    return _openat2_ok


def _walk_open(dirfd: int, rel: str, flags: int, mode: int = 0) -> int:
    """The fallback: one component at a time with O_NOFOLLOW; '..' is refused."""
    parts = [p for p in rel.split("/") if p and p != "."]
    if any(p == ".." for p in parts):
        raise OSError(errno.EXDEV, "'..' is refused", rel)
    cur = os.dup(dirfd)
    try:
        for p in parts[:-1]:
            nxt = os.open(p, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=cur)
            os.close(cur)
            cur = nxt
        last = parts[-1] if parts else "."
        return os.open(last, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=cur)
    finally:
        os.close(cur)


AuditFn = Callable[[str, dict[str, Any]], None]


class FileSystemSkill:
    """``roots``: allowlisted host directories (their real paths are used). ``audit(op,
    details)`` is called for every operation, allowed or refused."""

    def __init__(self, roots: Sequence[Path], *, max_bytes: int = 1024 * 1024,
                 max_entries: int = 1000, audit: AuditFn | None = None,
                 use_openat2: bool | None = None) -> None:
        self.roots = tuple(Path(os.path.realpath(r)) for r in roots)
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._audit = audit
        self.openat2 = has_openat2() if use_openat2 is None else use_openat2

    # -- entry point ---------------------------------------------------------------------
    def call(self, arguments: dict[str, Any]) -> dict[str, Any]:
        op = arguments.get("op")
        if op not in FS_OPS:
            raise InvalidRequest(f"arguments.op: must be one of {', '.join(FS_OPS)}")
        path = arguments.get("path")
        try:
            if op == "list":
                out = self.list(path)
            elif op == "read":
                out = self.read(path)
            elif op == "write":
                out = self.write(path, arguments.get("content"),
                                 arguments.get("encoding", "text"))
            else:
                out = self.search(path, arguments.get("pattern"))
        except PathRefused as e:
            self._log(op, {"path": str(path)[:4096], "outcome": "refused", "why": str(e)})
            raise
        self._log(op, {"path": str(path)[:4096], "outcome": "ok",
                       **{k: out[k] for k in ("bytes", "entries", "matches", "truncated")
                          if k in out and not isinstance(out[k], list)},
                       **({"entries": len(out["entries"])} if isinstance(out.get("entries"),
                                                                         list) else {}),
                       **({"matches": len(out["matches"])} if isinstance(out.get("matches"),
                                                                         list) else {})})
        return out

    def _log(self, op: str, details: dict[str, Any]) -> None:
        if self._audit is not None:
            self._audit(op, details)

    # -- resolution ----------------------------------------------------------------------
    def _locate(self, path: Any) -> tuple[Path, str]:
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path \
                or len(path) > 4096:
            raise PathRefused(f"{str(path)[:200]!r}: give an absolute path under one of the "
                              "allowlisted roots")
        if ".." in path.split("/"):
            raise PathRefused(f"{path}: '..' is refused")
        parts = Path(path).parts
        if not self.roots:
            raise PathRefused("the filesystem skill has no roots: set CLOSEDPAW_FS_ROOTS")
        for root in self.roots:
            if parts[:len(root.parts)] == root.parts:
                return root, "/".join(parts[len(root.parts):])
        raise PathRefused(f"{path} is outside every allowlisted root "
                          f"({', '.join(map(str, self.roots))})")

    def _open(self, path: str, flags: int, mode: int = 0) -> tuple[int, Path, str]:
        root, rel = self._locate(path)
        rfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if self.openat2:
                fd = _openat2(rfd, rel or ".", flags, mode)
            else:
                fd = _walk_open(rfd, rel, flags, mode)
        except OSError as e:
            raise PathRefused(f"{path}: {_why(e)}") from None
        finally:
            os.close(rfd)
        return fd, root, rel

    # -- operations ----------------------------------------------------------------------
    def list(self, path: Any) -> dict[str, Any]:
        fd, _, _ = self._open(path, os.O_RDONLY | os.O_DIRECTORY)
        entries: list[dict[str, Any]] = []
        truncated = False
        try:
            with os.scandir(fd) as it:
                for e in it:
                    if len(entries) >= self.max_entries:
                        truncated = True
                        break
                    st = e.stat(follow_symlinks=False)
                    entries.append({"name": e.name, "type": _type(st.st_mode),
                                    "size": st.st_size})
        finally:
            os.close(fd)
        entries.sort(key=lambda x: x["name"])
        return {"path": path, "entries": entries, "truncated": truncated}

    def _reg_fd(self, path: str, fd: int) -> os.stat_result:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PathRefused(f"{path}: a {_type(st.st_mode)}, not a regular file")
        if st.st_nlink > 1:
            raise PathRefused(f"{path}: has {st.st_nlink} hard links (it may be another name "
                              "of a file outside the root)")
        return st

    def read(self, path: Any) -> dict[str, Any]:
        pfd, _, _ = self._open(path, os.O_PATH)
        try:
            st = self._reg_fd(path, pfd)
            # reopen the very inode checked above (no side effect happened on O_PATH)
            fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY
                         | os.O_NONBLOCK)
        finally:
            os.close(pfd)
        chunks: list[bytes] = []
        got = 0
        try:
            while got <= self.max_bytes:
                more = os.read(fd, min(1 << 20, self.max_bytes + 1 - got))
                if not more:
                    break
                chunks.append(more)
                got += len(more)
            data = b"".join(chunks)
        finally:
            os.close(fd)
        truncated = len(data) > self.max_bytes
        data = data[:self.max_bytes]
        out: dict[str, Any] = {"path": path, "size": st.st_size, "bytes": len(data),
                               "truncated": truncated}
        text = _text(data)
        if text is None:
            out.update(binary=True, content_base64=base64.b64encode(data).decode())
        else:
            out.update(binary=False, content=text)
        return out

    def write(self, path: Any, content: Any, encoding: Any = "text") -> dict[str, Any]:
        if encoding == "text" and isinstance(content, str):
            data = content.encode()
        elif encoding == "base64" and isinstance(content, str):
            try:
                data = base64.b64decode(content, validate=True)
            except ValueError:
                raise InvalidRequest("arguments.content: not valid base64") from None
        else:
            raise InvalidRequest("arguments.content: a string, with encoding text or base64")
        if len(data) > self.max_bytes:
            raise PathRefused(f"{path}: {len(data)} bytes is over the limit of "
                              f"{self.max_bytes}")
        root, rel = self._locate(path)
        if not rel:
            raise PathRefused(f"{path}: is a root directory")
        parent, _, name = rel.rpartition("/")
        dfd, _, _ = self._open(str(root / parent) if parent else str(root),
                               os.O_PATH | os.O_DIRECTORY)
        tmp = f".closedpaw-{os.urandom(6).hex()}.tmp"
        try:
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    raise PathRefused(f"{path}: is a directory")
            except FileNotFoundError:
                pass
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644, dir_fd=dfd)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                with _quiet():
                    os.unlink(tmp, dir_fd=dfd)
                raise
        except OSError as e:
            raise PathRefused(f"{path}: {_why(e)}") from None
        finally:
            os.close(dfd)
        return {"path": path, "bytes": len(data)}

    def search(self, path: Any, pattern: Any) -> dict[str, Any]:
        if not isinstance(pattern, str) or not (1 <= len(pattern) <= 1000):
            raise InvalidRequest("arguments.pattern: a literal text of 1 to 1000 characters")
        fd, _, _ = self._open(path, os.O_RDONLY | os.O_DIRECTORY)
        matches: list[dict[str, Any]] = []
        visited = 0
        truncated = False
        needle = pattern.encode()
        try:
            for dirpath, _dirs, files, dfd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
                for name in sorted(files):
                    visited += 1
                    if visited > self.max_entries or len(matches) >= self.max_entries:
                        truncated = True
                        break
                    rel = os.path.normpath(os.path.join(dirpath, name))
                    data = self._read_small(name, dfd)
                    if data is None:
                        continue
                    text = _text(data)
                    if text is None or needle not in data:
                        continue
                    for i, line in enumerate(text.splitlines(), 1):
                        if pattern in line:
                            matches.append({"path": f"{path.rstrip('/')}/{rel}", "line": i,
                                            "text": line[:500]})
                            if len(matches) >= self.max_entries:
                                break
                if truncated:
                    break
        finally:
            os.close(fd)
        return {"path": path, "pattern": pattern, "matches": matches, "truncated": truncated}

    def _read_small(self, name: str, dfd: int) -> bytes | None:
        """A regular single-link file's first max_bytes, or None (links, FIFOs, devices are
        skipped, never opened for reading)."""
        try:
            pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except OSError:
            return None
        try:
            st = os.fstat(pfd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
                return None
            fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        finally:
            os.close(pfd)
        try:
            return os.read(fd, self.max_bytes)
        finally:
            os.close(fd)


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def _text(data: bytes) -> str | None:
    """Text, or None for binary data (a NUL byte in the first 8 KiB, or not UTF-8)."""
    if b"\0" in data[:_SNIFF]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start >= len(data) - 3:   # a character cut by the size limit
            return data[:e.start].decode("utf-8", "replace")
        return None


def _type(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "fifo"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "device"),
                       (stat.S_ISBLK, "device")):
        if test(mode):
            return name
    return "other"


def _why(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "a symbolic link on the path is refused"
    if e.errno == errno.EXDEV:
        return "resolves outside its root"
    if e.errno == errno.ENOENT:
        return "no such file or directory"
    if e.errno == errno.ENOTDIR:
        return "a component is not a directory (or is a link)"
    return e.strerror or str(e)
