"""Secret keys kept as files: 32 random bytes, mode 0600, created once; a key file readable
by others (or not a regular file) is refused."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from closedpaw.errors import ConfigError

__all__ = ["KEY_BYTES", "load_key", "mac"]

KEY_BYTES = 32


def load_key(path: Path, *, create: bool = True) -> bytes:
    """The key in ``path`` (made with mode 0600 when missing and ``create``)."""
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            fd = -1   # another process made it meanwhile: read theirs
        if fd >= 0:
            try:
                os.write(fd, secrets.token_bytes(KEY_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
            dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise ConfigError(f"no key at {path}: is this a ClosedPaw data directory?") from None
    except OSError as e:
        raise ConfigError(f"cannot read the key {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
            raise ConfigError(f"{path} has mode {stat.S_IMODE(st.st_mode):o}; it must be a "
                              f"regular file with mode 600 (chmod 600 {path})")
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{path} is not a {KEY_BYTES}-byte key")
    return key


def mac(key: bytes, *parts: str) -> str:
    """HMAC-SHA256 over ``parts`` joined unambiguously (each length-prefixed)."""
    msg = b"".join(f"{len(p.encode())}:".encode() + p.encode() for p in parts)
    return hmac.new(key, msg, hashlib.sha256).hexdigest()
