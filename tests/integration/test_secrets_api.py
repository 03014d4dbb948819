"""Secrets over the real HTTP API (uvicorn on 127.0.0.1, SQLite and PostgreSQL): admin-only
management, secret_read pending until approved, levels enforced per role and approver, the
value delivered once to its requester only, a locked passphrase vault, per-principal rate
limits; and a planted value that appears nowhere else (responses, audit, database, logs)."""

from __future__ import annotations

import base64
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from closedpaw.gate import Gate
from closedpaw.vault import Vault
from tests.integration.conftest import Live, fake_manager, gate_settings, live_server, wait_for

PLANTED = "sk-live-5b1e0c9d7a3f4e21"
READ = {"action_type": "secret_read"}


def finished(c: httpx.Client, aid: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        a: dict[str, Any] = c.get(f"/api/actions/{aid}").json()
        return a if a["status"] in ("completed", "failed", "interrupted") else None
    return wait_for(check, f"action {aid}")  # type: ignore[no-any-return]


def approve(c: httpx.Client, aid: str) -> httpx.Response:
    a = c.get(f"/api/actions/{aid}").json()
    return c.post(f"/api/actions/{aid}/approve", json={"params_sha256": a["params_sha256"]})


CRITICAL = {"DB_PASSWORD", "ROOT_KEY"}   # elevated and admin secrets: an admin approves


def submit_read(c: httpx.Client, name: str) -> str:
    r = c.post("/api/actions", json={**READ, "parameters": {"name": name}})
    assert r.status_code == 201, r.text
    body = r.json()
    level = "critical" if name in CRITICAL else "high"
    assert body["status"] == "pending" and body["security_level"] == level, body
    if level == "critical":
        assert "stored at level" in body["level_reason"]
    return str(body["action_id"])


@pytest.fixture
def server(tmp_path: Path, db_url: str, request: pytest.FixtureRequest
           ) -> Iterator[tuple[Live, dict[str, str]]]:
    """A key-file vault with one secret per level, then the server; tokens of alice (a
    user), bob (an approver: may decide on others' actions up to high), carol (a second
    admin) and dave (another user)."""
    more: dict[str, Any] = getattr(request, "param", {})
    s = gate_settings(tmp_path, db_url=db_url, **more)
    with Vault(s.database_url) as v:
        v.init_key_file(s.data_dir / "vault.key")
        v.set("API_KEY", PLANTED, "standard")
        v.set("PUBLIC_NOTE", "public-value-1", "public")
        v.set("DB_PASSWORD", "elevated-value-2", "elevated")
        v.set("ROOT_KEY", "admin-value-3", "admin")
    orch = Gate(s, manager=fake_manager(s))
    try:
        with live_server(s, orch) as lv:
            toks = {n: orch.create_principal(n, r) for n, r in
                    (("alice", "user"), ("bob", "approver"), ("carol", "admin"),
                     ("dave", "user"))}
            yield lv, toks
    finally:
        orch.close()


def test_management_is_admin_only_and_never_shows_values(
        server: tuple[Live, dict[str, str]]) -> None:
    live, toks = server
    with live.client() as admin, live.client(toks["alice"]) as alice:
        r = admin.get("/api/secrets")
        assert r.status_code == 200
        names = {s["name"]: s for s in r.json()["secrets"]}
        assert set(names) == {"API_KEY", "PUBLIC_NOTE", "DB_PASSWORD", "ROOT_KEY"}
        assert names["ROOT_KEY"]["level"] == "admin"
        assert PLANTED not in r.text
        for method, path, body in (("GET", "/api/secrets", None),
                                   ("PUT", "/api/secrets/X", {"value": "v"}),
                                   ("DELETE", "/api/secrets/API_KEY", None)):
            rr = alice.request(method, path, json=body)
            assert rr.status_code == 403 and rr.json()["error"]["code"] == "forbidden"
        r = admin.put("/api/secrets/API_KEY", json={"value": PLANTED + "-v2"})
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 2 and r.json()["level"] == "standard"
        assert PLANTED not in r.text
        r = admin.put("/api/secrets/NEW/nested.name", json={"value": "x1", "level": "admin"})
        assert r.status_code == 200 and r.json()["name"] == "NEW/nested.name"
        for bad in ({"value": ""}, {"value": "x", "level": "root"}, {"value": "x", "extra": 1}):
            assert admin.put("/api/secrets/Y", json=bad).status_code == 422
        assert admin.put("/api/secrets/bad%20name", json={"value": "x"}).status_code == 422
        r = admin.delete("/api/secrets/NEW/nested.name")
        assert r.json() == {"name": "NEW/nested.name", "deleted_versions": 1}
        r = admin.delete("/api/secrets/NOPE")
        assert r.status_code == 404 and r.json()["error"]["code"] == "secret_not_found"
        st = admin.get("/api/vault").json()
        assert st == {"initialized": True, "locked": False, "kdf": "keyfile",
                      "generation": 0, "secrets": 4}


def test_secret_read_waits_for_approval_and_is_delivered_once(
        server: tuple[Live, dict[str, str]]) -> None:
    live, toks = server
    with live.client() as admin, live.client(toks["alice"]) as alice, \
            live.client(toks["bob"]) as bob:
        aid = submit_read(alice, "API_KEY")
        r = alice.get(f"/api/actions/{aid}/secret")
        assert r.status_code == 409 and "pending" in r.json()["error"]["message"]
        assert approve(admin, aid).status_code == 200
        done = finished(admin, aid)
        assert done["status"] == "completed", done
        assert done["result"]["name"] == "API_KEY" and done["result"]["version"] == 1
        assert PLANTED not in admin.get(f"/api/actions/{aid}").text
        r = bob.get(f"/api/actions/{aid}/secret")
        assert r.status_code == 403
        r = admin.get(f"/api/actions/{aid}/secret")            # not even an admin
        assert r.status_code == 403
        r = alice.get(f"/api/actions/{aid}/secret")
        assert r.status_code == 200 and r.json()["value"] == PLANTED
        r = alice.get(f"/api/actions/{aid}/secret")
        assert r.status_code == 403 and "delivered already" in r.json()["error"]["message"]
    orch: Gate = live.app.state.gate
    events = [e for e in orch.audit.entries() if e.action_id == aid]
    assert "secret.delivered" in [e.event for e in events]
    assert all(PLANTED not in repr(e.to_dict()) for e in orch.audit.entries())



def test_another_users_action_is_not_found_at_the_secret_route(
        server: tuple[Live, dict[str, str]]) -> None:
    """An outsider's attack: the delivery route told another user whether an action existed
    and what it was (409 "is a code_execution", 403 "only the principal that requested this
    secret_read"), where every other route answers 404."""
    live, toks = server
    with live.client(toks["alice"]) as alice, live.client(toks["dave"]) as dave:
        read = submit_read(alice, "API_KEY")
        code = alice.post("/api/actions", json={"action_type": "code_execution", "parameters": {
            "language": "python", "code": "print(1)"}}).json()["action_id"]
        for aid in (read, code, "00000000-0000-4000-8000-000000000000"):
            r = dave.get(f"/api/actions/{aid}/secret")
            assert r.status_code == 404 and r.json()["error"]["code"] == "action_not_found", \
                r.text

def test_levels_are_enforced_by_role_and_approver(server: tuple[Live, dict[str, str]]) -> None:
    live, toks = server
    with live.client() as admin, live.client(toks["alice"]) as alice, \
            live.client(toks["bob"]) as bob, live.client(toks["carol"]) as carol:
        # a user may not read an admin secret, whoever approves
        aid = submit_read(alice, "ROOT_KEY")
        approve(admin, aid)
        out = finished(admin, aid)
        assert out["status"] == "failed" and "may not read" in out["error"]
        # an elevated secret needs an admin's approval: it is critical at submit, so an
        # approver's approval is refused by the gate
        aid = submit_read(alice, "DB_PASSWORD")
        r = approve(bob, aid)
        assert r.status_code == 403 and r.json()["error"]["reason"] == "role"
        # the executor checks again: a level raised after the submit still needs an admin
        aid = submit_read(alice, "API_KEY")
        admin.put("/api/secrets/API_KEY", json={"value": "now-elevated", "level": "elevated"})
        assert approve(bob, aid).status_code == 200
        out = finished(admin, aid)
        assert out["status"] == "failed" and "approval by an admin" in out["error"]
        aid = submit_read(alice, "DB_PASSWORD")
        approve(carol, aid)
        assert finished(admin, aid)["status"] == "completed"
        assert alice.get(f"/api/actions/{aid}/secret").json()["value"] == "elevated-value-2"
        # the request cannot choose a level: an extra parameter is not even parsed
        r = alice.post("/api/actions", json={**READ, "parameters": {"name": "ROOT_KEY",
                                                                      "level": "public"}})
        aid = r.json()["action_id"]
        approve(admin, aid)
        out = finished(admin, aid)
        assert out["status"] == "failed"
        # an admin reads an admin secret
        aid = submit_read(admin, "ROOT_KEY")
        approve(carol, aid)
        assert finished(admin, aid)["status"] == "completed"
        assert admin.get(f"/api/actions/{aid}/secret").json()["value"] == "admin-value-3"
        # a missing secret fails clearly
        aid = submit_read(alice, "NOPE")
        approve(admin, aid)
        out = finished(admin, aid)
        assert out["status"] == "failed" and "no secret named 'NOPE'" in out["error"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_passphrase_vault_stays_locked_until_unlocked(tmp_path: Path, db_url: str) -> None:
    s = gate_settings(tmp_path, db_url=db_url)
    with Vault(s.database_url) as v:
        v.init_passphrase("a long passphrase")
        v.set("K", PLANTED)
    orch = Gate(s, manager=fake_manager(s))
    try:
        with live_server(s, orch) as live, live.client() as admin:
            assert admin.get("/api/vault").json()["locked"] is True
            aid = submit_read(admin, "K")
            approve(admin, aid)
            out = finished(admin, aid)
            assert out["status"] == "failed" and "locked" in out["error"]
            r = admin.post("/api/vault/unlock", json={"passphrase": "wrong passphrase"})
            assert r.status_code == 403 and r.json()["error"]["code"] == "vault_key_invalid"
            r = admin.put("/api/secrets/K", json={"value": "x"})
            assert r.status_code == 423 and r.json()["error"]["code"] == "vault_locked"
            user = orch.create_principal("eve", "user")
            with live.client(user) as eve:
                assert eve.post("/api/vault/unlock", json={"passphrase": "a long passphrase"}
                                ).status_code == 403
            r = admin.post("/api/vault/unlock", json={"passphrase": "a long passphrase"})
            assert r.status_code == 200 and r.json()["locked"] is False
            aid = submit_read(admin, "K")
            approve(admin, aid)
            assert finished(admin, aid)["status"] == "completed"
            assert admin.get(f"/api/actions/{aid}/secret").json()["value"] == PLANTED
            unlocks = [e.details for e in orch.audit.entries() if e.event == "vault.unlocked"]
            assert unlocks == [{"ok": False, "error": "VaultKeyInvalid"}, {"ok": True}]
    finally:
        orch.close()


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The installed ``closedpaw`` entry point, on the code under test."""
    import closedpaw

    cli = str(Path(sys.executable).with_name("closedpaw"))
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "PYTHONPATH": str(Path(closedpaw.__file__).parents[1])}
    return subprocess.run([cli, *args], input=stdin, capture_output=True, text=True, env=env,
                          timeout=120, check=False)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_vault_unlock_from_the_cli_admin_only_limited_and_never_logged(
        tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """``closedpaw vault unlock --passphrase-stdin`` against a running server: a user or an
    approver cannot unlock even with the right passphrase; a wrong one exits 1 with a clear
    message and the vault stays locked; after 5 attempts a minute one admin is refused (429,
    not tried: even the right passphrase) while another admin is not; every attempt tried is
    audited; the passphrases appear nowhere (audit files, database, logs, CLI output)."""
    right, wrong = "correct horse battery staple 7", "Tr0ub4dor&3-wrong-guess"
    s = gate_settings(tmp_path, db_url=db_url)
    with Vault(s.database_url) as v:
        v.init_passphrase(right)
        v.set("K", PLANTED)
    orch = Gate(s, manager=fake_manager(s))
    caplog.set_level(logging.DEBUG)
    outputs: list[str] = []
    try:
        with live_server(s, orch) as live:
            toks = {n: orch.create_principal(n, r) for n, r in
                    (("alice", "user"), ("bob", "approver"), ("carol", "admin"))}
            for name in ("alice", "bob"):
                with live.client(toks[name]) as c:
                    r = c.post("/api/vault/unlock", json={"passphrase": right})
                    assert r.status_code == 403, r.text
                    outputs.append(r.text)
            tf = tmp_path / "carol.token"
            tf.write_text(toks["carol"] + "\n")
            tf.chmod(0o600)
            common = ["--url", live.url, "--data-dir", str(s.data_dir)]
            out = _cli("vault", "unlock", "--passphrase-stdin", *common, stdin=wrong + "\n")
            outputs += [out.stdout, out.stderr]
            assert out.returncode == 1, out
            assert "vault_key_invalid" in out.stderr and "wrong passphrase" in out.stderr
            assert "Traceback" not in out.stderr
            with live.client() as admin:
                assert admin.get("/api/vault").json()["locked"] is True
                for _ in range(4):
                    r = admin.post("/api/vault/unlock", json={"passphrase": wrong})
                    assert r.status_code == 403, r.text
                    outputs.append(r.text)
                r = admin.post("/api/vault/unlock", json={"passphrase": right})
                outputs.append(r.text)
                assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
                assert int(r.headers["retry-after"]) >= 1
                assert admin.get("/api/vault").json()["locked"] is True
                # the limit is per principal: carol, another admin, unlocks from the CLI
                out = _cli("vault", "unlock", "--passphrase-stdin", "--token-file", str(tf),
                           *common, stdin=right + "\n")
                outputs += [out.stdout, out.stderr]
                assert out.returncode == 0, out
                assert out.stdout.startswith("vault unlocked: 1 secret(s)")
                assert admin.get("/api/vault").json()["locked"] is False
                # no passphrase on the command line: refused without a terminal
                out = _cli("vault", "unlock", "--token-file", str(tf), *common)
                assert out.returncode == 2 and "--passphrase-stdin" in out.stderr
            unlocks = [(e.principal, e.details) for e in orch.audit.entries()
                       if e.event == "vault.unlocked"]
            assert unlocks == [("admin", {"ok": False, "error": "VaultKeyInvalid"})] * 5 + [
                ("carol", {"ok": True})]
    finally:
        orch.close()
    logs = caplog.text + "\n".join(outputs)
    files = b"".join(f.read_bytes() for f in s.data_dir.rglob("*") if f.is_file())
    for secret in (right, wrong):
        assert secret not in logs
        assert secret.encode() not in files


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("server", [{"rate_limit_per_minute": 6}], indirect=True)
def test_rate_limits_are_per_principal_and_never_raise_risk(
        server: tuple[Live, dict[str, str]]) -> None:
    live, toks = server
    orch: Gate = live.app.state.gate
    with live.client(toks["alice"]) as alice, live.client(toks["bob"]) as bob:
        codes = [alice.post("/api/actions", json={**READ, "parameters": {"name": "API_KEY"}}
                            ).status_code for _ in range(8)]
        assert codes[:6] == [201] * 6 and codes[6:] == [429, 429]
        before = {a.id: a.security_level for a in orch.list_actions(limit=500)}
        assert len(before) == 6 and set(map(str, before.values())) == {"high"}
        # bob is not affected, and nothing alice sent while limited became an action
        assert bob.post("/api/actions", json={**READ, "parameters": {"name": "API_KEY"}}
                        ).status_code == 201
        after = orch.list_actions(limit=500)
        assert len(after) == 7 and {str(a.security_level) for a in after} == {"high"}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_planted_value_is_nowhere_else(server: tuple[Live, dict[str, str]],
                                           caplog: pytest.LogCaptureFixture) -> None:
    """After a full read cycle (and failures), grep every file of the data directory and
    every captured log record for the value and its hex / base64 forms."""
    caplog.set_level(logging.DEBUG)
    live, toks = server
    with live.client() as admin, live.client(toks["alice"]) as alice:
        admin.put("/api/secrets/API_KEY", json={"value": PLANTED})
        aid = submit_read(alice, "API_KEY")
        approve(admin, aid)
        finished(admin, aid)
        assert alice.get(f"/api/actions/{aid}/secret").json()["value"] == PLANTED
        alice.get(f"/api/actions/{aid}/secret")                 # refused: logged, no value
        admin.get("/api/audit-logs")
    forms = [PLANTED, PLANTED.encode().hex(), base64.b64encode(PLANTED.encode()).decode()[:16]]
    data = live.settings.data_dir
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in files) and any(p.name == "closedpaw.db"
                                                              for p in files)
    for p in files:
        blob = p.read_bytes()
        for f in forms:
            assert f.encode() not in blob, f"{f} found in {p}"
    text = "\n".join(r.getMessage() for r in caplog.records)
    for f in forms:
        assert f not in text
