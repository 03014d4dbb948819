"""Per-sandbox cgroup accounting: the memory limit, peak memory, CPU time and OOM kills.

The runtime puts a container at ``/<parent>/<sid>/ctr``, a cgroup it creates and removes. We
own ``/<parent>/<sid>`` and hold the sandbox's memory limit there; the bundle gives the
container's own cgroup the same limit plus a small backstop
(``bundle.resources.MEMORY_BACKSTOP_BYTES``), in case ours were ever missing. Charges are
checked from the leaf upwards, so ours is the cgroup that reaches its limit: the kernel's OOM
notifications (cgroup v1: an eventfd on our ``memory.oom_control``, registered in ~0.1 ms;
v2: our ``memory.events``) count every OOM kill in the sandbox, and neither they nor peak
memory and CPU time vanish when the runtime removes its cgroup. (A usage-threshold eventfd
would also signal that removal, but registering one costs 15-20 ms here: the kernel waits for
an RCU grace period.)
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from closedpaw._record import Record
from closedpaw.sandbox.result import ResourceUsage

__all__ = ["CGROUP_ROOT", "HOST_PID_CEILING", "PID_SHARE", "CgroupAccounting", "PidBudget",
           "host_tasks", "is_v2", "pid_budget", "pid_max"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
_V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "cpu,cpuacct", "pids", "devices", "freezer",
                   "blkio", "cpuset", "net_cls", "net_prio", "net_cls,net_prio", "perf_event",
                   "hugetlb", "rdma", "misc", "systemd", "unified")


def is_v2(root: Path = CGROUP_ROOT) -> bool:
    return (root / "cgroup.controllers").exists()


def _read_int(p: Path) -> int | None:
    try:
        return int(p.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


#: the share of ``kernel.pid_max`` the host pids limits of all sandboxes (of one cgroup
#: parent) may add up to; the rest is the host's own
PID_SHARE = 0.5
#: and whatever the reservations say, no sandbox starts if its limit added to the tasks that
#: exist on the host right now (other ClosedPaw instances included) passes this share
HOST_PID_CEILING = 0.9


def pid_max(proc: Path = Path("/proc/sys/kernel/pid_max")) -> int:
    return _read_int(proc) or 32768


def host_tasks(loadavg: Path = Path("/proc/loadavg")) -> int:
    """Tasks (threads included) that exist on the host now: ``/proc/loadavg``'s ``R/T``."""
    try:
        return int(loadavg.read_text().split()[3].split("/")[1])
    except (OSError, ValueError, IndexError):
        return 0


class PidBudget(Record):
    """How many host pids the sandboxes under one cgroup parent may hold, and hold now (the
    sum of their host pids limits, i.e. what they could take in the worst case)."""

    pid_max: int
    limit: int
    committed: int
    sandboxes: int
    host_tasks: int = 0

    @property
    def left(self) -> int:
        """Host pids a new sandbox may still reserve."""
        return max(0, min(self.limit - self.committed,
                          int(self.pid_max * HOST_PID_CEILING) - self.host_tasks))

    def to_dict(self) -> dict[str, int]:
        return {"pid_max": self.pid_max, "limit": self.limit, "committed": self.committed,
                "left": self.left, "sandboxes": self.sandboxes, "host_tasks": self.host_tasks}


def pid_budget(parent: str, root: Path = CGROUP_ROOT) -> PidBudget:
    """The budget of ``parent``: each sandbox's reservation is the ``pids.max`` of its own
    cgroup (``<parent>/<sid>``, written before its runtime starts), or of its runtime's
    (``ctr``) where ours has none."""
    base = str(root / parent if is_v2(root) else root / "pids" / parent)
    committed = n = 0
    try:
        kids = [e.name for e in os.scandir(base) if e.is_dir(follow_symlinks=False)]
    except OSError:
        kids = []
    for kid in kids:
        for f in (f"{base}/{kid}/pids.max", f"{base}/{kid}/ctr/pids.max"):
            v = _read_small_int(f)
            if v is not None:
                committed += v
                n += 1
                break
    total = pid_max()
    return PidBudget(total, int(total * PID_SHARE), committed, n, host_tasks())


