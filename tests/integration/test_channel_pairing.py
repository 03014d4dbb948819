"""The channels' pairing store on the gate's database, SQLite and PostgreSQL alike: codes
used once, an hour's life, three pending per channel (also when asked at the same moment),
one pending per person, revoke."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from closedpaw.channels.pairing import CODE_ALPHABET, MAX_PENDING, PairingStore
from closedpaw.errors import PairingRefused
from closedpaw.gate.store import Store


def _store(db_url: str) -> tuple[Store, PairingStore]:
    st = Store(db_url)
    return st, PairingStore(st.engine)


def test_codes_are_used_once_expire_and_cap_at_three(db_url: str, tmp_path: Path) -> None:
    st, ps = _store(db_url)
    try:
        code, _ = ps.request("tg", "1", "Ann")
        assert code is not None and len(code) == 8 and set(code) <= set(CODE_ALPHABET)
        assert ps.request("tg", "1", "Ann")[0] is None          # one pending per person
        made: list[str] = []
        u = ps.approve(code.lower(), by="admin",
                       principal_for=lambda c, k: made.append(f"{c}-{k}") or f"{c}-{k}")
        assert (u.channel, u.user_key, u.principal) == ("tg", "1", "tg-1") and made == ["tg-1"]
        with pytest.raises(PairingRefused):
            ps.approve(code, by="admin", principal_for=lambda c, k: "x")
        assert ps.user("tg", "1") is not None
        # an hour later a code no longer works
        c2, _ = ps.request("tg", "2")
        assert c2 is not None
        real = ps.clock
        ps.clock = lambda: real() + 3601
        with pytest.raises(PairingRefused):
            ps.approve(c2, by="admin", principal_for=lambda c, k: "x")
        assert ps.pending("tg") == []
        ps.clock = real
        # three pending at most, per channel
        for k in ("3", "4", "5"):
            assert ps.request("tg", k)[0] is not None
        with pytest.raises(PairingRefused):
            ps.request("tg", "6")
        assert ps.request("other", "6")[0] is not None
        # garbage codes are refused before the database
        for bad in ("", "short", "0O1IL000", "ABCDEFGH'--"):
            with pytest.raises(PairingRefused):
                ps.approve(bad, by="admin", principal_for=lambda c, k: "x")
        assert ps.revoke("tg", "1") is not None and ps.user("tg", "1") is None
        assert ps.revoke("tg", "1") is None
    finally:
        st.engine.dispose()


def test_simultaneous_requests_and_approvals_cannot_pass_the_limits(db_url: str) -> None:
    st, ps = _store(db_url)
    try:
        go = threading.Barrier(12)

        def ask(i: int) -> str | None:
            go.wait()
            try:
                return ps.request("tg", str(i))[0]
            except PairingRefused:
                return None
        with ThreadPoolExecutor(12) as ex:
            codes = [c for c in ex.map(ask, range(12)) if c]
        assert 1 <= len(codes) <= MAX_PENDING
        assert len(ps.pending("tg")) == len(codes)
        # one code approved by many at once binds once
        code = codes[0]
        bound: list[str] = []
        go2 = threading.Barrier(8)

        def approve(_: int) -> bool:
            go2.wait()
            try:
                ps.approve(code, by="admin",
                           principal_for=lambda c, k: bound.append(k) or f"{c}-{k}")
                return True
            except PairingRefused:
                return False
        with ThreadPoolExecutor(8) as ex:
            results = list(ex.map(approve, range(8)))
        assert results.count(True) == 1 and len(bound) == 1
    finally:
        st.engine.dispose()


def test_a_code_is_stored_only_as_its_hash(db_url: str) -> None:
    st, ps = _store(db_url)
    try:
        code, _ = ps.request("tg", "1")
        assert code is not None
        from sqlalchemy import text

        with st.engine.connect() as c:
            rows = [tuple(r) for r in c.execute(text("SELECT * FROM channel_pairings"))]
        assert rows and not any(code in str(v) for r in rows for v in r)
    finally:
        st.engine.dispose()
