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

    def exhausted(self, key: str) -> bool:
        """True when ``key`` has no request left right now (nothing is consumed)."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            return min(self.burst, tokens + (now - last) * self.rate) < 1.0

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
class Summaries:
    """Counts of refusals (auth failures, 429s) per source, taken out once a period as one
    bounded summary: what the audit log records instead of one entry per request."""

    MAX_REASONS = 20

    def __init__(self, *, max_sources: int = 1000) -> None:
        self._max = max_sources
        self._counts: dict[str, dict[str, int]] = {}
        self._dropped = 0
        self._lock = threading.Lock()

    def add(self, source: str, reason: str) -> None:
        with self._lock:
            c = self._counts.get(source)
            if c is None:
                if len(self._counts) >= self._max:
                    self._dropped += 1
                    return
                c = self._counts[source] = {}
            if reason not in c and len(c) >= self.MAX_REASONS:
                reason = "other"   # a source cannot grow its entry without bound either
            c[reason] = c.get(reason, 0) + 1

    def take(self) -> tuple[dict[str, dict[str, int]], int]:
        """The counts since the last take, and how many refusals came from sources over the
        cap (counted, not itemised)."""
        with self._lock:
            out, dropped = self._counts, self._dropped
            self._counts, self._dropped = {}, 0
            return out, dropped