def _read_small_int(path: str) -> int | None:
    """``_read_int`` without pathlib and text I/O (the pid budget reads one per sandbox)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return int(os.read(fd, 64).split()[0])
    except (OSError, ValueError, IndexError):
        return None
    finally:
        os.close(fd)


def _read_keyed(p: Path, key: str) -> int | None:
    try:
        for line in p.read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return int(v)
    except (OSError, ValueError):
        return None
    return None


class CgroupAccounting:
    """Accounting for one sandbox. Create with :meth:`prepare`, finish with :meth:`remove`."""

    def __init__(self, parent: str, sid: str, root: Path = CGROUP_ROOT) -> None:
        self.rel = f"{parent}/{sid}"
        self.root = root
        self.v2 = is_v2(root)
        self._efd: int | None = None
        self._oom_seen = 0

    @property
    def cgroups_path(self) -> str:
        """The container's cgroup, as written into the bundle's ``linux.cgroupsPath``."""
        return f"/{self.rel}/ctr"

    def _dir(self, controller: str) -> Path:
        return self.root / self.rel if self.v2 else self.root / controller / self.rel

    def prepare(self, memory_limit_bytes: int) -> None:
        """Create our cgroups, write the sandbox's memory limit (memory+swap the same) on
        ours, and start counting OOM kills."""
        if self.v2:
            d = self.root / self.rel
            d.mkdir(parents=True, exist_ok=True)
            (d / "memory.max").write_text(str(memory_limit_bytes))
            swap = d / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")
            return
        self._dir("cpuacct").mkdir(parents=True, exist_ok=True)
        mem = self._dir("memory")
        mem.mkdir(parents=True, exist_ok=True)
        (mem / "memory.limit_in_bytes").write_text(str(memory_limit_bytes))
        memsw = mem / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            memsw.write_text(str(memory_limit_bytes))
        self._efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        cfd = os.open(mem / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        try:
            with open(mem / "cgroup.event_control", "w") as f:
                f.write(f"{self._efd} {cfd}")
        finally:
            os.close(cfd)

    def reserve_pids(self, limit: int) -> None:
        """Write the sandbox's host pids limit on our cgroup (above the runtime's): it holds
        even if the runtime's were missing, and :func:`pid_budget` counts it from now on."""
        d = self._dir("pids")
        d.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # v2 without the pids controller
            (d / "pids.max").write_text(str(limit))

    def oom_kills_since_last(self) -> int:
        """OOM kills in the sandbox since the previous call."""
        if self.v2:
            total = _read_keyed(self._dir("memory") / "memory.events", "oom_kill") or 0
            new, self._oom_seen = total - self._oom_seen, total
            return max(0, new)
        if self._efd is None:
            return 0
        try:
            return os.eventfd_read(self._efd)
        except BlockingIOError:
            return 0

    def usage(self) -> ResourceUsage:
        if self.v2:
            d = self._dir("memory")
            usec = _read_keyed(d / "cpu.stat", "usage_usec")
            peak = _read_int(d / "memory.peak")
            return ResourceUsage(None if usec is None else usec / 1000.0, peak,
                                 _read_int(d / "memory.current"))
        ns = _read_int(self._dir("cpuacct") / "cpuacct.usage")
        peak = _read_int(self._dir("memory") / "memory.max_usage_in_bytes")
        return ResourceUsage(None if ns is None else ns / 1e6, peak,
                             _read_int(self._dir("memory") / "memory.usage_in_bytes"))

    def reset_peak(self) -> bool:
        """Restart peak-memory tracking from the current usage (cgroup v1:
        ``memory.max_usage_in_bytes``; v2: ``memory.peak``, writable on kernels >= 6.12).
        Returns whether the reset worked, i.e. whether the next peak is this interval's."""
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        try:
            (self._dir("memory") / name).write_text("0")
        except OSError:
            return False
        return True

    def _bases(self) -> list[Path]:
        return [self.root / self.rel] if self.v2 else [
            self.root / c / self.rel for c in _V1_CONTROLLERS]

    def kill_all(self, timeout_s: float = 5.0) -> list[int]:
        """SIGKILL every process still in this sandbox's cgroups (thawed first) and wait until
        none is left; returns their pids. Our cgroup holds nothing but this sandbox: the
        runtime's processes and the container's. A runtime that lost track of its container
        (e.g. a ``runsc run --detach`` killed halfway by ``gc``, its owner being dead) leaves
        its Sentry and gofer there, which a delete by id no longer reaches. Each process is
        signalled through a pidfd after checking it is still in this cgroup, so a reused pid
        is never hit."""
        import signal
        import time

        killed: list[int] = []
        end = time.monotonic() + timeout_s
        while True:
            pids = self._pids()
            if not pids:
                return killed
            if time.monotonic() > end:
                raise OSError(16, f"processes {sorted(pids)[:8]} are still in the cgroups of "
                              f"{self.rel} after SIGKILL")
            self._thaw()
            for pid in pids:
                try:
                    fd = os.pidfd_open(pid)
                except OSError:
                    continue
                try:
                    if self._holds(pid):
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                        if pid not in killed:
                            killed.append(pid)
                except OSError:
                    pass
                finally:
                    os.close(fd)
            time.sleep(0.05)

    def _pids(self) -> set[int]:
        pids: set[int] = set()
        for base in self._bases():
            for dirpath, _, files in os.walk(base):
                if "cgroup.procs" in files:
                    with contextlib.suppress(OSError, ValueError):
                        pids.update(int(x) for x in
                                    Path(dirpath, "cgroup.procs").read_text().split())
        return pids

    def _holds(self, pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                text = f.read()
        except OSError:
            return False
        want = f"/{self.rel}"
        return any(line.rsplit(":", 1)[-1] == want or line.rsplit(":", 1)[-1].startswith(want + "/")
                   for line in text.splitlines())

    def _thaw(self) -> None:
        """A frozen task does not die of SIGKILL until it is thawed."""
        for base in self._bases():
            for dirpath, _, files in os.walk(base):
                name = "cgroup.freeze" if self.v2 else "freezer.state"
                if name in files:
                    with contextlib.suppress(OSError):
                        Path(dirpath, name).write_text("0" if self.v2 else "THAWED")

    def remove(self) -> None:
        """Kill what is left in this sandbox's cgroups (:meth:`kill_all`), then remove them in
        every hierarchy. Idempotent."""
        if self._efd is not None:
            with contextlib.suppress(OSError):
                os.close(self._efd)
        self._efd = None
        self.kill_all()
        for base in self._bases():
            for d in (base / "ctr", base):
                with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                    _rmdir_retry(d)


def _rmdir_retry(d: Path) -> None:
    import time

    for i in range(50):
        try:
            os.rmdir(d)
            return
        except FileNotFoundError:
            return
        except OSError:
            if i == 49:
                raise
            time.sleep(0.02)
