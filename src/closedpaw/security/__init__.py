"""Authentication material and rate limiting (pure; no I/O)."""

from closedpaw.security.principal import Principal
from closedpaw.security.ratelimit import RateLimiter, rate_key
from closedpaw.security.tokens import hash_token, new_token, token_looks_valid

__all__ = ["Principal", "RateLimiter", "hash_token", "new_token", "rate_key",
           "token_looks_valid"]
