"""Reconciliation: a process that owns sandboxes is killed with SIGKILL mid-run; what it left
(containers, runtime processes, cgroups, mounts, state dirs) is found and removed by
``closedpaw gc``, while a live sandbox of another process is left alone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from closedpaw.sandbox.host import inventory
from closedpaw.sandbox.lifecycle.manager import SandboxManager
from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec
from closedpaw.settings import Settings
from tests.conftest import TEST_CGROUP, leftovers, require_runtime, sandbox_settings

CLI = str(Path(sys.executable).with_name("closedpaw"))

OWNER = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from closedpaw.sandbox.lifecycle.manager import SandboxManager
    from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec
    from closedpaw.settings import Settings

    s = Settings.of(state_dir=Path(sys.argv[1]), data_dir=Path(sys.argv[2]),
                    cgroup_parent=sys.argv[3])
    spec = SandboxSpec(limits=ResourceLimits(memory_mb=128, timeout_s=300),
                       output_dir=Path(sys.argv[4]))
    mgr = SandboxManager(s)
    ids = [mgr.create(spec, runtime=rt).id for rt in ("runc", "runsc")]
    for rt in ("runc", "runsc"):
        threading.Thread(target=mgr.run, args=(["sleep", "300"], spec), kwargs={"runtime": rt},
                         daemon=True).start()
    print(" ".join(ids), flush=True)
    threading.Event().wait()
""")


