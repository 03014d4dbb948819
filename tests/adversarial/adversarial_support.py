"""Helpers of the adversarial suite (imported by its tests; not a conftest so that plain
functions can be shared): attacks written as Python probes that run inside a
sandbox and print one JSON line of findings, plus host-side observers (processes of the
sandbox uid, file snapshots) used to prove the host is unchanged afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.sandbox.result import ExecutionResult
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec
from closedpaw.settings import Settings

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
def uid_processes(uid: int = SANDBOX_UID) -> dict[int, tuple[str, str, str]]:
    """Host processes whose real uid is ``uid``: pid -> (state letter, cmdline, cgroups)."""
    out: dict[int, tuple[str, str, str]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            status = Path(f"/proc/{name}/status").read_text()
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ")
            cgroups = Path(f"/proc/{name}/cgroup").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            out[int(name)] = (fields.get("State", "?").strip()[:1],
                              cmd.decode(errors="replace")[:160], cgroups)
    return out


def wait_until(cond: Callable[[], bool], timeout_s: float, step_s: float = 0.1) -> bool:
    end = time.monotonic() + timeout_s
    while True:
        if cond():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(step_s)


def _foreign(settings: Settings, cmd: str, cgroups: str) -> bool:
    """A process of another ClosedPaw instance on this host (a concurrent test run or a
    benchmark): it names another state dir or lives in another cgroup parent."""
    ours_cmd = str(settings.state_dir) in cmd
    ours_cg = f"/{settings.sandbox.cgroup_parent}/" in cgroups
    other_cmd = "closedpaw" in cmd and not ours_cmd
    other_cg = "closedpaw" in cgroups and not ours_cg
    return (other_cmd or other_cg) and not (ours_cmd or ours_cg)


def assert_no_new_uid_processes(before: dict[int, tuple[str, str, str]], mgr: SandboxManager,
                                timeout_s: float = 10.0) -> None:
    """After the manager has cleaned up, no living process of the sandbox uid that was not
    there before may remain on the host (sandboxed programs under runc, the Sentry and its
    ptrace stubs under runsc all run as 65534 on the host).

    Zombies are not counted: they are dead, and the host's init reaps the stubs of a killed
    Sentry a moment later. Processes of other ClosedPaw instances running concurrently on the
    host are ignored."""
    mgr.cleanup()

    def new() -> dict[int, tuple[str, str, str]]:
        return {p: v for p, v in uid_processes().items()
                if p not in before and v[0] != "Z" and not _foreign(mgr.settings, v[1], v[2])}

    wait_until(lambda: not new(), timeout_s)
    left = {p: (s, cmd) for p, (s, cmd, _) in new().items()}
    assert not left, f"sandbox processes still alive on the host: {left}"


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


