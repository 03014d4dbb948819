"""Authentication material, key files, rate limits and refusal summaries."""

from closedpaw.security.keys import load_key, mac
from closedpaw.security.principal import Principal
from closedpaw.security.ratelimit import RateLimiter, Summaries, rate_key
from closedpaw.security.tokens import hash_token, new_token, token_looks_valid

__all__ = ["Principal", "RateLimiter", "Summaries", "hash_token", "load_key", "mac",
           "new_token", "rate_key", "token_looks_valid"]
