"""A planted secret, end to end on a real ``closedpaw serve`` and real runc sandboxes: it goes
into a sandbox only as the environment variable and the read-only file its execution policy
declares; the action asking for it is high; the sandbox prints it (plain, base64, hex,
URL-encoded, in an exception), puts it in request paths and query strings the server logs; and
afterwards neither the value nor any of those forms is found in any API answer (other than the
one approved secret_read delivery), the server's log, the audit log or any file of the data
directory (the database included)."""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import pytest

from closedpaw.errors import PolicyError
from closedpaw.sandbox.policy import load_policies
from closedpaw.vault.redact import encoded_forms
from tests.conftest import TEST_CGROUP, TEST_STATE, leftovers, require_runtime
from tests.integration.conftest import free_port, wait_for

CLI = str(Path(sys.executable).with_name("closedpaw"))
PLANTED = "sk-live/5b1e+0c9d7a3f4e21:q"
SECOND = "pw-second-8c1f2a9e7d"

POLICIES = """
version: 1
policies:
  python:   # the built-in python policy (medium by the default rules) plus the API key
    image: host
    secrets: {API_TOKEN: API_KEY}
    secret_files: {token: API_KEY}
"""

# prints the secret in every form, raises it, and tries to change the file
SANDBOX_CODE = r"""
import base64, hashlib, os, stat, sys, urllib.parse
v = os.environ["API_TOKEN"]
f = open("/run/secrets/token").read()
print("env", v)
print("file", f)
print("b64", base64.b64encode(v.encode()).decode())
print("b64url", base64.urlsafe_b64encode(("xy" + v).encode()).decode())
print("hex", v.encode().hex())
print("url", urllib.parse.quote(v, safe=""))
print("sha", hashlib.sha256(v.encode()).hexdigest(), hashlib.sha256(f.encode()).hexdigest())
st = os.stat("/run/secrets/token")
print("mode", oct(stat.S_IMODE(st.st_mode)), st.st_uid == os.getuid())
for how in ("w", "a"):
    try:
        open("/run/secrets/token", how).write("x")
        print("wrote")
    except OSError as e:
        print("refused", how, e.errno)
try:
    os.unlink("/run/secrets/token")
    print("unlinked")
except OSError as e:
    print("refused unlink", e.errno)
raise RuntimeError("leaking " + v)
"""


def forms(value: str) -> set[str]:
    """The value and its encodings, computed here independently of the redactor, plus the
    redactor's own list (base64 at each alignment)."""
    data = value.encode()
    out = {value, base64.b64encode(data).decode().rstrip("="),
           base64.urlsafe_b64encode(data).decode().rstrip("="), data.hex(), data.hex().upper(),
           urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
    return out | encoded_forms(value)


def leaks(blob: bytes, value: str) -> list[str]:
    return sorted(f for f in forms(value) if f.encode() in blob)


def env(data: Path, policies: Path) -> dict[str, str]:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CLOSEDPAW_STATE_DIR": str(TEST_STATE),
            "CLOSEDPAW_CGROUP_PARENT": TEST_CGROUP, "CLOSEDPAW_RUNTIME": "runc",
            "CLOSEDPAW_POLICY_FILE": str(policies), "CLOSEDPAW_DATA_DIR": str(data)}


