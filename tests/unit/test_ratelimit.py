"""Rate limits: one bucket per principal and per channel user, never a global key."""

from __future__ import annotations

import pytest

from closedpaw.security import RateLimiter, rate_key


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_keys_are_per_principal_and_per_channel_user() -> None:
    assert rate_key("alice") == "principal:alice"
    assert rate_key("bot", channel="telegram", channel_user="42") == "channel:telegram:42"
    assert rate_key("bot", channel="telegram", channel_user="43") != rate_key(
        "bot", channel="telegram", channel_user="42")
    assert rate_key("bot", channel="matrix", channel_user="42") != rate_key(
        "bot", channel="telegram", channel_user="42")
    for bad in ({"channel": "telegram"}, {"channel_user": "42"},
                {"channel": "", "channel_user": "42"}):
        with pytest.raises(ValueError):
            rate_key("bot", **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        rate_key("")


def test_one_user_exhausting_a_bucket_leaves_the_others_alone() -> None:
    clock = Clock()
    lim = RateLimiter(3, clock=clock)
    noisy = rate_key("bot", channel="discord", channel_user="spammer")
    quiet = rate_key("bot", channel="discord", channel_user="friend")
    assert [lim.hit(noisy) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = lim.hit(noisy)
    assert wait >= 1.0                                   # a wait to report (429), no more
    assert lim.hit(quiet) == 0.0 and lim.hit(rate_key("alice")) == 0.0
    clock.t += 20.0                                       # 3 per minute: one token back
    assert lim.hit(noisy) == 0.0 and lim.hit(noisy) > 0
