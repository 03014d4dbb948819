"""Private files on the host (keys): created once with mode 0600, never overwritten, fsync'd
with their directory; read only when they are a regular file, not a link, with no group or
other permission bits (and, when asked, owned by us).

The audit log, the gate and the vault each keep a key this way. They raise their own error
(:class:`~closedpaw.errors.AuditError`, ``ConfigError``, ``VaultKeyInvalid``) with the text of
the :class:`PrivateFileRefused` raised here, so the rule lives in one place.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

__all__ = ["KEY_BYTES", "PrivateFileRefused", "create_private", "load_raw_key",
           "read_private"]

KEY_BYTES = 32


class PrivateFileRefused(Exception):
    """Why a private file could not be used; ``missing`` when it does not exist."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def _fsync_dir(path: Path) -> None:
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def create_private(path: Path, data: bytes) -> bool:
    """Create ``path`` (mode 0600, ``O_EXCL``, no link followed) holding ``data``, durably.

    Returns False, writing nothing, when the file already exists (another process may have
    made it meanwhile: the caller reads theirs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(path.parent)
    return True


def read_private(path: Path, limit: int, *, owned: bool = False) -> bytes:
    """Up to ``limit`` bytes of ``path``, refused unless it is a private regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PrivateFileRefused(f"{path} does not exist", missing=True) from None
    except OSError as e:
        raise PrivateFileRefused(f"cannot read {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PrivateFileRefused(f"{path} is not a regular file")
        if st.st_mode & 0o077:
            raise PrivateFileRefused(f"{path} has mode {stat.S_IMODE(st.st_mode):04o}, which "
                                     f"lets others read it; run 'chmod 600 {path}'")
        if owned and st.st_uid != os.geteuid():
            raise PrivateFileRefused(f"{path} is owned by uid {st.st_uid}, not by us "
                                     f"(uid {os.geteuid()})")
        return os.read(fd, limit)
    finally:
        os.close(fd)


def load_raw_key(path: Path, *, create: bool) -> bytes:
    """The raw :data:`KEY_BYTES`-byte key in ``path``, made from the system's CSPRNG when
    missing and ``create``."""
    if create and not path.exists():
        create_private(path, secrets.token_bytes(KEY_BYTES))
    key = read_private(path, KEY_BYTES + 1)
    if len(key) != KEY_BYTES:
        raise PrivateFileRefused(f"{path} is not a {KEY_BYTES}-byte key")
    return key
