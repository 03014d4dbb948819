"""Refusal summaries stay bounded however many sources and reasons a flood brings."""

from __future__ import annotations

from closedpaw.security import RateLimiter, Summaries


def test_sources_over_the_cap_are_counted_not_listed() -> None:
    s = Summaries(max_sources=3)
    for i in range(10):
        s.add(f"10.0.0.{i}", "unknown token")
    counts, unlisted = s.take()
    assert len(counts) == 3 and unlisted == 7
    assert s.take() == ({}, 0)       # taken: the next period starts empty


def test_reasons_per_source_are_capped() -> None:
    s = Summaries()
    for i in range(1000):
        s.add("mallory", f"/api/actions/{i}")
    counts, _ = s.take()
    assert len(counts["mallory"]) == Summaries.MAX_REASONS + 1
    assert sum(counts["mallory"].values()) == 1000
    assert counts["mallory"]["other"] == 1000 - Summaries.MAX_REASONS


def test_exhausted_peeks_without_spending() -> None:
    t = [0.0]
    r = RateLimiter(2, clock=lambda: t[0])
    assert not r.exhausted("k")
    assert r.hit("k") == 0 and r.hit("k") == 0
    assert r.exhausted("k") and r.exhausted("k")
    t[0] += 30.0                      # one request's worth refilled
    assert not r.exhausted("k") and r.hit("k") == 0 and r.exhausted("k")
