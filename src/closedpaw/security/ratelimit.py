"""A token-bucket rate limiter per key (principal name, or client address for failures)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["RateLimiter", "rate_key"]


class RateLimiter:
    """``per_minute`` requests per key, with a burst of the same size. ``hit`` returns 0 when
    allowed, else the seconds to wait."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(per_minute)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> float:
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._remember(key, tokens - 1.0, now)
                return 0.0
            self._remember(key, tokens, now)
            return max(1.0, math.ceil((1.0 - tokens) / self.rate))

    def _remember(self, key: str, tokens: float, now: float) -> None:
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            # forget full buckets first: they carry no state worth keeping
            for k in [k for k, (t, _) in self._buckets.items() if t >= self.burst][:1000]:
                del self._buckets[k]
        self._buckets[key] = (tokens, now)


def rate_key(principal: str, *, channel: str | None = None,
             channel_user: str | None = None) -> str:
    """The bucket of one caller, never a global one: ``principal:NAME`` for API callers;
    ``channel:CHANNEL:USER`` for a user reaching the assistant through a channel adapter (one
    noisy chat user cannot use up the limit of everyone behind the same bot principal). A
    limit hit is answered with 429 (or the channel's equivalent), never with a raised risk
    level."""
    if channel is not None or channel_user is not None:
        if not channel or not channel_user:
            raise ValueError("rate_key: a channel needs both its name and the user's id")
        return f"channel:{channel}:{channel_user}"
    if not principal:
        raise ValueError("rate_key: empty principal")
    return f"principal:{principal}"
