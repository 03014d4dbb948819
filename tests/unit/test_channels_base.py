"""The platform-neutral pieces of channels/base.py: identity, allowlist, approval payload,
splitting, 429 backoff."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import pytest

from closedpaw.channels.base import (
    Allowlist,
    ApprovalPayload,
    Identity,
    RateLimited,
    split_message,
    with_backoff,
)


def test_identity_is_the_immutable_id_never_the_display_name() -> None:
    admin = Identity("telegram", "1001", display_name="Admin")
    impostor = Identity("telegram", "666", display_name="Admin")
    renamed = Identity("telegram", "1001", display_name="someone else")
    assert admin != impostor and admin == renamed
    allow = Allowlist.of([admin.key])
    assert allow.allows(renamed) and not allow.allows(impostor)


def test_slack_identity_is_user_and_team() -> None:
    a = Identity("slack", "U1", "T1")
    b = Identity("slack", "U1", "T2")   # the same user id in another workspace
    assert a.key == "T1/U1" and Allowlist.of(["T1/U1"]).allows(a)
    assert not Allowlist.of(["T1/U1"]).allows(b)
    assert Identity.from_key("slack", a.key) == a


def test_an_empty_allowlist_allows_nobody() -> None:
    assert not Allowlist().allows(Identity("telegram", "1"))
    assert not Allowlist.of([]).allows(Identity("matrix", "@a:b"))


@pytest.mark.parametrize("bad", ["", "a b", "x" * 300, "1\n2", "../1"])
def test_identity_refuses_what_is_not_an_id(bad: str) -> None:
    with pytest.raises(ValueError):
        Identity("telegram", bad)


def test_identity_refuses_an_unknown_platform() -> None:
    with pytest.raises(ValueError):
        Identity("irc", "1")


def test_payload_round_trips_within_telegrams_64_bytes() -> None:
    aid, sha = str(uuid.uuid4()), hashlib.sha256(b"p").hexdigest()
    for verb in ("approve", "reject"):
        p = ApprovalPayload(aid, sha, verb)  # type: ignore[arg-type]
        data = p.encode()
        assert len(data.encode()) <= ApprovalPayload.MAX_BYTES
        assert ApprovalPayload.decode(data) == p


@pytest.mark.parametrize("bad", ["", "a", "x" * 61, "a" + "~" * 60, "z" + "0" * 60, "a" * 200])
def test_payload_decode_refuses_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        ApprovalPayload.decode(bad)


@pytest.mark.parametrize("limit", [1, 7, 50, 4096])
def test_split_keeps_every_character_in_order(limit: int) -> None:
    text = ("word " * 300 + "\n\n" + "x" * 5000 + "\nend ü😀") * 2
    parts = split_message(text, limit)
    assert "".join(parts) == text
    assert all(0 < len(p) <= limit for p in parts)
    assert split_message("", 10) == []


def test_split_prefers_line_breaks() -> None:
    parts = split_message("a" * 60 + "\n" + "b" * 60, 100)
    assert parts == ["a" * 60 + "\n", "b" * 60]


def test_backoff_waits_what_the_platform_asked_then_succeeds() -> None:
    waits: list[float] = []
    calls = [RateLimited(2.5), RateLimited(1), "ok"]

    async def call() -> str:
        x = calls.pop(0)
        if isinstance(x, Exception):
            raise x
        return x

    async def sleep(s: float) -> None:
        waits.append(s)

    assert asyncio.run(with_backoff(call, sleep=sleep)) == "ok"
    assert waits == [2.5, 1.0]


def test_backoff_gives_up_after_its_retries_and_on_an_absurd_wait() -> None:
    async def always() -> None:
        raise RateLimited(1)

    async def sleep(s: float) -> None:
        pass

    with pytest.raises(RateLimited):
        asyncio.run(with_backoff(always, retries=2, sleep=sleep))

    async def huge() -> None:
        raise RateLimited(10_000)

    with pytest.raises(RateLimited):
        asyncio.run(with_backoff(huge, sleep=sleep))
