"""Helpers for the adversarial suite: attacks written as Python probes that run inside a
sandbox and print one JSON line of findings, plus host-side observers (processes of the
sandbox uid, file snapshots) used to prove the host is unchanged afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from closedpaw.sandbox.manager import SandboxManager
from closedpaw.sandbox.result import ExecutionResult
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec

SANDBOX_UID = 65534
MIB = 1024 * 1024

# Prepended to every probe: `probe(name, fn)` records the result or the errno of `fn()`;
# `emit()` prints everything as the last line of stdout.
PRELUDE = textwrap.dedent('''\
    import ctypes, errno, json, os, sys
    RESULTS = {}
    def probe(name, fn):
        try:
            RESULTS[name] = {"ok": True, "value": fn()}
        except OSError as e:
            RESULTS[name] = {"ok": False, "errno": errno.errorcode.get(e.errno, str(e.errno)),
                             "error": str(e)}
        except Exception as e:
            RESULTS[name] = {"ok": False, "errno": None, "error": f"{type(e).__name__}: {e}"}
    libc = ctypes.CDLL(None, use_errno=True)
    def raw(fn, *args):
        """Call a libc function; raise OSError on -1 like Python's os module does."""
        ctypes.set_errno(0)
        r = fn(*args)
        if r == -1:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return r
    def emit():
        sys.stdout.write("\\n" + json.dumps(RESULTS, default=repr) + "\\n")
        sys.stdout.flush()
    ''')


def probe_argv(body: str) -> list[str]:
    """argv running ``body`` (dedented) after :data:`PRELUDE` with the sandbox's python3."""
    return ["python3", "-c", PRELUDE + textwrap.dedent(body)]


def findings(res: ExecutionResult) -> dict[str, Any]:
    """The JSON line a probe printed; fails the test with the run's output otherwise."""
    lines = [ln for ln in res.stdout_text.splitlines() if ln.startswith("{")]
    assert res.exit_code == 0 and lines, (
        f"probe did not finish: exit={res.exit_code} timed_out={res.timed_out} "
        f"oom={res.oom_killed}\nstdout={res.stdout_text[-2000:]}\n"
        f"stderr={res.stderr_text[-2000:]}")
    data: dict[str, Any] = json.loads(lines[-1])
    return data


def limits(**kw: Any) -> ResourceLimits:
    """Small limits so the suite stays fast on 2 cores."""
    base: dict[str, Any] = dict(memory_mb=128, timeout_s=30, max_processes=32, disk_mb=16,
                                output_cap_bytes=MIB)
    base.update(kw)
    return ResourceLimits(**base)


def spec(**kw: Any) -> SandboxSpec:
    lim = {k: kw.pop(k) for k in list(kw) if k in ResourceLimits.__dataclass_fields__}
    return SandboxSpec(limits=limits(**lim), **kw)


def run_probe(mgr: SandboxManager, runtime: str, body: str, **kw: Any) -> dict[str, Any]:
    res = mgr.run(probe_argv(body), spec(**kw), runtime=runtime)
    return findings(res)


# -- host-side observers -----------------------------------------------------------------------
def uid_processes(uid: int = SANDBOX_UID) -> dict[int, tuple[str, str]]:
    """Host processes whose real uid is ``uid``: pid -> (state letter, command line)."""
    out: dict[int, tuple[str, str]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            status = Path(f"/proc/{name}/status").read_text()
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            out[int(name)] = (fields.get("State", "?").strip()[:1],
                              cmd.decode(errors="replace")[:100])
    return out


def wait_until(cond: Callable[[], bool], timeout_s: float, step_s: float = 0.1) -> bool:
    end = time.monotonic() + timeout_s
    while True:
        if cond():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(step_s)


def assert_no_new_uid_processes(before: dict[int, tuple[str, str]], mgr: SandboxManager,
                                timeout_s: float = 20.0) -> None:
    """After the manager has cleaned up, no process of the sandbox uid that was not there
    before may remain on the host (dead ptrace stubs of runsc are zombies until the host's
    init reaps them, hence the generous wait)."""
    mgr.cleanup()

    def new() -> dict[int, tuple[str, str]]:
        return {p: v for p, v in uid_processes().items() if p not in before}

    # Living processes must be gone promptly; zombies get more time to be reaped.
    wait_until(lambda: not {p for p, (s, _) in new().items() if s != "Z"}, 5.0)
    alive = {p: v for p, v in new().items() if v[0] != "Z"}
    assert not alive, f"sandbox processes still alive on the host: {alive}"
    wait_until(lambda: not new(), timeout_s)
    assert not new(), f"sandbox processes left on the host: {new()}"


def host_can_spawn() -> None:
    """The host can still start processes (a fork bomb did not exhaust pids or memory)."""
    p = subprocess.run(["/bin/sh", "-c", "echo alive"], capture_output=True, timeout=10,
                       check=False)
    assert p.returncode == 0 and p.stdout == b"alive\n"


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root`` (not following links): type, mode, size, mtime, target."""
    snap: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*dirnames, *filenames, ""]:
            p = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(p)
            target = os.readlink(p) if os.path.islink(p) else None
            snap[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns,
                                              st.st_ino, target)
    return snap


@pytest.fixture
def uid_baseline() -> Iterator[dict[int, tuple[str, str]]]:
    """Processes of the sandbox uid that existed before the test."""
    yield uid_processes()
