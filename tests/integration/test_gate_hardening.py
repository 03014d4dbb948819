"""Issue 13, tried as an attacker with a ``user``-role token against a live server (real
uvicorn on 127.0.0.1; sandboxes: the FakeDriver): protected state however it is spelled, who
sees and decides what, approvals keyed to their hash, the audit log that cannot be cut, event
streams that end with their token."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from closedpaw.gate import Gate, parse_action
from tests.integration.conftest import Live, fake_manager, gate_settings, live_server, wait_for

CLI = str(Path(sys.executable).with_name("closedpaw"))


@contextlib.contextmanager
def serving(tmp_path: Path, handler: Any = None, **more: Any) -> Iterator[tuple[Live, Gate]]:
    s = gate_settings(tmp_path, **more)
    g = Gate(s, manager=fake_manager(s, handler) if handler else fake_manager(s))
    try:
        with live_server(s, g) as lv:
            yield lv, g
    finally:
        g.close()


def user(lv: Live, g: Gate, name: str, role: str = "user") -> httpx.Client:
    return lv.client(g.create_principal(name, role))


def err(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    e: dict[str, Any] = r.json()["error"]
    assert e["code"] == code, r.text
    return e


def finished(c: httpx.Client, aid: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        a: dict[str, Any] = c.get(f"/api/actions/{aid}").json()
        return a if a["status"] in ("completed", "failed", "interrupted") else None
    return wait_for(check, f"action {aid}")  # type: ignore[no-any-return]


# -- 1. protected state judged on what is opened ------------------------------------------
@pytest.fixture
def bind_mounts() -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for m in reversed(made):
        subprocess.run(["umount", "-l", str(m)], check=False, capture_output=True)


def _fd_of(path: Path) -> int:
    """An fd of this (the server's) process open on ``path``."""
    want = os.stat(path)
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/self/fd/{name}")
            if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
                return int(name)
    raise AssertionError(f"no fd open on {path}")


def test_every_alias_of_protected_state_is_critical_and_a_user_cannot_approve_it(
        tmp_path: Path, bind_mounts: list[Path]) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules: []\n")
    with serving(tmp_path, rules_file=rules) as (lv, g), user(lv, g, "mallory") as m:
        d = lv.settings.data_dir
        ws = lv.settings.workspace_path
        targets = [d / "api-token", d / "audit" / "audit.key", d / "audit" / "audit.jsonl",
                   d / "closedpaw.db", d / "gate.key", rules]
        for t in targets:
            assert t.exists(), t
        # spellings: /proc/*/root, /proc/thread-self, a helper process' cwd, a symlinked
        # directory, a symlink and a hard link in the workspace, /proc/self/fd, bind mounts
        helper = subprocess.Popen(["sleep", "60"], cwd=d)
        (tmp_path / "dlink").symlink_to(d)
        (ws / "tok").symlink_to(d / "api-token")
        (ws / "auditdir").symlink_to(d / "audit")
        os.link(d / "api-token", ws / "hard-token")
        os.link(d / "gate.key", ws / "hard-gate-key")
        mnt1, mnt2 = tmp_path / "mnt-data", tmp_path / "mnt-audit"
        for src, mnt in ((d, mnt1), (d / "audit", mnt2)):
            mnt.mkdir()
            r = subprocess.run(["mount", "--bind", str(src), str(mnt)], capture_output=True,
                               text=True, check=False)
            assert r.returncode == 0, f"mount --bind needs root: {r.stderr}"
            bind_mounts.append(mnt)
        try:
            spell = [
                f"/proc/self/root{d}/api-token", f"/proc/{os.getpid()}/root{d}/api-token",
                f"/proc/thread-self/root{d}/audit/audit.key",
                f"/proc/{helper.pid}/root{d}/gate.key",
                f"/proc/self/root/proc/self/root{d}/closedpaw.db",
                f"/proc/{helper.pid}/cwd/api-token", f"/proc/{helper.pid}/cwd/audit/audit.key",
                f"{tmp_path}/dlink/api-token", f"{tmp_path}/dlink/audit/audit.jsonl",
                f"{ws}/tok", f"{ws}/auditdir/audit.key", f"{ws}/hard-token",
                f"{ws}/hard-gate-key", f"/proc/self/fd/{_fd_of(d / 'closedpaw.db')}",
                f"{mnt1}/api-token", f"{mnt1}/audit/audit.key", f"{mnt2}/audit.jsonl",
                f"{mnt2}/audit.key", f"/proc/self/root{rules}", f"{mnt1}/new-file",
                f"/proc/self/root{d}/audit/new-segment"]
            for path in spell:
                for kind, params in (("file_read", {"path": path}),
                                     ("file_write", {"path": path, "content": "owned"})):
                    if kind == "file_read" and path.endswith("new-file"):
                        continue
                    r = m.post("/api/actions", json={"action_type": kind,
                                                     "parameters": params})
                    assert r.status_code == 201, r.text
                    a = r.json()
                    assert a["security_level"] == "critical", (kind, path, a["level_reason"])
                    e = err(m.post(f"/api/actions/{a['action_id']}/approve",
                                   json={"params_sha256": a["params_sha256"]}), 403,
                            "approval_refused")
                    assert e["reason"] == "role"
            # nothing was read or changed: every action is still pending, files intact
            assert {x["status"] for x in m.get("/api/actions?limit=500").json()["actions"]} \
                == {"pending"}
            assert "owned" not in (d / "api-token").read_text()
            assert not (d / "new-file").exists() and not (d / "audit" / "new-segment").exists()
            assert g.audit.verify().ok
        finally:
            helper.kill()
            helper.wait()


def test_what_is_opened_is_checked_again_at_execution(tmp_path: Path) -> None:
    """Paths swapped between submission and execution: a file replaced by a symlink to the
    token, a directory replaced by a symlink into the data directory, a hard link in the
    workspace to a file elsewhere. Each is refused on the opened descriptor."""
    release = threading.Event()
    ran: list[str] = []

    def handler(argv: Sequence[str], stdin: bytes) -> tuple[int, bytes, bytes]:
        ran.append(" ".join(argv))
        release.wait(30)
        return 0, b"", b""

    with serving(tmp_path, handler, workers=2) as (lv, g), user(lv, g, "mallory") as m, \
            user(lv, g, "carol", "approver") as carol:
        d = lv.settings.data_dir
        ws = lv.settings.workspace_path
        out = tmp_path / "outside"
        out.mkdir()
        (out / "f").write_text("harmless")
        (out / "dir").mkdir()
        (out / "secret").write_text("not for the workspace")

        def submit(kind: str, params: dict[str, Any]) -> dict[str, Any]:
            r = m.post("/api/actions", json={"action_type": kind, "parameters": params})
            assert r.status_code == 201, r.text
            return r.json()  # type: ignore[no-any-return]

        read = submit("file_read", {"path": str(out / "f")})
        write = submit("file_write", {"path": str(out / "dir" / "x"), "content": "owned"})
        assert read["security_level"] == write["security_level"] == "high"
        (out / "f").unlink()
        (out / "f").symlink_to(d / "api-token")
        (out / "dir").rmdir()
        (out / "dir").symlink_to(d)
        for a in (read, write):   # a host action: an approver decides, never mallory
            carol.post(f"/api/actions/{a['action_id']}/approve",
                       json={"params_sha256": a["params_sha256"]}).raise_for_status()
            done = finished(m, a["action_id"])
            assert done["status"] == "failed" and "ClosedPaw's own state" in done["error"], done
            assert done["result"] is None
        assert not (d / "x").exists()
        # a hard link in the workspace to a file elsewhere: raised to high when submitted,
        # and one made after a medium submission is refused on the opened descriptor
        os.link(out / "secret", ws / "link")
        a = submit("file_read", {"path": str(ws / "link")})
        assert a["security_level"] == "high" and "hard link" in a["level_reason"], a
        # (held in mallory's queue behind a running action of hers meanwhile)
        blocker = submit("code_execution", {"language": "python", "code": "block()"})
        wait_for(lambda: ran, "the blocker to run")
        (ws / "later").write_text("fine")
        a = submit("file_read", {"path": str(ws / "later")})
        assert a["security_level"] == "medium"
        assert m.get(f"/api/actions/{a['action_id']}").json()["status"] == "approved"
        os.unlink(ws / "later")
        os.link(out / "secret", ws / "later")
        release.set()
        done = finished(m, a["action_id"])
        assert done["status"] == "failed" and "hard link" in done["error"], done
        assert finished(m, blocker["action_id"])["status"] == "completed"
        # an ordinary workspace file still reads at medium
        (ws / "note").write_text("hello")
        done = finished(m, submit("file_read", {"path": str(ws / "note")})["action_id"])
        assert done["status"] == "completed" and done["result"]["content"] == "hello"



def test_a_user_cannot_approve_its_own_host_actions(tmp_path: Path) -> None:
    """A host file read outside the workspace, a host file write and a network request act
    on the host with the server's privileges (root), not in a sandbox: their requester, a
    ``user``, cannot approve them (an outsider's attack: a user self-approved a read of the
    server's stderr, took the one-time admin login link printed there, and was admin). An
    approver can; nothing ran before it did."""
    ran: list[str] = []
    with serving(tmp_path) as (lv, g), user(lv, g, "mallory") as m, \
            user(lv, g, "carol", "approver") as carol:
        outside = tmp_path / "outside.txt"
        outside.write_text("host file")
        asks = {"file_read": {"path": str(outside)},
                "file_write": {"path": str(tmp_path / "new.txt"), "content": "x"},
                "network_request": {"url": "http://127.0.0.1:9/"}}
        for kind, params in asks.items():
            a = m.post("/api/actions", json={"action_type": kind, "parameters": params}).json()
            assert a["security_level"] == "high", a
            e = err(m.post(f"/api/actions/{a['action_id']}/approve",
                           json={"params_sha256": a["params_sha256"]}), 403, "approval_refused")
            assert "approver or admin" in e["message"], e
            assert m.get(f"/api/actions/{a['action_id']}").json()["status"] == "pending"
            ran.append(kind)
            refused = [x for x in g.audit.entries(after_seq=0, limit=10000)
                       if x.event == "approval.refused" and x.action_id == a["action_id"]]
            assert refused and refused[-1].principal == "mallory", refused
        assert not (tmp_path / "new.txt").exists()
        # an approver decides them: the read runs
        a = m.post("/api/actions", json={"action_type": "file_read",
                                         "parameters": {"path": str(outside)}}).json()
        carol.post(f"/api/actions/{a['action_id']}/approve",
                   json={"params_sha256": a["params_sha256"]}).raise_for_status()
        done = finished(m, a["action_id"])
        assert done["status"] == "completed" and done["result"]["content"] == "host file", done
        # her sandboxed high action is still hers to approve
        h = m.post("/api/actions", json=HIGH).json()
        m.post(f"/api/actions/{h['action_id']}/approve",
               json={"params_sha256": h["params_sha256"]}).raise_for_status()
    assert ran == list(asks)

def test_the_vault_key_file_outside_the_data_directory_is_the_gates_own_state(
        tmp_path: Path) -> None:
    """An outsider's attack: an approver read the vault's key file (kept outside the data
    directory, as README shows) with a self-approved high file_read, and so had every
    secret, admin-level ones included. The recorded key file and its rotation's ``.next``
    are ClosedPaw's own state now: a read is critical, decided by an admin only."""
    from closedpaw.errors import ApprovalRefused
    from closedpaw.gate import ActionRequest
    from closedpaw.security import Principal
    from closedpaw.vault import Vault

    s = gate_settings(tmp_path)
    key = tmp_path / "vault.key"
    g = Gate(s, manager=fake_manager(s))
    try:
        g.start()
        with Vault(s.database_url) as v:   # made while the gate runs (`closedpaw vault init`)
            v.init_key_file(key)
            v.set("ADMIN_PIN", "604215", "admin")
        g.protect_vault_keys()             # what the server's sweeper calls
        bob = Principal("bob", "approver")
        for path in (key, key.with_name("vault.key.next")):
            key.with_name("vault.key.next").write_text("x")
            rec = g.submit(bob, ActionRequest(action_type="file_read",
                                              parameters={"path": str(path)}))
            assert str(rec.security_level) == "critical", (path, rec.level_reason)
            with pytest.raises(ApprovalRefused, match="admin"):
                g.approve(bob, rec.id, rec.params_sha256)
            assert g.get(rec.id).status.value == "pending" and g.get(rec.id).result is None
    finally:
        g.close()


# -- 2. who sees and decides what -----------------------------------------------------------
HIGH = {"action_type": "code_execution", "min_level": "high",
        "parameters": {"language": "python", "code": "print(6*7)"}}
CRIT = {**HIGH, "min_level": "critical"}


def test_who_may_see_approve_and_reject(tmp_path: Path) -> None:
    """Each pair of the table in docs/gate.md: the owner (user), another user, an approver,
    an admin; on a high and a critical action of the owner."""
    with serving(tmp_path) as (lv, g), user(lv, g, "alice") as alice, \
            user(lv, g, "bob") as bob, user(lv, g, "carol", "approver") as carol, \
            lv.client() as admin:
        actors = {"owner": alice, "other_user": bob, "approver": carol, "admin": admin}
        may_see = {"owner", "approver", "admin"}
        may_decide = {"high": {"owner", "approver", "admin"}, "critical": {"admin"}}
        for level, req in (("high", HIGH), ("critical", CRIT)):
            for verb in ("approve", "reject"):
                for who, c in actors.items():
                    a = alice.post("/api/actions", json=req).json()
                    aid = a["action_id"]
                    listed = {x["action_id"] for x in c.get("/api/actions").json()["actions"]}
                    pend = {x["action_id"] for x in
                            c.get("/api/actions/pending").json()["actions"]}
                    got = c.get(f"/api/actions/{aid}")
                    if who in may_see:
                        assert aid in listed and aid in pend and got.status_code == 200
                    else:   # not even told it exists
                        assert aid not in listed and aid not in pend
                        err(got, 404, "action_not_found")
                    body = ({"params_sha256": a["params_sha256"]} if verb == "approve"
                            else {"reason": "no"})
                    r = c.post(f"/api/actions/{aid}/{verb}", json=body)
                    allowed = who in may_decide[level] or (verb == "reject" and who in
                                                           may_decide["high"])
                    if allowed:
                        assert r.status_code == 200, (level, verb, who, r.text)
                        want = "rejected" if verb == "reject" else "approved"
                        assert r.json()["status"] in (want, "executing", "completed")
                    elif who not in may_see:
                        err(r, 404, "action_not_found")
                        assert alice.get(f"/api/actions/{aid}").json()["status"] == "pending"
                    else:
                        assert r.status_code == 403, (level, verb, who, r.text)
                        assert alice.get(f"/api/actions/{aid}").json()["status"] == "pending"
        # bob's own list holds nothing of alice's, and the results of her actions stay hers
        assert bob.get("/api/actions?limit=500").json()["actions"] == []


def test_event_streams_carry_only_your_actions_are_capped_and_end_when_revoked(
        tmp_path: Path) -> None:
    with serving(tmp_path, max_streams_per_principal=2, stream_recheck_s=0.5) as (lv, g), \
            user(lv, g, "alice") as alice, user(lv, g, "bob") as bob:
        got: list[str] = []
        ended = threading.Event()

        def listen() -> None:
            with bob.stream("GET", "/api/events", timeout=30) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    got.append(line)
            ended.set()

        t = threading.Thread(target=listen, daemon=True)
        t.start()
        wait_for(lambda: got, "the stream to open")
        with bob.stream("GET", "/api/events", timeout=30) as second:
            assert second.status_code == 200
            err(bob.get("/api/events"), 429, "quota_exceeded")      # the third
        theirs = alice.post("/api/actions", json=HIGH).json()["action_id"]
        mine = bob.post("/api/actions", json=HIGH).json()["action_id"]
        wait_for(lambda: any(mine in x for x in got), "bob's own event")
        assert not any(theirs in x for x in got)
        g.revoke_principal("bob")
        assert ended.wait(10), "the stream of a revoked token stayed open"
        assert any("revoked" in x for x in got)
        t.join(5)
        err(bob.get("/api/status"), 401, "unauthorized")
        # streams closed by their clients (at once, or after the first line) free their slot
        for i in range(6):
            with alice.stream("GET", "/api/events", timeout=30) as r:
                assert r.status_code == 200
                if i % 2:
                    next(r.iter_lines())

        def two_open() -> bool:
            with alice.stream("GET", "/api/events", timeout=30) as r1, \
                    alice.stream("GET", "/api/events", timeout=30) as r2:
                return r1.status_code == r2.status_code == 200
        wait_for(two_open, "both stream slots to be free again", timeout=10)


# -- 4. approvals keyed to their hash -------------------------------------------------------
def test_a_queued_approved_action_swapped_in_the_database_never_runs(tmp_path: Path) -> None:
    """The attacker can write the database (not the gate key). A worker is busy; an approved
    action waits in the queue; its row is rewritten with other parameters and their freshly
    computed SHA-256 (approved_sha256 too). It fails; the new code never runs."""
    gate_open = threading.Event()
    ran: list[Sequence[str]] = []

    def handler(argv: Sequence[str], stdin: bytes) -> tuple[int, bytes, bytes]:
        ran.append(list(argv))
        if "block" in " ".join(argv):
            gate_open.wait(30)
        return 0, b"ok\n", b""

    with serving(tmp_path, handler, workers=2) as (lv, g), user(lv, g, "alice") as alice, \
            user(lv, g, "bob") as bob:
        blocker = alice.post("/api/actions", json={
            "action_type": "code_execution",
            "parameters": {"language": "python", "code": "block()"}}).json()
        wait_for(lambda: ran, "the blocker to run")
        a = alice.post("/api/actions", json={**HIGH, "parameters": {
            "language": "python", "code": "print('hello')"}}).json()
        alice.post(f"/api/actions/{a['action_id']}/approve",
                   json={"params_sha256": a["params_sha256"]}).raise_for_status()
        st = alice.get("/api/status").json()["queue"]
        assert st["running"] == {"alice": 1} and st["queued"] == {"alice": 1}, st
        # another user sees nothing of hers, nor the server's (an outsider's finding: who
        # ran what, every principal's counts, the database's path); an admin sees it all
        seen = bob.get("/api/status").json()
        assert seen["queue"]["running"] == {} and seen["queue"]["queued"] == {}, seen
        assert seen["actions"] == {} and seen["pending"] == 0, seen
        assert "database" not in seen and "audit_entries" not in seen, seen
        with lv.client() as admin:
            full = admin.get("/api/status").json()
        assert full["queue"]["running"] == {"alice": 1} and "database" in full, full
        # one principal never holds every worker: bob's medium action runs meanwhile
        b = bob.post("/api/actions", json={"action_type": "code_execution", "parameters": {
            "language": "python", "code": "print(1)"}}).json()
        assert finished(bob, b["action_id"])["status"] == "completed"
        evil = parse_action("code_execution", {"language": "python",
                                               "code": "print('owned')"})
        with sqlite3.connect(lv.settings.data_dir / "closedpaw.db") as db:
            db.execute("UPDATE actions SET parameters = ?, params_sha256 = ?, "
                       "approved_sha256 = ? WHERE id = ?",
                       (evil.canonical, evil.params_sha256, evil.params_sha256,
                        a["action_id"]))
        gate_open.set()
        done = finished(alice, a["action_id"])
        assert done["status"] == "failed" and "MAC" in done["error"], done
        assert finished(alice, blocker["action_id"])["status"] == "completed"
        assert not any("owned" in " ".join(x) for x in ran)
        assert any(e.event == "approval.refused" and e.details.get("reason") == "integrity"
                   for e in g.audit.entries())

        # a completed action set back to 'approved' (MACs and all) does not run twice
        n = len(ran)
        with sqlite3.connect(lv.settings.data_dir / "closedpaw.db") as db:
            db.execute("UPDATE actions SET status = 'approved', result = NULL WHERE id = ?",
                       (b["action_id"],))
        g.run_now(b["action_id"])
        again = bob.get(f"/api/actions/{b['action_id']}").json()
        assert again["status"] == "failed" and "used already" in again["error"], again
        assert len(ran) == n

        # a pending action set to 'approved' in the database has no approval MAC
        p = alice.post("/api/actions", json=HIGH).json()
        with sqlite3.connect(lv.settings.data_dir / "closedpaw.db") as db:
            db.execute("UPDATE actions SET status = 'approved', decided_by = 'admin', "
                       "approved_sha256 = params_sha256 WHERE id = ?", (p["action_id"],))
        g.run_now(p["action_id"])
        done = alice.get(f"/api/actions/{p['action_id']}").json()
        assert done["status"] == "failed" and "approval" in done["error"], done


def test_the_gate_key_is_kept_like_the_audit_key(tmp_path: Path) -> None:
    from closedpaw.errors import ConfigError

    s = gate_settings(tmp_path)
    g = Gate(s, manager=fake_manager(s))
    g.close()
    key = s.data_dir / "gate.key"
    assert key.stat().st_mode & 0o777 == 0o600 and key.stat().st_size == 32
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Gate(s, manager=fake_manager(s))


# -- 3. an audit log that cannot be cut -----------------------------------------------------
def _submit_ok(c: httpx.Client) -> None:
    r = c.post("/api/actions", json=HIGH)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("attack", ["truncate", "delete", "rollback"])
def test_cutting_the_log_while_running_is_refused_and_reported(tmp_path: Path,
                                                             attack: str) -> None:
    with serving(tmp_path) as (lv, g), user(lv, g, "mallory") as m:
        log = lv.settings.audit_dir / "audit.jsonl"
        # the anchored log keeps no head file: the database anchor replaces it
        assert not (lv.settings.audit_dir / "audit.head").exists()
        for _ in range(3):
            _submit_ok(m)
        old_log = log.read_bytes()
        for _ in range(3):
            _submit_ok(m)
        anchored = g.store.anchor()
        assert anchored is not None and anchored[0] == g.audit.last_seq()
        if attack == "truncate":
            lines = log.read_bytes().splitlines(keepends=True)
            log.write_bytes(b"".join(lines[:-2]))
        elif attack == "delete":
            log.unlink()
        else:   # an older copy of the log put back
            log.write_bytes(old_log)
        r = m.post("/api/actions", json=HIGH)
        e = err(r, 503, "audit_unavailable")
        assert "missing" in e["message"] and str(lv.settings.data_dir) not in e["message"]
        rep = g.audit.verify()
        assert not rep.ok and "missing" in rep.problem, rep
        assert rep.first_bad_seq == rep.entries + 1
        assert f"..{anchored[0]}" in rep.problem
        # nothing was recorded (the refused submission left no row)
        assert len(m.get("/api/actions?limit=500").json()["actions"]) == 6


@pytest.mark.parametrize("attack", ["truncate", "delete", "rollback"])
def test_cutting_the_log_while_stopped_is_reported_and_the_server_refuses_to_start(
        tmp_path: Path, attack: str) -> None:
    s = gate_settings(tmp_path)
    with serving(tmp_path) as (lv, g), user(lv, g, "mallory") as m:
        for _ in range(2):
            _submit_ok(m)
        old = (lv.settings.audit_dir / "audit.jsonl").read_bytes()
        for _ in range(2):
            _submit_ok(m)
    log = s.audit_dir / "audit.jsonl"
    if attack == "truncate":
        log.write_bytes(b"".join(log.read_bytes().splitlines(keepends=True)[:3]))
    elif attack == "delete":
        log.unlink()
    else:
        log.write_bytes(old)
    env = {"PATH": os.environ["PATH"]}
    r = subprocess.run([CLI, "audit", "verify", "--data-dir", str(s.data_dir)],
                       capture_output=True, text=True, env=env, timeout=60, check=False)
    assert r.returncode == 1 and "BROKEN" in r.stdout and "missing" in r.stdout, r
    r = subprocess.run([CLI, "serve", "--port", "1", "--data-dir", str(s.data_dir)],
                       capture_output=True, text=True, env={**env, **_serve_env()},
                       timeout=60, check=False)
    assert r.returncode != 0 and "missing" in r.stderr and "Traceback" not in r.stderr, r
    assert "Uvicorn running" not in r.stderr


def _serve_env() -> dict[str, str]:
    from tests.conftest import TEST_CGROUP, TEST_STATE

    return {"CLOSEDPAW_STATE_DIR": str(TEST_STATE), "CLOSEDPAW_CGROUP_PARENT": TEST_CGROUP}


def test_a_torn_tail_is_moved_aside_by_repair_and_the_server_starts(tmp_path: Path) -> None:
    s = gate_settings(tmp_path)
    with serving(tmp_path) as (lv, g), user(lv, g, "mallory") as m:
        _submit_ok(m)
    log = s.audit_dir / "audit.jsonl"
    whole = log.read_bytes()
    with open(log, "ab") as f:
        f.write(b'{"seq": 99, "ts": "half an entr')
    env = {"PATH": os.environ["PATH"]}
    r = subprocess.run([CLI, "audit", "verify", "--data-dir", str(s.data_dir)],
                       capture_output=True, text=True, env=env, timeout=60, check=False)
    assert r.returncode == 1 and "torn" in r.stdout
    r = subprocess.run([CLI, "audit", "repair", "--data-dir", str(s.data_dir)],
                       capture_output=True, text=True, env=env, timeout=60, check=False)
    assert r.returncode == 0 and "moved a torn tail of 31 bytes" in r.stdout, r
    assert log.read_bytes().startswith(whole)          # every complete entry kept
    aside = list(s.audit_dir.glob("torn-*.bin"))
    assert len(aside) == 1 and aside[0].read_bytes() == b'{"seq": 99, "ts": "half an entr'
    r = subprocess.run([CLI, "audit", "verify", "--data-dir", str(s.data_dir)],
                       capture_output=True, text=True, env=env, timeout=60, check=False)
    assert r.returncode == 0, r
    with serving(tmp_path) as (lv, g), lv.client() as c:
        assert c.get("/api/audit/verify").json()["ok"] is True
        assert any(e.event == "audit.repaired" for e in g.audit.entries())


def test_segments_rotate_by_size_the_chain_continues_and_pages_read_one_segment(
        tmp_path: Path) -> None:
    with serving(tmp_path, audit_segment_bytes=4096) as (lv, g), lv.client() as c:
        for _ in range(40):
            _submit_ok(c)
        segs = g.audit.segments()
        assert len(segs) >= 5 and segs[-1].name == "audit.jsonl"
        assert all(p.stat().st_size < 4096 + 2048 for p in segs)
        assert c.get("/api/audit/verify").json()["ok"] is True
        last = g.audit.last_seq()
        page = c.get("/api/audit-logs", params={"after_seq": last - 10, "limit": 5}).json()
        assert [e["seq"] for e in page["entries"]] == list(range(last - 9, last - 4))
        # a page is read from its segment on: with the older segments moved away, the same
        # page is still served (they are not read at all)
        for p in segs[:-3]:
            os.rename(p, p.with_suffix(".moved"))
        try:
            page = c.get("/api/audit-logs", params={"after_seq": last - 3}).json()
            assert [e["seq"] for e in page["entries"]][:3] == [last - 2, last - 1, last]
        finally:
            for p in segs[:-3]:
                os.rename(p.with_suffix(".moved"), p)
        # a sealed segment taken away (the middle of the chain) is reported, not skipped
        mid = segs[2]
        saved = mid.read_bytes()
        mid.unlink()
        rep = c.get("/api/audit/verify").json()
        assert rep["ok"] is False and "deleted or reordered" in rep["problem"]
        mid.write_bytes(saved)
        # the active segment deleted while running: the writer falls back to the last sealed
        # one, finds it behind the anchor, and refuses
        segs[-1].unlink()
        e = err(c.post("/api/actions", json=HIGH), 503, "audit_unavailable")
        assert "missing" in e["message"]


def test_unauthenticated_errors_reveal_no_paths(tmp_path: Path) -> None:
    with serving(tmp_path) as (lv, _), httpx.Client(base_url=lv.url, trust_env=False) as anon:
        for r in (anon.get("/api/status"), anon.post("/api/actions", json=HIGH),
                  anon.get("/api/status", headers={"Authorization": "Bearer cpw_" + "a" * 43}),
                  anon.get("/nowhere")):
            assert r.status_code == 401
            assert "/" not in r.json()["error"]["message"].replace("'", ""), r.text
