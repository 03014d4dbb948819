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

from closedpaw.sandbox.result import ResourceUsage

__all__ = ["CGROUP_ROOT", "CgroupAccounting", "is_v2"]

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

    def remove(self) -> None:
        """Remove what is left of this sandbox's cgroups in every hierarchy. Idempotent."""
        if self._efd is not None:
            with contextlib.suppress(OSError):
                os.close(self._efd)
        self._efd = None
        bases = [self.root / self.rel] if self.v2 else [
            self.root / c / self.rel for c in _V1_CONTROLLERS]
        for base in bases:
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