def _env() -> dict[str, str]:
    s = sandbox_settings()
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CLOSEDPAW_STATE_DIR": str(s.state_dir),
           "CLOSEDPAW_DATA_DIR": str(s.data_dir), "CLOSEDPAW_CGROUP_PARENT": TEST_CGROUP}
    if "PYTHONPATH" in os.environ:   # the owner and the CLI run the code under test
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _wait(cond: object, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_gc_removes_what_a_killed_owner_left_and_spares_live_sandboxes(tmp_path: Path) -> None:
    for rt in ("runc", "runsc"):
        require_runtime(rt)
    s = sandbox_settings()
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(s.state_dir), str(s.data_dir), s.sandbox.cgroup_parent,
         str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    live_mgr = SandboxManager(s)
    try:
        assert owner.stdout is not None
        ids = owner.stdout.readline().decode().split()
        if len(ids) != 2:
            owner.kill()
            _, err = owner.communicate()
            raise AssertionError(f"owner failed: {err.decode()[-2000:]}")
        # Wait until both one-shots run too: four state dirs, and containers on both runtimes
        # (a state dir is made before its container).
        def all_up() -> bool:
            left = leftovers(s)
            return (sum(x.startswith("state dir") for x in left) == 4
                    and sum("runc container" in x for x in left) >= 2
                    and sum("runsc container" in x for x in left) >= 2)
        assert _wait(all_up, 60), leftovers(s)
        def dirs() -> set[str]:
            return {x.rsplit("/", 1)[-1] for x in leftovers(s) if x.startswith("state dir")}
        oneshots = dirs() - set(ids)
        assert len(oneshots) == 2, (ids, dirs())
        live = live_mgr.create(SandboxSpec(limits=ResourceLimits(memory_mb=128)),
                               runtime="runc")
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=30)

        # What the runtimes do by themselves once the owner is dead: the agent of each
        # long-lived sandbox reads EOF on its channel and exits, and its foreground
        # `runc run`/`runsc run` then deletes that container. The one-shots' `sleep 300`
        # notice nothing: their containers and foreground runtimes stay.
        def agents_gone() -> bool:
            return not any(sid in x for x in leftovers(s) if " container " in x
                           for sid in ids)
        assert _wait(agents_gone, 60), leftovers(s)
        left = leftovers(s)
        for sid in oneshots:
            assert sum(sid in x and " container " in x for x in left) == 1, (sid, left)
            assert any(x.startswith("process ") and sid in x for x in left), (sid, left)
        assert any(f"runc container {live.id}" == x for x in left), left
        # What no runtime removes is left for gc, for all four sandboxes
        for sid in (*ids, *oneshots):
            assert any(x.startswith("state dir") and x.endswith(sid) for x in left), (sid, left)
            assert any(x.startswith("cgroup ") and x.endswith(sid) for x in left), (sid, left)
            assert any(x.startswith("mount ") and sid in x for x in left), (sid, left)

        p = subprocess.run([CLI, "gc", "--json"], capture_output=True, text=True, env=_env(),
                           timeout=120, check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        report = json.loads(p.stdout)
        assert set(report["removed"]) == set(ids) | oneshots, report
        assert report["live"] == [live.id], report
        assert report["errors"] == []
        # the one-shots' foreground `runc run`/`runsc run` outlived their owner: gc stops them
        # first, so none can finish creating a container after it
        for sid in oneshots:
            assert any(d.startswith(f"{sid}: runtime process") for d in report["details"]), \
                (sid, report)
            assert any(d.startswith(f"{sid}: ") and d.endswith(" container")
                       for d in report["details"]), (sid, report)

        remaining = leftovers(s)
        assert all(live.id in x for x in remaining), remaining
        assert live.exec(["echo", "still alive"]).stdout == b"still alive\n"
        again = subprocess.run([CLI, "gc"], capture_output=True, text=True, env=_env(),
                               timeout=120, check=False)
        assert again.returncode == 0 and "removed 0 sandbox(es)" in again.stdout, again
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        for f in (owner.stdout, owner.stderr):
            if f is not None:
                f.close()
        live_mgr.cleanup()
        SandboxManager(s).gc()
    assert not leftovers(s), leftovers(s)
    assert not [p for p in os.listdir("/proc") if p == str(owner.pid)]


@pytest.mark.parametrize("rt", ["runc", "runsc"])
def test_the_inventory_never_hides_a_live_container_while_another_is_deleted(
        mgr: SandboxManager, settings: Settings, rt: str) -> None:
    """``runc list`` fails ("no such file") when a container's state vanishes while it lists.
    The inventory used to read that as "no containers at all", so a leak check (or this
    file's gc test, right after the owner's agent containers removed themselves) could miss
    every container of the runtime, live ones included."""
    require_runtime(rt)
    spec = SandboxSpec(limits=ResourceLimits(memory_mb=64, timeout_s=60))
    live = mgr.create(spec, runtime=rt)
    stop = threading.Event()
    looks: list[bool] = []

    def look() -> None:
        while not stop.is_set():
            looks.append(live.id in inventory.container_ids(rt, settings.state_dir / rt))
    t = threading.Thread(target=look)
    t.start()
    try:
        for _ in range(12):
            mgr.create(spec, runtime=rt).delete()
            mgr.reaper.drain()
    finally:
        stop.set()
        t.join(60)
    assert looks and all(looks), f"{looks.count(False)} of {len(looks)} looks missed {live.id}"
    live.delete()


def _procs(sid: str) -> list[str]:
    """Pids in any cgroup of sandbox ``sid``."""
    out = []
    for base in inventory.cgroup_bases(TEST_CGROUP):
        for dirpath, _, files in os.walk(base / sid):
            if "cgroup.procs" in files:
                out += Path(dirpath, "cgroup.procs").read_text().split()
    return out


LOST_OWNER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from closedpaw.sandbox.lifecycle.manager import SandboxManager
    from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec
    from closedpaw.settings import Settings

    s = Settings.of(state_dir=Path(sys.argv[1]), data_dir=Path(sys.argv[2]),
                    cgroup_parent=sys.argv[3])
    sb = SandboxManager(s).create(SandboxSpec(limits=ResourceLimits(memory_mb=128)),
                                  runtime=sys.argv[4], agent=False)
    print(sb.id, flush=True)
    import threading; threading.Event().wait()
""")


@pytest.mark.parametrize("rt", ["runc", "runsc"])
def test_gc_kills_what_a_runtime_lost_track_of(rt: str) -> None:
    """Seen at 300 iterations of the SIGKILL-at-every-stage race (runsc): gc killed a
    ``runsc run --detach`` of a dead owner halfway, ``runsc delete --force`` then found no
    sandbox to kill, and its Sentry and gofer lived on in the sandbox's cgroup: every later gc
    failed with EBUSY on the cgroup, for good. Here the runtime's record of a live container
    is removed after its owner is killed; gc must still end every process of the sandbox
    (they are all in its own cgroup) and leave nothing."""
    require_runtime(rt)
    s = sandbox_settings()
    owner = subprocess.Popen(
        [sys.executable, "-c", LOST_OWNER, str(s.state_dir), str(s.data_dir),
         s.sandbox.cgroup_parent, rt], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=_env())
    try:
        assert owner.stdout is not None
        sid = owner.stdout.readline().decode().strip()
        if not sid:
            owner.kill()
            _, err = owner.communicate()
            raise AssertionError(f"owner failed: {err.decode()[-2000:]}")
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=30)
        root = s.state_dir / rt
        for e in os.listdir(root):   # the runtime loses track of the live container
            if e.startswith(sid):
                p = root / e
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        assert _procs(sid), "nothing left to kill"
        p = subprocess.run([CLI, "gc", "--json"], capture_output=True, text=True, env=_env(),
                           timeout=120, check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        report = json.loads(p.stdout)
        assert report["removed"] == [sid] and report["errors"] == [], report
        assert any(d.startswith(f"{sid}: process ") for d in report["details"]), report
        assert not leftovers(s), leftovers(s)
        assert not _procs(sid)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        for f in (owner.stdout, owner.stderr):
            if f is not None:
                f.close()
        SandboxManager(s).gc()
    assert not leftovers(s), leftovers(s)
