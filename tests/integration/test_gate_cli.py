"""End to end: approved code really runs in runc and runsc sandboxes; the CLI over a real
``closedpaw serve``; kill -9 in the middle of an execution, then restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from closedpaw.gate import Gate
from closedpaw.sandbox.drivers.runc import RuncDriver
from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.settings import Settings
from tests.conftest import (
    TEST_CGROUP,
    TEST_STATE,
    leftovers,
    require_runtime,
    settled_leftovers,
)
from tests.integration.conftest import (
    fake_manager,
    free_port,
    gate_settings,
    live_server,
    python_handler,
    wait_for,
)

CLI = str(Path(sys.executable).with_name("closedpaw"))
HIGH = {"action_type": "code_execution",
        "parameters": {"language": "python", "code": "print(6*7)"}, "min_level": "high"}


def env(**more: str) -> dict[str, str]:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CLOSEDPAW_STATE_DIR": str(TEST_STATE),
            "CLOSEDPAW_CGROUP_PARENT": TEST_CGROUP, **more}


def cli(*args: str, **more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env(**more),
                          timeout=120, check=False, stdin=subprocess.DEVNULL)


def finished(c: httpx.Client, aid: str, timeout: float = 120) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        a: dict[str, Any] = c.get(f"/api/actions/{aid}").json()
        return a if a["status"] in ("completed", "failed", "interrupted") else None
    return wait_for(check, f"action {aid}", timeout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("rt", ["runc", "runsc"])
def test_approved_code_runs_in_a_real_sandbox(rt: str, tmp_path: Path) -> None:
    require_runtime(rt)
    s = Settings.of(data_dir=tmp_path / "data", state_dir=TEST_STATE, cgroup_parent=TEST_CGROUP,
                    runtime=rt)
    orch = Gate(s)
    try:
        with live_server(s, orch) as live, live.client() as c:
            sub = c.post("/api/actions", json=HIGH).json()
            assert sub["status"] == "pending"
            time.sleep(0.2)
            assert c.get(f"/api/actions/{sub['action_id']}").json()["result"] is None
            c.post(f"/api/actions/{sub['action_id']}/approve",
                   json={"params_sha256": sub["params_sha256"]}).raise_for_status()
            a = finished(c, sub["action_id"])
            assert a["status"] == "completed", a
            res = a["result"]
            assert (res["stdout"], res["exit_code"]) == ("42\n", 0)
            iso = res["isolation"]
            assert iso["runtime"] == rt and iso["network"] == "none" and iso["seccomp"]
            assert iso["user"] == "65534:65534" and iso["capabilities"] == []
            # the sandbox, not the host: no network, no host writes
            probe = {"action_type": "code_execution", "parameters": {"argv": [
                "python3", "-c", "import socket,os\n"
                "s=socket.socket()\n"
                "try:\n s.connect(('127.0.0.1', 22)); print('net')\n"
                "except OSError as e: print('no-net')\n"
                "try:\n open('/etc/closedpaw-pwned','w'); print('wrote')\n"
                "except OSError: print('no-write')\n"]}}
            r2 = finished(c, c.post("/api/actions", json=probe).json()["action_id"])
            assert r2["result"]["stdout"].split() == ["no-net", "no-write"], r2
            assert not Path("/etc/closedpaw-pwned").exists()
            runs = [e for e in c.get("/api/audit-logs", params={"limit": 1000}).json()[
                "entries"] if e["event"] == "sandbox.run"]
            assert runs and runs[0]["details"]["isolation"]["runtime"] == rt
    finally:
        orch.close()
    assert not leftovers(s)
    v = cli("audit", "verify", "--data-dir", str(s.data_dir))
    assert v.returncode == 0 and "intact" in v.stdout, v


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real 'closedpaw serve' process on a free loopback port."""
    require_runtime("runsc")
    data = tmp_path / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115
    p = subprocess.Popen([CLI, "serve", "--port", str(port), "--data-dir", str(data)],
                         env=env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            try:
                return httpx.get(url + "/api/health", trust_env=False).status_code == 200
            except httpx.HTTPError:
                assert p.poll() is None, (tmp_path / "serve.log").read_text()
                return False
        wait_for(up, "closedpaw serve")
        yield url, data
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        finally:
            if p.poll() is None:
                p.kill()
            log.close()
    out = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in out, out
    assert f"admin token in {data}/api-token" in out
    # uvicorn shuts down cleanly, then re-raises SIGTERM: the conventional exit status
    assert "Application shutdown complete" in out
    assert p.returncode in (0, -signal.SIGTERM), out
    assert not leftovers(Settings.of(state_dir=TEST_STATE, cgroup_parent=TEST_CGROUP))


def test_cli_over_a_real_server(served: tuple[str, Path]) -> None:
    url, data = served
    tok_file = data / "api-token"
    assert os.stat(tok_file).st_mode & 0o777 == 0o600
    token = tok_file.read_text().strip()
    common = ("--data-dir", str(data), "--url", url)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                      trust_env=False) as c:
        sub = c.post("/api/actions", json=HIGH).json()
        other = c.post("/api/actions", json=HIGH).json()
        aid = sub["action_id"]
        ls = cli("actions", "list", *common)
        assert ls.returncode == 0 and aid in ls.stdout and "pending" in ls.stdout
        show = cli("actions", "show", aid, *common)
        assert show.returncode == 0 and sub["params_sha256"] in show.stdout
        assert '"code":"print(6*7)"' in show.stdout
        wrong = cli("actions", "approve", aid, "--sha256", "0" * 64, *common)
        assert wrong.returncode == 1 and "approval_refused" in wrong.stderr
        blind = cli("actions", "approve", aid, *common)
        assert blind.returncode == 2 and "--sha256" in blind.stderr
        ok = cli("actions", "approve", aid, "--sha256", sub["params_sha256"], *common)
        assert ok.returncode == 0, ok.stderr
        done = finished(c, aid)
        assert done["result"]["stdout"] == "42\n" and done["result"]["isolation"]["runtime"]
        rej = cli("actions", "reject", other["action_id"], "--reason", "no", *common)
        assert rej.returncode == 0 and "rejected" in rej.stdout
        show = cli("actions", "show", aid, "--json", *common)
        assert json.loads(show.stdout)["status"] == "completed"
        new = cli("token", "create", "--name", "eve", "--role", "user", "--data-dir", str(data))
        assert new.returncode == 0, new.stderr
        eve = new.stdout.strip()
        r = httpx.get(url + "/api/status", headers={"Authorization": f"Bearer {eve}"},
                      trust_env=False)
        assert r.json()["principal"] == {"name": "eve", "role": "user"}
        dup = cli("token", "create", "--name", "eve", "--role", "user", "--data-dir", str(data))
        assert dup.returncode == 1 and "exists already" in dup.stderr
        rev = cli("token", "revoke", "--name", "eve", "--data-dir", str(data))
        assert rev.returncode == 0, rev.stderr
        r = httpx.get(url + "/api/status", headers={"Authorization": f"Bearer {eve}"},
                      trust_env=False)
        assert r.status_code == 401          # at once, on the running server
        again = cli("token", "revoke", "--name", "eve", "--data-dir", str(data))
        assert again.returncode == 1 and "no active principal" in again.stderr
        listed = cli("token", "list", "--data-dir", str(data)).stdout
        assert "admin" in listed and "revoked" in listed and token not in listed
        bad = cli("actions", "list", "--url", url, "--token-file", "/nonexistent")
        assert bad.returncode == 2 and "cannot read the token" in bad.stderr
    v = cli("audit", "verify", "--data-dir", str(data))
    assert v.returncode == 0 and "intact" in v.stdout, v.stdout + v.stderr
    ex = cli("audit", "export", "--data-dir", str(data))
    rows = [json.loads(x) for x in ex.stdout.splitlines()]
    events = [r["event"] for r in rows]
    assert "token.created" in events and "sandbox.run" in events and "action.rejected" in events
    assert "token.revoked" in events
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))