def cli(e: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    r = subprocess.run([CLI, *args], capture_output=True, text=True, env=e, input=stdin,
                       timeout=120, check=False)
    assert r.returncode == 0, r
    return r


def test_a_planted_secret_reaches_its_sandbox_and_nowhere_else(tmp_path: Path) -> None:
    require_runtime("runc")
    data, policies = tmp_path / "data", tmp_path / "policies.yaml"
    policies.write_text(POLICIES)
    e = env(data, policies)
    cli(e, "vault", "init", "--key-file", str(tmp_path / "vault.key"))
    cli(e, "secret", "set", "API_KEY", "--level", "standard", stdin=PLANTED + "\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    answers: list[bytes] = []   # every API answer but the approved delivery
    with open(log_path, "w") as log:
        p = subprocess.Popen([CLI, "serve", "--port", str(port)], env=e, stdout=log,
                             stderr=subprocess.STDOUT)
        try:
            def up() -> bool:
                try:
                    return httpx.get(url + "/api/health", trust_env=False).status_code == 200
                except httpx.HTTPError:
                    assert p.poll() is None, log_path.read_text()
                    return False
            wait_for(up, "closedpaw serve")
            token = (data / "api-token").read_text().strip()
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                              trust_env=False, timeout=60) as c:
                def call(method: str, path: str, **kw: Any) -> httpx.Response:
                    r = c.request(method, path, **kw)
                    answers.append(r.content + json.dumps(dict(r.headers)).encode())
                    return r

                def done(aid: str) -> dict[str, Any]:
                    def check() -> dict[str, Any] | None:
                        a: dict[str, Any] = call("GET", f"/api/actions/{aid}").json()
                        return a if a["status"] in ("completed", "failed") else None
                    return wait_for(check, f"action {aid}", 120)  # type: ignore[no-any-return]

                assert call("GET", "/api/vault").json()["locked"] is False
                # code under the policy: high (it asks for a secret), so it waits
                sub = call("POST", "/api/actions", json={
                    "action_type": "code_execution", "parameters": {
                        "language": "python", "code": SANDBOX_CODE, "policy": "python"}}).json()
                assert (sub["status"], sub["security_level"]) == ("pending", "high"), sub
                assert "hands the sandbox secrets API_KEY" in sub["level_reason"], sub
                # the same code under a policy without secrets: no variable, no file
                plain = call("POST", "/api/actions", json={
                    "action_type": "code_execution", "parameters": {
                        "language": "python", "code": SANDBOX_CODE}}).json()
                assert (plain["status"], plain["security_level"]) == ("executing", "medium")
                without = done(plain["action_id"])["result"]
                assert "KeyError: 'API_TOKEN'" in without["stderr"], without
                call("POST", f"/api/actions/{sub['action_id']}/approve",
                     json={"params_sha256": sub["params_sha256"]}).raise_for_status()
                a = done(sub["action_id"])
                assert a["status"] == "completed", (a["error"], a["result"])
                out = a["result"]["stdout"].splitlines()
                by = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out
                      if " " in line and not line.startswith("refused")}
                # it arrived intact (the digests prove it without printing it)...
                want = hashlib.sha256(PLANTED.encode()).hexdigest()
                assert by["sha"] == f"{want} {want}", out
                # ... read-only, 0400, the sandbox user's
                assert by["mode"] == "0o400 True", out
                refused = [ln.rsplit(" ", 1) for ln in out if ln.startswith("refused")]
                assert [w for w, _ in refused] == ["refused w", "refused a", "refused unlink"]
                assert {int(n) for _, n in refused} <= {13, 30}, out   # EACCES / EROFS
                assert "wrote" not in out and "unlinked" not in out
                # ... and every printed form is redacted in the result
                for key in ("env", "file", "b64", "hex", "url"):
                    assert by[key] == "[secret:API_KEY]", (key, out)
                assert "[secret:API_KEY]" in by["b64url"], out
                assert "leaking [secret:API_KEY]" in a["result"]["stderr"]
                # the server logs paths and query strings: put the value and its forms there
                for f in sorted(forms(PLANTED)):
                    call("GET", f"/api/actions/{urllib.parse.quote(f, safe='')}",
                         params={"q": f})
                # a second secret set over the API: the answer has metadata only
                r = call("PUT", "/api/secrets/SECOND", json={"value": SECOND})
                assert r.status_code == 200 and SECOND not in r.text
                # the one approved delivery carries the value, once
                rd = call("POST", "/api/actions", json={
                    "action_type": "secret_read", "parameters": {"name": "API_KEY"}}).json()
                call("POST", f"/api/actions/{rd['action_id']}/approve",
                     json={"params_sha256": rd["params_sha256"]}).raise_for_status()
                assert done(rd["action_id"])["status"] == "completed"
                got = c.get(f"/api/actions/{rd['action_id']}/secret")
                assert got.status_code == 200 and got.json()["value"] == PLANTED
                again = call("GET", f"/api/actions/{rd['action_id']}/secret")
                assert again.status_code == 403, again.text
                for path in ("/api/actions", "/api/audit-logs", "/api/secrets", "/api/status"):
                    call("GET", path)
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            finally:
                if p.poll() is None:
                    p.kill()
    server_log = log_path.read_bytes()
    assert b"Application shutdown complete" in server_log and b"Traceback" not in server_log
    assert b"[secret:API_KEY]" in server_log   # the paths were logged, redacted
    for value in (PLANTED, SECOND):
        assert not leaks(b"".join(answers), value), "an API answer"
        assert not leaks(server_log, value), "the server log"
        for path in sorted(q for q in data.rglob("*") if q.is_file()):
            assert not leaks(path.read_bytes(), value), path
    assert not leftovers(env_settings(e))


