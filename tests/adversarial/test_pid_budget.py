"""Host PIDs: a sandbox filled with processes or threads up to its limit stays inside its host
pids limit (under runsc: derived from the process limit, measured here), going past the limit
fails inside the sandbox, and the engine refuses a sandbox whose host pids limit would take the
sandboxes past their share of kernel.pid_max."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from adversarial_support import findings, probe_argv, spec

from closedpaw.errors import HostPidBudgetExceeded
from closedpaw.sandbox.bundle.resources import runsc_host_pids
from closedpaw.sandbox.host.cgroups import CGROUP_ROOT, is_v2, pid_budget
from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.settings import Settings


def _ctr(mgr: SandboxManager, sid: str) -> Path:
    parent = mgr.settings.sandbox.cgroup_parent
    base = CGROUP_ROOT if is_v2() else CGROUP_ROOT / "pids"
    return base / parent / sid


def _host_tasks(d: Path) -> int:
    return int((d / "pids.current").read_text())


def _peak(d: Path, seconds: float) -> int:
    end, peak = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        peak = max(peak, _host_tasks(d))
        time.sleep(0.2)
    return peak


FILL = """
import threading, time
kind, n = sys.argv[1], int(sys.argv[2])
made, err = 0, None
try:
    for _ in range(n):
        if kind == "procs":
            if os.fork() == 0:
                time.sleep(120)
                os._exit(0)
        else:
            threading.Thread(target=time.sleep, args=(120,), daemon=True).start()
        made += 1
except (OSError, RuntimeError) as e:
    err = getattr(e, "errno", None) or str(e)
print(json.dumps({"made": made, "err": errno.errorcode.get(err, err)}), flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("kind", ["procs", "threads"])
def test_processes_and_threads_up_to_the_limit_stay_inside_the_host_budget(
        mgr: SandboxManager, runtime: str, kind: str) -> None:
    n = 32
    with mgr.create(spec(timeout_s=60, max_processes=n, memory_mb=512),
                    runtime=runtime) as sb:
        d = _ctr(mgr, sb.id)
        limit = int((d / "pids.max").read_text())
        assert limit == (runsc_host_pids(n) if runtime == "runsc" else n)
        idle = _host_tasks(d)
        # The program asks for twice its limit; the sandbox refuses what passes it.
        first = b""
        with sb.stream(["python3", "-c", "import errno, json, os, sys\n" + FILL, kind,
                        str(2 * n)], timeout_s=60) as stream:
            for name, chunk in stream:
                if name == "stdout":
                    first += chunk
                    if b"\n" in first:
                        break
            got = json.loads(first.split(b"\n")[0])
            peak = _peak(d, 4.0)
        assert got["made"] < 2 * n and got["err"] in ("EAGAIN", "can't start new thread"), got
        assert peak <= limit, (peak, limit)
        assert sb.status.value == "running"           # the runtime survived the full sandbox
        print(f"\n{runtime} {kind}: made {got['made']} (limit {n}), host tasks idle {idle}, "
              f"peak {peak}, host pids limit {limit}")


def test_a_sandbox_past_the_host_pid_share_is_refused(mgr: SandboxManager, runtime: str,
                                                      tmp_path: Path) -> None:
    parent = mgr.settings.sandbox.cgroup_parent
    budget = pid_budget(parent)
    big = 4000 if runtime == "runc" else 128
    # enough of these to pass the share: the last one must be refused, before anything runs
    need = big if runtime == "runc" else runsc_host_pids(big)
    fits = budget.left // need
    kept = []
    try:
        for _ in range(fits):
            kept.append(mgr.create(spec(timeout_s=60, max_processes=big), runtime=runtime))
        before = pid_budget(parent)
        assert before.committed >= fits * need
        st = mgr.settings
        impatient = SandboxManager(Settings.of(
            state_dir=st.state_dir, data_dir=st.data_dir,
            cgroup_parent=st.sandbox.cgroup_parent, pid_wait_s=1.0))
        t0 = time.monotonic()
        try:
            with pytest.raises(HostPidBudgetExceeded, match=r"after waiting 1 s.*kernel\.pid_max"):
                impatient.create(spec(timeout_s=60, max_processes=big), runtime=runtime)
        finally:
            impatient.close()
        assert 1.0 <= time.monotonic() - t0 < 15
        assert pid_budget(parent).committed == before.committed      # nothing reserved
        assert len(mgr.list()) == fits
        if runtime == "runsc":   # one that could never fit is refused at once, no waiting
            t0 = time.monotonic()
            with pytest.raises(HostPidBudgetExceeded, match=r"not starting the sandbox: 1000"):
                mgr.create(spec(timeout_s=60, max_processes=1000), runtime=runtime)
            assert time.monotonic() - t0 < 10
        # a small sandbox still fits, and the big one does once a reservation is gone
        r = mgr.run(probe_argv("emit()"), spec(timeout_s=30, max_processes=8), runtime=runtime)
        findings(r)
        if kept:
            kept.pop().delete()
            end = time.monotonic() + 20   # teardown (and the reservation) ends in background
            while pid_budget(parent).committed > before.committed - need:
                assert time.monotonic() < end, pid_budget(parent)
                time.sleep(0.1)
            with mgr.create(spec(timeout_s=60, max_processes=big), runtime=runtime) as sb:
                assert sb.status.value == "running"
    finally:
        for sb in kept:
            sb.delete()