def test_audit_verify_names_the_first_bad_entry(tmp_path: Path) -> None:
    s = gate_settings(tmp_path)
    orch = Gate(s, manager=fake_manager(s, python_handler))
    try:
        orch.start()
        for i in range(4):
            orch.create_principal(f"p{i}", "user")
    finally:
        orch.close()
    path = s.audit_dir / "audit.jsonl"
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b'"name":"p2"', b'"name":"p3"', 1))
    v = cli("audit", "verify", "--data-dir", str(s.data_dir))
    assert v.returncode == 1 and "BROKEN at seq 3" in v.stdout, v.stdout
    j = cli("audit", "verify", "--json", "--data-dir", str(s.data_dir))
    assert json.loads(j.stdout)["first_bad_seq"] == 3
    missing = cli("audit", "verify", "--data-dir", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "no audit log" in missing.stderr


def _await_health(p: subprocess.Popen[bytes], url: str, what: str) -> None:
    """Wait until ``url``'s health probe answers; if it never does (or ``p`` died), kill
    ``p`` and fail with its stderr."""
    def up() -> bool:
        try:
            return httpx.get(url + "/api/health", trust_env=False).status_code == 200
        except httpx.HTTPError:
            assert p.poll() is None, p.stderr.read() if p.stderr else ""
            return False
    try:
        wait_for(up, what)
    except BaseException:
        p.kill()
        p.wait()
        if p.stderr:
            p.stderr.close()
        raise


def _start_server(script: str, s: Settings) -> tuple[subprocess.Popen[bytes], str]:
    """``script`` (argv: port, data dir, state dir, cgroup parent) in a child process, once
    its health probe answers on 127.0.0.1."""
    port = free_port()
    p = subprocess.Popen([sys.executable, "-c", script, str(port), str(s.data_dir),
                          str(s.state_dir), TEST_CGROUP], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    _await_health(p, url, "the server")
    return p, url


SLOW_SERVER = """
import sys, time, uvicorn
from pathlib import Path
from closedpaw.api import create_app
from closedpaw.gate import Gate
from closedpaw.sandbox.drivers.fake import FakeDriver
from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.settings import Settings

def slow(argv, stdin):
    time.sleep(600)
    return 0, b"", b""

s = Settings.of(data_dir=Path(sys.argv[2]), state_dir=Path(sys.argv[3]),
                cgroup_parent=sys.argv[4])
o = Gate(s, manager=SandboxManager(s, driver=FakeDriver(slow)))
uvicorn.run(create_app(s, gate=o), host="127.0.0.1", port=int(sys.argv[1]),
            log_level="warning")
"""


def test_kill_9_mid_execution_then_restart(tmp_path: Path) -> None:
    s = gate_settings(tmp_path)
    p, url = _start_server(SLOW_SERVER, s)
    try:
        token = s.token_file.read_text().strip()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          trust_env=False) as c:
            pend = c.post("/api/actions", json=HIGH).json()
            aid = c.post("/api/actions", json={**HIGH, "min_level": None}).json()["action_id"]
            wait_for(lambda: c.get(f"/api/actions/{aid}").json()["status"] == "executing",
                     "execution to start")
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stderr:
            p.stderr.close()
    orch = Gate(s, manager=fake_manager(s, python_handler))
    try:
        with live_server(s, orch) as live, live.client() as c:
            a = c.get(f"/api/actions/{aid}").json()
            assert a["status"] == "interrupted" and "interrupted" in a["error"]
            still = c.get(f"/api/actions/{pend['action_id']}").json()
            assert still["status"] == "pending"   # the pending one survived, still approvable
            c.post(f"/api/actions/{pend['action_id']}/approve",
                   json={"params_sha256": pend["params_sha256"]}).raise_for_status()
            assert finished(c, pend["action_id"])["result"]["stdout"] == "42\n"
            assert c.get("/api/audit/verify").json()["ok"] is True
            events = [e["event"] for e in c.get("/api/audit-logs",
                                                params={"limit": 1000}).json()["entries"]
                      if e["action_id"] == aid]
            assert events[-1] == "action.interrupted"
    finally:
        orch.close()


REAL_SERVER = """
import sys, uvicorn
from pathlib import Path
from closedpaw.api import create_app
from closedpaw.settings import Settings

s = Settings.of(data_dir=Path(sys.argv[2]), state_dir=Path(sys.argv[3]),
                cgroup_parent=sys.argv[4], runtime="runc", code_pool=False)  # one cold sandbox
uvicorn.run(create_app(s), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def test_kill_9_with_a_real_sandbox_running_then_restart_reaps_it(tmp_path: Path) -> None:
    """The server dies with SIGKILL while its code runs in a real runc sandbox: the sandbox
    outlives it. The next start marks the action interrupted and removes the sandbox's
    container, cgroups and state (audited as sandbox.reaped)."""
    require_runtime("runc")
    s = gate_settings(tmp_path, runtime="runc")
    slow = {"action_type": "code_execution",
            "parameters": {"language": "python", "code": "import time; time.sleep(600)"}}
    p, url = _start_server(REAL_SERVER, s)
    try:
        token = s.token_file.read_text().strip()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          trust_env=False) as c:
            aid = c.post("/api/actions", json=slow).json()["action_id"]
            runc = RuncDriver(s.state_dir / "runc")
            wait_for(lambda: any(runc.state(i) == "running" for i in runc.list_ids()),
                     "the sandbox to run")
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    except BaseException:
        p.kill()  # whatever failed, leave no sandbox behind: its owner dies, gc reaps it
        p.wait()
        SandboxManager(s).gc()
        raise
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stderr:
            p.stderr.close()
    left = leftovers(s)
    orch = Gate(s)
    try:
        assert any("runc container" in x for x in left), left
        assert any("cgroup" in x for x in left), left
        with live_server(s, orch) as live, live.client() as c:
            assert not leftovers(s), leftovers(s)
            assert c.get(f"/api/actions/{aid}").json()["status"] == "interrupted"
            entries = c.get("/api/audit-logs", params={"limit": 1000}).json()["entries"]
            reaped = [e for e in entries if e["event"] == "sandbox.reaped"]
            assert len(reaped) == 1 and reaped[0]["details"]["errors"] == [], reaped
            assert len(reaped[0]["details"]["removed"]) == 1
            assert c.get("/api/audit/verify").json()["ok"] is True
    finally:
        orch.close()
        SandboxManager(s).gc()  # a no-op when the restart reaped it, as it must
    assert not leftovers(s), leftovers(s)


def _serve(s: Settings, runtime: str) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``closedpaw serve`` (this checkout's package) with the code pool on."""
    import closedpaw

    port = free_port()
    e = env(CLOSEDPAW_RUNTIME=runtime, CLOSEDPAW_CODE_POOL="1", CLOSEDPAW_POOL_SIZE="2",
            CLOSEDPAW_STATE_DIR=str(s.state_dir),
            PYTHONPATH=str(Path(closedpaw.__file__).resolve().parents[1]))
    p = subprocess.Popen([sys.executable, "-m", "closedpaw.cli.main", "serve", "--port",
                          str(port), "--data-dir", str(s.data_dir)], env=e,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    _await_health(p, url, "closedpaw serve")
    return p, url


def _stop(p: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p.stderr:
        p.stderr.close()


@pytest.mark.parametrize("rt", ["runc", "runsc"])
def test_kill_9_of_serve_holding_a_warm_pool_then_restart_reaps_it(rt: str,
                                                                    tmp_path: Path) -> None:
    """``closedpaw serve`` with the code pool on runs one action from its warm pool (which
    refills), then dies with SIGKILL while the pool's sandboxes idle and one more action is
    running in a pooled sandbox. The next ``closedpaw serve`` reaps every one of them at
    start: no container, cgroup, state dir or mount of the killed server remains, the
    running action is interrupted, and the new server runs code from a new pool."""
    require_runtime(rt)
    s = gate_settings(tmp_path, runtime=rt)
    p, url = _serve(s, rt)
    try:
        token = s.token_file.read_text().strip()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          trust_env=False, timeout=60) as c:
            quick = {"action_type": "code_execution",
                     "parameters": {"language": "python", "code": "print(6*7)"}}
            first = finished(c, c.post("/api/actions", json=quick).json()["action_id"])
            assert first["status"] == "completed" and first["result"]["stdout"] == "42\n"
            slow = {"action_type": "code_execution",
                    "parameters": {"language": "python", "code": "import time; time.sleep(600)"}}
            aid = c.post("/api/actions", json=slow).json()["action_id"]
            wait_for(lambda: c.get(f"/api/actions/{aid}").json()["status"] == "executing",
                     "the slow action to run")
        # the warm pool holds two idle sandboxes beside the running one (the first action's
        # sandbox, deleted in the background after the pool's settle, is gone)
        used = first["result"]["sandbox_id"]

        def refilled() -> bool:
            now = leftovers(s)
            return (not any(used in x for x in now)
                    and sum(1 for x in now if "state dir" in x) >= 3)
        wait_for(refilled, "the pool to refill and the used sandbox to go", 120)
        _stop(p, signal.SIGKILL)
        before = leftovers(s)
        assert sum(1 for x in before if "state dir" in x) >= 3, before
        assert any("cgroup" in x for x in before), before
    except BaseException:
        _stop(p, signal.SIGKILL)
        SandboxManager(s).gc()   # a failure here leaves nothing behind either
        raise
    p, url = _serve(s, rt)
    try:
        assert not leftovers(s), leftovers(s)   # gc at start took them all
        token = s.token_file.read_text().strip()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          trust_env=False, timeout=60) as c:
            assert c.get(f"/api/actions/{aid}").json()["status"] == "interrupted"
            entries = c.get("/api/audit-logs", params={"limit": 1000}).json()["entries"]
            reaped = [e for e in entries if e["event"] == "sandbox.reaped"]
            assert len(reaped) == 1 and reaped[0]["details"]["errors"] == [], reaped
            assert len(reaped[0]["details"]["removed"]) >= 3, reaped
            again = finished(c, c.post("/api/actions", json=quick).json()["action_id"])
            assert again["status"] == "completed" and again["result"]["stdout"] == "42\n"
            assert c.get("/api/audit/verify").json()["ok"] is True
    finally:
        _stop(p)
        left = settled_leftovers(s)
        SandboxManager(s).gc()
    assert not left, left


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_a_signal_to_serve_stops_its_code_and_tears_down_every_sandbox_before_it_exits(
        tmp_path: Path, sig: str) -> None:
    """``closedpaw serve`` stopped with SIGTERM (as systemd stops it) or SIGHUP (its terminal
    hung up) holding a sandbox session, the sessions' warm pool, the code pool, and an
    action whose code runs (a 600 s sleep): when the process has exited, the code is stopped,
    none of their sandboxes is left, and the action is recorded ``interrupted``, as after a
    crash. Before: uvicorn re-raises SIGTERM after the app's shutdown, so the sessions and
    their pool stayed behind, and the running container ran on as an orphan (or the action
    was recorded failed); SIGHUP killed the process on the spot."""
    require_runtime("runc")
    s = gate_settings(tmp_path, runtime="runc")
    p, url = _serve(s, "runc")
    try:
        token = s.token_file.read_text().strip()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          trust_env=False, timeout=60) as c:
            def act(action_type: str, **parameters: Any) -> str:
                aid: str = c.post("/api/actions", json={"action_type": action_type,
                                                        "parameters": parameters}
                                  ).json()["action_id"]
                return aid
            made = finished(c, act("sandbox_session", op="create", policy="default"))
            assert made["status"] == "completed", made
            ran = finished(c, act("code_execution", language="python", code="print(6*7)"))
            assert ran["result"]["stdout"] == "42\n", ran
            # the session's sandbox, the sessions' pool refilled, the code pool's sandboxes
            wait_for(lambda: sum(1 for x in leftovers(s) if "state dir" in x) >= 3,
                     "the session and both pools to hold their sandboxes", 120)
            slow = act("code_execution", language="python", code="import time; time.sleep(600)")
            wait_for(lambda: c.get(f"/api/actions/{slow}").json()["status"] == "executing",
                     "the slow action to run")
        _stop(p, getattr(signal, sig))
        assert p.returncode in (0, -signal.SIGTERM), p.returncode
        left = leftovers(s)   # at once: the server waited for the teardown before it exited
    finally:
        _stop(p, signal.SIGKILL)
        SandboxManager(s).gc()
    assert not left, left
    orch = Gate(s)   # no start(): what the stopped server recorded, as it recorded it
    try:
        rec = orch.get(slow)
        assert rec.status == "interrupted", rec
        assert rec.error == "interrupted: the server stopped while it was executing", rec
        assert orch.audit.verify().ok
    finally:
        orch.close()

def test_interactive_approve_shows_the_parameters_and_asks(tmp_path: Path) -> None:
    import pty

    s = gate_settings(tmp_path)
    orch = Gate(s, manager=fake_manager(s, python_handler))
    try:
        with live_server(s, orch) as live, live.client() as c:
            subs = [c.post("/api/actions", json=HIGH).json() for _ in range(2)]
            for sub, answer, code in ((subs[0], b"n\n", 1), (subs[1], b"y\n", 0)):
                master, slave = pty.openpty()
                try:
                    p = subprocess.Popen(
                        [CLI, "actions", "approve", sub["action_id"], "--url", live.url,
                         "--data-dir", str(s.data_dir)], stdin=slave, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, env=env())
                    os.write(master, answer)
                    out, err = p.communicate(timeout=60)
                finally:
                    os.close(master)
                    os.close(slave)
                assert p.returncode == code, err
                assert sub["params_sha256"].encode() in out and b"print(6*7)" in out
                assert b"approve exactly these parameters? [y/N]" in out
            assert c.get(f"/api/actions/{subs[0]['action_id']}").json()["status"] == "pending"
            assert finished(c, subs[1]["action_id"])["status"] == "completed"
    finally:
        orch.close()