def env_settings(e: dict[str, str]) -> Any:
    from closedpaw.settings import Settings

    return Settings.from_env(e)


@pytest.mark.parametrize(("body", "key"), [
    ("secrets: {1BAD: API_KEY}", "policies.p.secrets.1BAD"),
    ("secrets: {GOOD: 'no spaces'}", "policies.p.secrets.GOOD"),
    ("secrets: [API_KEY]", "policies.p.secrets"),
    ('secrets: {"K\\n": API_KEY}', "policies.p.secrets.K\n"),       # a trailing newline
    ('secrets: {K: "API_KEY\\n"}', "policies.p.secrets.K"),
    ("secret_files: {../up: API_KEY}", "policies.p.secret_files.../up"),
    ("env: {K: v}\n    secrets: {K: API_KEY}", "policies.p.secrets.K"),
    ("secret_files: {t: API_KEY}\n    tmpfs: {/run/x: 1m}", "policies.p.tmpfs"),
])
def test_secret_keys_of_a_policy_are_validated(tmp_path: Path, body: str, key: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(f"version: 1\npolicies:\n  p:\n    {body}\n")
    with pytest.raises(PolicyError) as err:
        load_policies(f)
    assert err.value.key == key, err.value


def test_secrets_are_never_inherited_from_the_default_policy(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("version: 1\npolicies:\n  default:\n    secrets: {K: API_KEY}\n  other: {}\n")
    pols = load_policies(f)
    assert pols.get("default").secrets == {"K": "API_KEY"}
    assert pols.get("other").secrets == {} and pols.get("python").secret_names == set()
    assert "API_KEY" not in repr(pols.get("other").spec)


def test_secret_file_values_never_show_in_a_spec_repr() -> None:
    from closedpaw.sandbox.spec import SandboxSpec

    spec = SandboxSpec(secret_files={"t": PLANTED})
    assert spec.secret_files["t"] == PLANTED and PLANTED not in repr(spec)


GATED = """
version: 1
policies:
  elevated: {image: host, secrets: {DB: DB_PASSWORD}}
  topkey: {image: host, secret_files: {k: ROOT_KEY}}
  missing: {image: host, secrets: {X: NOPE}}
"""


def test_code_asking_for_secrets_is_raised_and_enforced_per_role(tmp_path: Path) -> None:
    from closedpaw.gate import ActionRequest, ActionStatus, Gate
    from closedpaw.security import Principal
    from closedpaw.vault import Vault
    from tests.integration.conftest import fake_manager, gate_settings

    (tmp_path / "p.yaml").write_text(GATED)
    s = gate_settings(tmp_path, policy_file=tmp_path / "p.yaml")
    with Vault(s.database_url) as v:
        v.init_key_file(tmp_path / "vault.key")
        v.set("DB_PASSWORD", "elevated-pw-77", "elevated")
        v.set("ROOT_KEY", "admin-key-88", "admin")
    g = Gate(s, manager=fake_manager(s))
    try:
        g.start()
        g.create_principal("alice", "user")
        g.create_principal("root", "admin")
        alice, admin = Principal("alice", "user"), Principal("root", "admin")

        def run(policy: str) -> tuple[str, Any]:
            rec = g.submit(alice, ActionRequest(action_type="code_execution", parameters={
                "argv": ["true"], "policy": policy}))
            level = str(rec.security_level)
            g.approve(admin, rec.id, rec.params_sha256)
            return level, wait_for(lambda: (r := g.get(rec.id)).status.final and r,
                                   f"action {rec.id}")

        level, rec = run("elevated")
        assert level == "critical" and rec.status is ActionStatus.COMPLETED, rec.error
        level, rec = run("topkey")   # a user may never read an admin secret
        assert level == "critical" and rec.status is ActionStatus.FAILED
        assert "may not read it" in rec.error
        level, rec = run("missing")
        assert level == "high" and "no secret named 'NOPE'" in rec.error
        g.vault.lock()
        level, rec = run("elevated")
        assert rec.status is ActionStatus.FAILED and "the vault is locked" in rec.error
        assert all("elevated-pw-77" not in repr(e.to_dict()) for e in g.audit.entries())
    finally:
        g.close()
