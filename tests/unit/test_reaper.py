"""The reaper: teardown jobs run in order, failures are reported, and the deferred mode hands
its jobs to a detached child that outlives the caller and writes nothing to its stdio."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from closedpaw.sandbox.host.reaper import Reaper


def test_threaded_runs_in_order_and_keeps_going_after_a_failure() -> None:
    r = Reaper()
    done: list[int] = []

    def boom() -> None:
        raise OSError("disk on fire")

    r.submit("one", lambda: done.append(1))
    r.submit("two", boom)
    r.submit("three", lambda: done.append(3))
    r.drain()
    assert done == [1, 3]
    assert r.errors == ["cleanup of two failed: disk on fire"]


def test_deferred_runs_nothing_until_drained(tmp_path: Path) -> None:
    log = tmp_path / "errors.log"
    r = Reaper(deferred=True, error_log=log)
    done: list[int] = []
    r.submit("one", lambda: done.append(1))
    assert done == []
    r.drain()
    assert done == [1]
    r.drain()  # nothing twice
    assert done == [1] and not log.exists()


def _wait_for(path: Path, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < end:
        time.sleep(0.02)
    assert path.exists(), f"{path} never appeared"


def test_detach_runs_jobs_in_a_child_after_the_caller_exited(tmp_path: Path) -> None:
    """A caller with a pipe on its stdout sees EOF when it exits, not when teardown ends; the
    child runs in its own session with stdio on /dev/null and records failures in the log."""
    marker, log, go = tmp_path / "done", tmp_path / "errors.log", tmp_path / "go"
    script = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from closedpaw.sandbox.host.reaper import Reaper

        r = Reaper(deferred=True, error_log=Path({str(log)!r}))

        def slow() -> None:   # waits until the test has seen the caller exit first
            deadline = time.monotonic() + 60
            while not Path({str(go)!r}).exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            fds = sorted(os.readlink(f"/proc/self/fd/{{n}}") for n in (0, 1, 2))
            sid = os.getsid(0) == os.getpid()
            Path({str(marker)!r}).write_text(f"{{sid}} {{fds}}")
            print("must not reach the caller's pipe")

        def boom() -> None:
            raise RuntimeError("nope")

        r.submit("slow", slow)
        r.submit("boom", boom)
        r.detach()
        print("caller done", flush=True)
    """)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=30, check=False)
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    assert p.stdout == "caller done\n" and p.stderr == ""
    assert not marker.exists(), f"the caller waited for teardown ({elapsed:.2f} s)"
    go.touch()
    _wait_for(marker)
    sid, fds = marker.read_text().split(" ", 1)
    assert sid == "True"
    assert fds == str([os.devnull] * 3)
    _wait_for(log)
    assert "cleanup of boom failed: nope" in log.read_text()


def test_an_idle_worker_ends_and_a_later_job_still_runs() -> None:
    """A process that makes many managers (a server's tests, a long-lived embedder) must not
    keep one sleeping thread per reaper forever; nothing submitted is ever lost to that."""
    before = threading.active_count()
    reapers = [Reaper(f"idle-{i}", idle_exit_s=0.2) for i in range(20)]
    ran: list[int] = []
    for i, r in enumerate(reapers):
        r.submit(f"job {i}", lambda i=i: ran.append(i))
    for r in reapers:
        r.drain()
    assert sorted(ran) == list(range(20))
    end = time.monotonic() + 10
    while threading.active_count() > before and time.monotonic() < end:
        time.sleep(0.05)
    assert threading.active_count() <= before, threading.enumerate()
    # racing the idle exit: jobs submitted around the moment the worker gives up all run
    r = reapers[0]
    for round_ in range(30):
        time.sleep(0.19 + (round_ % 3) * 0.01)
        r.submit(f"late {round_}", lambda n=round_: ran.append(100 + n))
    r.drain()
    assert sorted(x for x in ran if x >= 100) == [100 + n for n in range(30)]
