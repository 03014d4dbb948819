"""The audit log: a chain anyone without the key cannot edit, cut, reorder or extend unseen."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from closedpaw.audit import AuditEvent, AuditLog, canonical_json
from closedpaw.errors import AuditChainBroken, AuditError, AuditWriteError


def _fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.append(AuditEvent.ACTION_SUBMITTED, principal="alice", action_id=f"a{i}",
                   details={"i": i, "text": "ünïcode"})


def _lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def _write(log: AuditLog, lines: list[bytes]) -> None:
    log.path.write_bytes(b"".join(lines))


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    lg = AuditLog(tmp_path / "audit")
    _fill(lg, 5)
    return lg


def test_entries_chain_and_verify(log: AuditLog) -> None:
    entries = log.entries()
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == "0" * 64
    for a, b in itertools.pairwise(entries):
        assert b.prev_hash == a.entry_hash
    r = log.verify()
    assert r.ok and r.entries == 5 and r.first_bad_seq is None
    assert log.entries(after_seq=3, limit=1)[0].seq == 4


def test_files_are_private(log: AuditLog) -> None:
    assert (os.stat(log.key_path).st_mode & 0o777) == 0o600
    assert (os.stat(log.path).st_mode & 0o777) == 0o600
    assert (os.stat(log.dir).st_mode & 0o777) == 0o700


def test_a_second_writer_continues_the_chain(log: AuditLog) -> None:
    other = AuditLog(log.dir)          # e.g. 'closedpaw token create' next to the server
    other.append(AuditEvent.TOKEN_CREATED, principal="local:root")
    log.append(AuditEvent.SERVER_STOPPED, principal="system")
    assert [e.seq for e in log.entries()] == [1, 2, 3, 4, 5, 6, 7]
    assert log.verify().ok


def test_concurrent_appends_keep_one_chain(log: AuditLog) -> None:
    def work() -> None:
        _fill(log, 20)
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    r = log.verify()
    assert r.ok and r.entries == 85


def test_edit_one_byte_is_detected(log: AuditLog) -> None:
    lines = _lines(log)
    lines[2] = lines[2].replace(b'"alice"', b'"alicf"')
    _write(log, lines)
    r = log.verify()
    assert not r.ok and r.first_bad_seq == 3
    with pytest.raises(AuditChainBroken) as e:
        log.verify_or_raise()
    assert e.value.seq == 3


def test_edit_one_byte_of_the_details_is_detected(log: AuditLog) -> None:
    raw = bytearray(log.path.read_bytes())
    i = raw.index(b'"i":3')
    raw[i + 4] = ord("7")
    log.path.write_bytes(bytes(raw))
    assert log.verify().first_bad_seq == 4


def test_delete_one_in_the_middle_is_detected(log: AuditLog) -> None:
    lines = _lines(log)
    del lines[1]
    _write(log, lines)
    r = log.verify()
    assert not r.ok and r.first_bad_seq == 2


def test_delete_the_last_one_is_detected(log: AuditLog) -> None:
    _write(log, _lines(log)[:-1])
    r = log.verify()
    assert not r.ok and r.first_bad_seq == 5, r


def test_delete_everything_is_detected(log: AuditLog) -> None:
    _write(log, [])
    assert log.verify().first_bad_seq == 1


def test_swap_two_is_detected(log: AuditLog) -> None:
    lines = _lines(log)
    lines[1], lines[2] = lines[2], lines[1]
    _write(log, lines)
    r = log.verify()
    assert not r.ok and r.first_bad_seq == 2


def test_append_without_the_key_is_detected(log: AuditLog) -> None:
    last = json.loads(_lines(log)[-1])
    forged_key = os.urandom(32)
    body = {"seq": 6, "ts": last["ts"], "principal": "mallory", "action_id": None,
            "event": "action.approved", "details": {}, "prev_hash": last["entry_hash"]}
    body["entry_hash"] = hmac.new(forged_key, canonical_json(
        {k: body[k] for k in body}).encode(), hashlib.sha256).hexdigest()
    with open(log.path, "ab") as f:
        f.write((canonical_json(body) + "\n").encode())
    r = log.verify()
    assert not r.ok and r.first_bad_seq == 6
    # plain sha256 instead of the HMAC is caught as well
    lines = _lines(log)[:-1]
    body["entry_hash"] = hashlib.sha256(canonical_json(body).encode()).hexdigest()
    _write(log, [*lines, (canonical_json(body) + "\n").encode()])
    assert log.verify().first_bad_seq == 6


def test_rewriting_the_head_without_the_key_is_detected(log: AuditLog) -> None:
    _write(log, _lines(log)[:-1])
    head = json.loads(log.head_path.read_bytes())
    head["seq"] = 4
    log.head_path.write_text(json.dumps(head))
    r = log.verify()
    assert not r.ok and "head" in r.problem


def test_a_broken_chain_refuses_new_entries_after_a_torn_write(log: AuditLog) -> None:
    with open(log.path, "ab") as f:
        f.write(b'{"seq": 6, "ts"')
    with pytest.raises(AuditWriteError, match="torn"):
        log.append(AuditEvent.SERVER_STARTED, principal="system")
    assert log.verify().first_bad_seq == 6


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    AuditLog(tmp_path / "a")
    os.chmod(tmp_path / "a" / "audit.key", 0o644)
    with pytest.raises(AuditError, match="chmod 600"):
        AuditLog(tmp_path / "a")


def test_verify_without_a_key_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with pytest.raises(AuditError, match="no audit key"):
        AuditLog(tmp_path / "a", create=False)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A directory turned into a read-only bind mount of itself (root only)."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root to make a read-only mount: run 'make test' as root",
                    pytrace=False)
    d = tmp_path / "ro"
    d.mkdir()
    yield d
    subprocess.run(["umount", str(d)], capture_output=True, check=False)


def _make_read_only(d: Path) -> None:
    subprocess.run(["mount", "--bind", str(d), str(d)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(d)], check=True)


def test_read_only_store_fails_closed(read_only: Path) -> None:
    log = AuditLog(read_only / "audit")
    _fill(log, 2)
    _make_read_only(read_only)
    with pytest.raises(AuditWriteError, match="Read-only file system"):
        log.append(AuditEvent.ACTION_SUBMITTED, principal="alice")
    assert log.verify().ok and log.verify().entries == 2


def test_export_writes_jsonl(log: AuditLog, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with open(out, "w") as f:
        assert log.export(f) == 5
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["details"]["text"] == "ünïcode"


def test_append_many_chains_like_single_appends(log: AuditLog) -> None:
    got = log.append_many([
        (AuditEvent.ACTION_SUBMITTED, "alice", "b1", {"x": 1}),
        (AuditEvent.ACTION_APPROVED, "system", "b1", None)])
    log.append(AuditEvent.SERVER_STOPPED, principal="system")
    entries = log.entries()
    assert [e.seq for e in got] == [6, 7] and [e.seq for e in entries][-3:] == [6, 7, 8]
    assert entries[5].prev_hash == entries[4].entry_hash
    assert entries[6].prev_hash == entries[5].entry_hash
    assert (entries[5].event, entries[6].event) == ("action.submitted", "action.approved")
    assert entries[6].details == {} and entries[5].details == {"x": 1}
    assert log.verify().ok and log.append_many([]) == []
    # the head names the batch's last entry: cutting the batch's tail is detected
    _write(log, _lines(log)[:-2])
    assert not log.verify().ok


def test_append_many_is_redacted_and_tamper_evident_per_entry(tmp_path: Path) -> None:
    lg = AuditLog(tmp_path / "audit")
    lg.redact = lambda d: {k: ("[redacted]" if k == "secret" else v) for k, v in d.items()}
    lg.append_many([(AuditEvent.ACTION_SUBMITTED, "alice", "c1", {"secret": "hunter2"}),
                    (AuditEvent.ACTION_APPROVED, "system", "c1", {"secret": "hunter2"})])
    assert b"hunter2" not in lg.path.read_bytes()
    lines = _lines(lg)
    lines[1] = lines[1].replace(b'"system"', b'"mallory"')
    _write(lg, lines)
    assert lg.verify().first_bad_seq == 2

