"""runsc snapshots: a checkpoint of a warmed sandbox, clones restored from it, their isolation
(the same stamp and the same refusals as a cold sandbox), the image's permissions and its
removal, a pool of clones, and ``gc`` of the image of a killed owner."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from closedpaw.errors import SnapshotError
from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec
from tests.conftest import TEST_CGROUP, leftovers, require_runtime, sandbox_settings

SPEC = SandboxSpec(limits=ResourceLimits(memory_mb=256, timeout_s=30))
# A background interpreter that imported its modules, and a file in the sandbox's /tmp.
WARMUP = [["sh", "-c", "echo warm > /tmp/state"],
          ["sh", "-c", "python3 -c 'import json, re, decimal, time; time.sleep(100000)' "
                       ">/dev/null 2>&1 &"]]


def test_clone_resumes_the_warm_state_with_the_isolation_of_a_cold_sandbox(
        mgr: SandboxManager) -> None:
    require_runtime("runsc")
    with mgr.create(SPEC, runtime="runsc") as cold:
        cold_iso = cold.exec(["true"]).isolation
    with mgr.snapshot(SPEC, warmup=WARMUP) as snap:
        assert snap.checkpoint_ms > 0 and snap.size_bytes() > 0
        with snap.restore() as clone:
            assert clone.restored and clone.id != snap.id
            r = clone.exec(["cat", "/tmp/state"])
            assert (r.exit_code, r.stdout_text) == (0, "warm\n"), r.stderr_text
            ps = clone.exec(["ps", "-eo", "user,args"]).stdout_text
            assert "import json" in ps                  # the warmed interpreter lives on
            assert r.isolation == cold_iso
            assert r.isolation.runtime == "runsc" and r.isolation.user == "65534:65534"
            u = clone.usage()
            assert u.memory_bytes and u.cpu_time_ms is not None


def test_restored_clone_refuses_the_attacks_a_cold_sandbox_refuses(
        mgr: SandboxManager) -> None:
    require_runtime("runsc")
    host = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    host.bind(("127.0.0.1", 0))
    host.listen(1)
    port = host.getsockname()[1]
    try:
        with mgr.snapshot(SPEC, warmup=WARMUP) as snap, snap.restore() as clone:
            w = clone.exec(["sh", "-c", "echo x > /etc/pwned || echo x > /usr/pwned"])
            assert w.exit_code != 0
            assert not Path("/etc/pwned").exists() and not Path("/usr/pwned").exists()
            c = clone.exec(["python3", "-c", textwrap.dedent(f"""
                import socket
                s = socket.socket(); s.settimeout(2)
                try:
                    s.connect(("127.0.0.1", {port})); print("REACHED")
                except OSError as e:
                    print("refused", e)
            """)])
            assert "REACHED" not in c.stdout_text and "refused" in c.stdout_text
            ident = clone.exec(["id", "-u"]).stdout_text.strip()
            assert ident == "65534"
            # Two clones of one image share nothing: a write in one is not seen by the other.
            clone.exec(["sh", "-c", "echo mine > /tmp/state"])
            with snap.restore() as other:
                assert other.exec(["cat", "/tmp/state"]).stdout_text == "warm\n"
    finally:
        host.close()


def test_image_is_root_only_and_removed(mgr: SandboxManager) -> None:
    require_runtime("runsc")
    snap = mgr.snapshot(SPEC, warmup=WARMUP[:1])
    try:
        st = os.stat(snap.dir)
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == 0
        assert stat.S_IMODE(os.stat(mgr.settings.snapshots).st_mode) == 0o700
        files = [p for p in snap.dir.rglob("*") if p.is_file()]
        assert files
        for p in files:
            assert stat.S_IMODE(p.stat().st_mode) == 0o600 and p.stat().st_uid == 0, p
    finally:
        snap.remove()
    assert not snap.dir.exists()
    with pytest.raises(SnapshotError, match="removed"):
        snap.restore()


def test_a_pool_of_clones_hands_each_out_once_and_removes_its_image(
        mgr: SandboxManager) -> None:
    require_runtime("runsc")
    with mgr.pool(spec=SPEC, runtime="runsc", size=2, warmup=WARMUP[:1]) as pool:
        assert pool.snapshot is not None and pool.owns_snapshot
        image = pool.snapshot.dir
        assert pool.wait_ready(timeout_s=60), pool.errors
        seen = set()
        for _ in range(3):
            with pool.acquire(timeout_s=60) as sb:
                assert sb.id not in seen and sb.restored
                seen.add(sb.id)
                assert sb.exec(["cat", "/tmp/state"]).stdout_text == "warm\n"
                sb.exec(["sh", "-c", "echo used > /tmp/state"])
    assert not image.exists()


def test_snapshots_need_runsc(mgr: SandboxManager) -> None:
    require_runtime("runc")
    with pytest.raises(SnapshotError, match="runsc"):
        mgr.snapshot(SPEC, runtime="runc")
    assert not any(mgr.settings.snapshots.glob("*"))


def test_failed_warmup_leaves_no_image(mgr: SandboxManager) -> None:
    require_runtime("runsc")
    with pytest.raises(SnapshotError, match="exited 3"):
        mgr.snapshot(SPEC, warmup=[["sh", "-c", "exit 3"]])
    assert not any(mgr.settings.snapshots.glob("*"))


OWNER = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from closedpaw.sandbox.lifecycle.manager import SandboxManager
    from closedpaw.settings import Settings

    s = Settings.of(state_dir=Path(sys.argv[1]), data_dir=Path(sys.argv[2]),
                    cgroup_parent=sys.argv[3])
    mgr = SandboxManager(s)
    snap = mgr.snapshot(warmup=[["sh", "-c", "echo secret > /tmp/s"]])
    clone = snap.restore()
    print(snap.dir, clone.id, flush=True)
    threading.Event().wait()
""")


def test_gc_removes_the_image_and_clone_of_a_killed_owner() -> None:
    require_runtime("runsc")
    s = sandbox_settings()
    p = subprocess.Popen([sys.executable, "-c", OWNER, str(s.state_dir), str(s.data_dir),
                          TEST_CGROUP], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        image, sid = p.stdout.readline().split()
        # While the owner lives, gc leaves both alone.
        live = SandboxManager(s).gc()
        assert sid in live.live and Path(image).name in live.live
        assert Path(image).is_dir()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        if p.stdout is not None:
            p.stdout.close()
    time.sleep(0.2)
    report = SandboxManager(s).gc()
    assert not report.errors, report.errors
    assert sid in report.removed and Path(image).name in report.removed
    assert not Path(image).exists()
    assert leftovers(s) == []
