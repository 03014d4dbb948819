"""The installed ``closedpaw`` command, run as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import (
    TEST_CGROUP,
    leftovers,
    require_runtime,
    sandbox_settings,
    settled_leftovers,
)

CLI = str(Path(sys.executable).with_name("closedpaw"))


def cli(*args: str, user: tuple[int, int] | None = None,
        stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "CLOSEDPAW_STATE_DIR": str(sandbox_settings().state_dir),
           "CLOSEDPAW_DATA_DIR": str(sandbox_settings().data_dir),
           "CLOSEDPAW_CGROUP_PARENT": TEST_CGROUP}
    cmd = [CLI, *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120,
                          input=stdin.decode() if stdin is not None else None, check=False)


@pytest.fixture(autouse=True)
def _no_leaks() -> object:
    """``closedpaw run`` hands teardown to a detached child and exits; that child must have
    removed everything shortly after."""
    yield
    left = settled_leftovers(sandbox_settings())
    assert not left, left


@pytest.mark.parametrize("rt", ["runc", "runsc"])
def test_json_has_every_field_and_exits_zero(rt: str) -> None:
    require_runtime(rt)
    p = cli("run", "--runtime", rt, "--json", "--", "python3", "-c",
            "import sys; print(6*7); sys.exit(3)")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["stdout"] == "42\n" and d["exit_code"] == 3
    assert d["isolation"]["runtime"] == rt and d["isolation"]["seccomp"] is True
    for k in ("stderr", "timed_out", "oom_killed", "duration_ms", "truncated", "usage",
              "stdout_truncated", "stderr_truncated", "sandbox_id"):
        assert k in d


@pytest.mark.parametrize("rt", ["runc", "runsc"])
def test_streams_and_passes_exit_codes(rt: str) -> None:
    require_runtime(rt)
    p = cli("run", "--runtime", rt, "--", "sh", "-c", "echo out; echo err >&2; exit 5")
    assert (p.returncode, p.stdout, p.stderr) == (5, "out\n", "err\n")
    p = cli("run", "--runtime", rt, "--timeout", "0.5", "--", "sleep", "30")
    assert p.returncode == 124 and "timed out" in p.stderr
    p = cli("run", "--runtime", rt, "--memory", "64m", "--", "python3", "-c",
            "b = bytearray(512 << 20)")
    assert p.returncode == 137 and "out of memory" in p.stderr


def test_input_output_and_env(tmp_path: Path) -> None:
    require_runtime("runc")
    (tmp_path / "in").mkdir()
    (tmp_path / "in/data.txt").write_text("21")
    p = cli("run", "--runtime", "runc", "--input", str(tmp_path / "in"), "--output",
            str(tmp_path / "out"), "--env", "MUL=2", "--", "python3", "-c",
            "import os; v=int(open('/input/data.txt').read())*int(os.environ['MUL']);"
            "open('/output/r.txt','w').write(str(v)); print(v)")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "42\n" and (tmp_path / "out/r.txt").read_text() == "42"


def test_stdin_flag() -> None:
    require_runtime("runc")
    p = cli("run", "--runtime", "runc", "--stdin", "--", "cat", stdin=b"hello")
    assert p.returncode == 0 and p.stdout == "hello"


@pytest.mark.parametrize(("args", "needle"), [
    (("run",), "needs a command"),
    (("run", "--memory", "lots", "--", "true"), "--memory"),
    (("run", "--cpus", "0", "--", "true"), "cpu_cores"),
    (("run", "--runtime", "docker", "--", "true"), "invalid choice"),
    (("run", "--env", "NOEQUALS", "--", "true"), "NAME=VALUE"),
    (("run", "--input", "/nonexistent/x", "--", "true"), "/nonexistent/x"),
    (("bogus",), "invalid choice"),
])
def test_usage_errors_exit_2_with_one_line(args: tuple[str, ...], needle: str) -> None:
    p = cli(*args)
    assert p.returncode == 2
    assert needle in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "Traceback" not in p.stderr


def test_not_root_fails_with_how_to_fix() -> None:
    if os.geteuid() != 0:
        pytest.fail("run as root to test the non-root path with setpriv", pytrace=False)
    p = cli("run", "--", "true", user=(65534, 65534))
    assert p.returncode == 2, p.stderr
    assert "need root" in p.stderr and "Traceback" not in p.stderr


def test_doctor_json_reports_live_probes() -> None:
    require_runtime("runc")
    require_runtime("runsc")
    p = cli("doctor", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    names = {r["name"]: r for r in d["runtimes"]}
    assert names["runsc"]["probe_ok"] and names["runc"]["probe_ok"]
    assert d["selected"] == "runsc" and d["usable"]
    assert names["runc"]["enforced"]["process_limit"] == "pids cgroup"
    # issue 15: runc sandboxes get a user namespace and host uid range of their own; runsc
    # cannot take one (said so, with why)
    u = names["runc"]["enforced"]["user_namespace"]
    assert u["own"] is True and u["range_size"] == 65536 and u["host_uids"].startswith(
        "2000000000-")
    assert names["runsc"]["enforced"]["user_namespace"]["own"] is False
    assert "OCI uid mappings" in names["runsc"]["enforced"]["user_namespace"]["why"]
    text = cli("doctor").stdout
    assert "probe PASS" in text
    assert "identity: own user namespace per sandbox, host uids from 2000000000-" in text
    assert "identity: no user namespace of its own: gVisor" in text


def test_help_is_true() -> None:
    p = cli("run", "--help")
    assert p.returncode == 0
    for flag in ("--runtime", "--memory", "--cpus", "--pids", "--timeout", "--input",
                 "--output", "--json"):
        assert flag in p.stdout


_SIGINT_DEFAULT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "os.execv(sys.argv[1], sys.argv[1:])")


@pytest.mark.parametrize(("rt", "sig"), [("runc", "SIGINT"), ("runsc", "SIGINT"),
                                         ("runc", "SIGTERM")])
def test_interrupt_kills_and_removes_the_sandbox(rt: str, sig: str) -> None:
    import signal

    require_runtime(rt)
    s = sandbox_settings()
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CLOSEDPAW_STATE_DIR": str(s.state_dir),
           "CLOSEDPAW_DATA_DIR": str(s.data_dir), "CLOSEDPAW_CGROUP_PARENT": TEST_CGROUP}
    # the CLI as a terminal starts it: SIGINT at its default. A test run started in the
    # background by a non-interactive shell has SIGINT ignored, and an ignored SIGINT is
    # inherited (Python then keeps ignoring it, as every program started with `&` does)
    p = subprocess.Popen([sys.executable, "-c", _SIGINT_DEFAULT, CLI, "run", "--runtime", rt,
                          "--", "sh", "-c", "echo up; sleep 60"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    with p:
        try:
            assert p.stdout is not None
            assert p.stdout.readline() == b"up\n"
            p.send_signal(getattr(signal, sig))
            _, err = p.communicate(timeout=60)
        finally:
            if p.poll() is None:   # a failure leaves no process (nor its pipes) behind
                p.kill()
                p.communicate()
    assert p.returncode == 130, err
    assert b"interrupted" in err
    deadline = time.monotonic() + 10
    while leftovers(s) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not leftovers(s)
