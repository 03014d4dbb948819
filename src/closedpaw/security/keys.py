"""Secret keys kept as files: 32 random bytes, mode 0600, created once; a key file readable
by others (or not a regular file) is refused."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from closedpaw.errors import ConfigError
from closedpaw.keyfile import KEY_BYTES, PrivateFileRefused, load_raw_key

__all__ = ["KEY_BYTES", "load_key", "mac"]


def load_key(path: Path, *, create: bool = True) -> bytes:
    """The key in ``path`` (made with mode 0600 when missing and ``create``)."""
    try:
        return load_raw_key(path, create=create)
    except PrivateFileRefused as e:
        if e.missing:
            raise ConfigError(f"no key at {path}: is this a ClosedPaw data directory?") \
                from None
        raise ConfigError(f"unusable key: {e}") from None


def mac(key: bytes, *parts: str) -> str:
    """HMAC-SHA256 over ``parts`` joined unambiguously (each length-prefixed)."""
    msg = b"".join(f"{len(p.encode())}:".encode() + p.encode() for p in parts)
    return hmac.new(key, msg, hashlib.sha256).hexdigest()
