"""Resource attacks: memory, process and thread bombs, endless loops, output floods, a full
/tmp, a runaway command in a long-lived sandbox and a Ctrl-C in the caller. Each must be
contained by the sandbox and leave the host as it was."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from adversarial_support import (
    MIB,
    assert_no_new_uid_processes,
    findings,
    host_can_spawn,
    probe_argv,
    spec,
)

from closedpaw.sandbox.lifecycle.manager import SandboxManager

MEMORY_BOMB = """
x = []
while True:
    x.append(bytearray(1 << 20))  # touched pages: 1 MiB at a time
"""


def _host_still_fine(mgr: SandboxManager, runtime: str) -> None:
    host_can_spawn()
    after = mgr.run(["/bin/sh", "-c", "echo still-here"], spec(timeout_s=30), runtime=runtime)
    assert after.exit_code == 0 and after.stdout == b"still-here\n", after


def test_memory_bomb_is_oom_killed(mgr: SandboxManager, runtime: str,
                                   uid_baseline: dict[int, tuple[str, str, str]]) -> None:
    r = mgr.run(["python3", "-c", MEMORY_BOMB], spec(memory_mb=64, timeout_s=30),
                runtime=runtime)
    assert r.oom_killed is True, r
    assert r.exit_code == 137
    assert r.timed_out is False
    peak = r.usage.peak_memory_bytes
    assert peak is not None and peak <= 64 * MIB + MIB, f"peak {peak} above the 64 MiB limit"
    _host_still_fine(mgr, runtime)
    assert_no_new_uid_processes(uid_baseline, mgr)


def test_memory_bomb_in_long_lived_sandbox(mgr: SandboxManager, runtime: str) -> None:
    """The bomb is reported as an OOM kill of that command. Under runsc the kernel's OOM killer
    may pick the Sentry itself (it holds the sandbox's memory), which ends the whole sandbox;
    either way the result must say so and deleting the sandbox must still work."""
    with mgr.create(spec(memory_mb=64, timeout_s=60), runtime=runtime) as sb:
        r = sb.exec(["python3", "-c", MEMORY_BOMB], timeout_s=30)
        assert r.oom_killed is True, r
        assert r.exit_code == 137
        assert sb.refresh_status().value in ("running", "stopped")
    _host_still_fine(mgr, runtime)


PY_FORK_BOMB = """
import os, time
children, err = 0, None
try:
    while True:
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        children += 1
except OSError as e:
    err = errno.errorcode.get(e.errno)
RESULTS.update(children=children, err=err)
emit()
"""

PY_THREAD_BOMB = """
import threading, time
n, err = 0, None
try:
    while True:
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        n += 1
except (RuntimeError, OSError) as e:
    err = str(e)
RESULTS.update(threads=n, err=err)
emit()
os._exit(0)
"""

SH_FORK_BOMB = "f() { f | f & }; f; sleep 5; echo survived"


@pytest.mark.parametrize("attack", ["python-fork", "python-threads", "sh-fork"])
def test_fork_bomb_is_contained(mgr: SandboxManager, runtime: str, attack: str,
                                uid_baseline: dict[int, tuple[str, str, str]]) -> None:
    max_procs = 32
    timeout = 20.0
    argv = {"python-fork": probe_argv(PY_FORK_BOMB),
            "python-threads": probe_argv(PY_THREAD_BOMB),
            "sh-fork": ["/bin/sh", "-c", SH_FORK_BOMB]}[attack]
    t0 = time.monotonic()
    r = mgr.run(argv, spec(memory_mb=128, timeout_s=timeout, max_processes=max_procs),
                runtime=runtime)
    wall = time.monotonic() - t0
    assert wall < timeout + 15, f"the bomb was not stopped in time ({wall:.1f} s)"
    if attack == "sh-fork":
        # dash reports a failed fork as "Cannot fork"; or the whole bomb was killed.
        assert (b"Cannot fork" in r.stderr or r.oom_killed or r.timed_out), r
    elif r.oom_killed:
        # Contained by the memory cgroup before the process limit was reached (runsc
        # charges every forked interpreter to the sandbox).
        assert r.exit_code == 137
    else:
        f = findings(r)
        count = f["children"] if attack == "python-fork" else f["threads"]
        assert f["err"], f
        if attack == "python-fork":
            assert f["err"] == "EAGAIN", f
        assert count < max_procs, f"{count} processes/threads despite max_processes={max_procs}"
    host_can_spawn()
    assert_no_new_uid_processes(uid_baseline, mgr)


@pytest.mark.parametrize("argv", [
    ["python3", "-c", "while True: pass"],
    ["/bin/sh", "-c", "while :; do :; done"],
    # Ignores TERM, and a busy child hides in a new session and process group.
    ["python3", "-c", "import os, signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                      "if os.fork() == 0:\n    os.setsid()\nwhile True: pass"],
], ids=["python", "sh", "setsid-ignore-term"])
def test_infinite_loop_times_out(mgr: SandboxManager, runtime: str, argv: list[str],
                                 uid_baseline: dict[int, tuple[str, str, str]]) -> None:
    r = mgr.run(argv, spec(timeout_s=1.0), runtime=runtime)
    assert r.timed_out is True, r
    assert r.exit_code == 137
    assert 1000 <= r.duration_ms <= 6000, r.duration_ms
    assert_no_new_uid_processes(uid_baseline, mgr)


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_output_flood_is_capped(mgr: SandboxManager, runtime: str, stream: str) -> None:
    cap = 64 * 1024
    total = 8 * MIB
    code = (f"import sys\nb = b'A' * {MIB}\n"
            f"for _ in range({total // MIB}): sys.{stream}.buffer.write(b)\n"
            f"sys.{stream}.flush()")
    r = mgr.run(["python3", "-c", code], spec(timeout_s=30, output_cap_bytes=cap),
                runtime=runtime)
    assert r.exit_code == 0, r
    assert not r.timed_out
    if stream == "stdout":
        assert r.stdout == b"A" * cap
        assert r.stdout_truncated is True
        assert r.stdout_total_bytes == total
        assert r.stderr_truncated is False
    else:
        assert r.stderr == b"A" * cap
        assert r.stderr_truncated is True
        assert r.stderr_total_bytes == total
        assert r.stdout_truncated is False
    assert r.truncated is True


def test_endless_output_flood_is_capped_and_timed_out(mgr: SandboxManager,
                                                       runtime: str) -> None:
    cap = 4096
    r = mgr.run(["/bin/sh", "-c", "while :; do echo AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA; done"],
                spec(timeout_s=2.0, output_cap_bytes=cap), runtime=runtime)
    assert r.timed_out is True
    assert len(r.stdout) == cap
    assert r.stdout_truncated is True
    assert r.stdout_total_bytes > cap
    assert 2000 <= r.duration_ms <= 12000, r.duration_ms


def test_tmp_size_limit(mgr: SandboxManager, runtime: str) -> None:
    marker = f"closedpaw-adv-fill-{os.getpid()}-{time.monotonic_ns()}"
    body = f"""
    def fill():
        written = 0
        with open("/tmp/{marker}", "wb") as f:
            chunk = b"x" * (1 << 20)
            while written < 64 * (1 << 20):
                f.write(chunk)
                f.flush()
                written += len(chunk)
        return written
    probe("fill", fill)
    probe("size", lambda: os.stat("/tmp/{marker}").st_size)
    probe("statvfs", lambda: os.statvfs("/tmp").f_blocks * os.statvfs("/tmp").f_frsize)
    emit()
    """
    f = findings(mgr.run(probe_argv(body), spec(disk_mb=8, memory_mb=128, timeout_s=30),
                         runtime=runtime))
    assert f["fill"]["ok"] is False, f
    assert f["fill"]["errno"] == "ENOSPC", f
    assert f["size"]["ok"] and f["size"]["value"] <= 8 * MIB, f
    assert not any(p.name == marker for p in Path("/tmp").iterdir())
    host_can_spawn()


def test_exec_timeout_kills_only_that_command(mgr: SandboxManager, runtime: str) -> None:
    with mgr.create(spec(timeout_s=60), runtime=runtime) as sb:
        r0 = sb.exec(["/bin/sh", "-c", "echo kept > /tmp/state"], timeout_s=30)
        assert r0.exit_code == 0, r0
        r = sb.exec(["python3", "-c", "while True: pass"], timeout_s=1.0)
        assert r.timed_out is True, r
        assert r.exit_code == 137
        assert 1000 <= r.duration_ms <= 6000, r.duration_ms
        assert sb.refresh_status().value == "running"
        r2 = sb.exec(["/bin/sh", "-c", "cat /tmp/state"], timeout_s=30)
        assert r2.exit_code == 0 and r2.stdout == b"kept\n", r2
        # The killed loop no longer burns CPU in the sandbox.
        r3 = sb.exec(probe_argv("""
            def busy():
                out = []
                for pid in os.listdir("/proc"):
                    if pid.isdigit() and int(pid) != os.getpid():
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            out.append(f.read().replace(b"\\0", b" ").decode())
                return out
            probe("procs", busy)
            emit()
            """), timeout_s=30)
        procs = findings(r3)["procs"]["value"]
        assert not [p for p in procs if "while True" in p], procs


class _Interrupted(KeyboardInterrupt):
    pass


def test_ctrl_c_from_sink_leaves_no_orphan(mgr: SandboxManager, runtime: str,
                                           uid_baseline: dict[int, tuple[str, str, str]]) -> None:
    seen: list[bytes] = []

    def sink(stream: str, data: bytes) -> None:
        seen.append(data)
        raise _Interrupted()

    argv = ["/bin/sh", "-c", "echo started; sleep 60 & sleep 60; echo never"]
    t0 = time.monotonic()
    with pytest.raises(_Interrupted):
        mgr.run(argv, spec(timeout_s=60), runtime=runtime, sink=sink)
    assert time.monotonic() - t0 < 30, "the interrupted run waited for the program"
    assert seen and seen[0].startswith(b"started")
    assert_no_new_uid_processes(uid_baseline, mgr)
    host_can_spawn()
