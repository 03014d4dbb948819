"""Bearer tokens: 256 random bits, stored only as their SHA-256 (a fast hash is right for
high-entropy secrets: there is nothing to brute-force)."""

from __future__ import annotations

import hashlib
import re
import secrets

__all__ = ["hash_token", "new_token", "token_looks_valid"]

PREFIX = "cpw_"
_SHAPE = re.compile(r"^cpw_[A-Za-z0-9_\-]{43}$")


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def token_looks_valid(token: str) -> bool:
    return _SHAPE.fullmatch(token) is not None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
