"""Per-sandbox cgroup accounting: peak memory, CPU time and OOM kills, read from the kernel.

The runtime puts a container at ``/<parent>/<sid>/ctr``. We own ``/<parent>/<sid>``: the
kernel charges the container's usage to it hierarchically, so peak memory and CPU time stay
readable after the runtime has removed its own cgroup. On cgroup v1 an eventfd registered on
the container's ``memory.oom_control`` counts OOM kills (and fires once more when the cgroup is
removed); on cgroup v2 the parent's ``memory.events`` counts them for the whole subtree.
"""

from __future__ import annotations

import contextlib
import os
import select
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
        self._gone: int | None = None
        self._oom_seen = 0

    @property
    def cgroups_path(self) -> str:
        """The container's cgroup, as written into the bundle's ``linux.cgroupsPath``."""
        return f"/{self.rel}/ctr"

    def _dir(self, controller: str) -> Path:
        return self.root / self.rel if self.v2 else self.root / controller / self.rel

    def prepare(self, memory_limit_bytes: int) -> None:
        """Create our accounting cgroups and the container's memory cgroup with its limit.

        runc re-applies the bundle's limit to it; runsc treats a cgroup that already exists as
        not its own and applies nothing, so the limit is written here for both.
        """
        if self.v2:
            (self.root / self.rel).mkdir(parents=True, exist_ok=True)
            return
        self._dir("cpuacct").mkdir(parents=True, exist_ok=True)
        mem_ctr = self._dir("memory") / "ctr"
        mem_ctr.mkdir(parents=True, exist_ok=True)
        (mem_ctr / "memory.limit_in_bytes").write_text(str(memory_limit_bytes))
        memsw = mem_ctr / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            memsw.write_text(str(memory_limit_bytes))
        # oom: counts OOMs, plus one when the cgroup is removed. gone: a usage threshold that
        # is never crossed, so it fires only on removal - after oom's removal signal.
        self._efd = self._register(mem_ctr, "memory.oom_control", "")
        self._gone = self._register(mem_ctr, "memory.usage_in_bytes", " -1")

    @staticmethod
    def _register(ctr: Path, control: str, args: str) -> int:
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            cfd = os.open(ctr / control, os.O_RDONLY | os.O_CLOEXEC)
            try:
                with open(ctr / "cgroup.event_control", "w") as f:
                    f.write(f"{efd} {cfd}{args}")
            finally:
                os.close(cfd)
        except OSError:
            os.close(efd)
            raise
        return efd

    @staticmethod
    def _read_efd(fd: int | None) -> int:
        if fd is None:
            return 0
        try:
            return os.eventfd_read(fd)
        except BlockingIOError:
            return 0

    def oom_kills_since_last(self, container_removed: bool) -> int:
        """OOM kills since the previous call (``container_removed``: the runtime deleted the
        container, e.g. after a one-shot run)."""
        if self.v2:
            v2_total = _read_keyed(self._dir("memory") / "memory.events", "oom_kill") or 0
            new, self._oom_seen = v2_total - self._oom_seen, v2_total
            return max(0, new)
        ctr = self._dir("memory") / "ctr"
        if ctr.exists():
            self._read_efd(self._efd)
            total = _read_keyed(ctr / "memory.oom_control", "oom_kill")
            if total is not None:
                new, self._oom_seen = total - self._oom_seen, total
                return max(0, new)
        # The runtime removed the cgroup. OOM notifications are synchronous, so 0 means none;
        # otherwise wait for the removal signal to tell an OOM from the removal itself.
        seen = self._read_efd(self._efd)
        if seen == 0:
            return 0
        if self._gone is not None and select.select([self._gone], [], [], 2.0)[0]:
            seen += self._read_efd(self._efd)
            return max(0, seen - 1)
        return seen

    def usage(self) -> ResourceUsage:
        if self.v2:
            d = self._dir("memory")
            usec = _read_keyed(d / "cpu.stat", "usage_usec")
            peak = _read_int(d / "memory.peak")
            return ResourceUsage(None if usec is None else usec / 1000.0, peak)
        ns = _read_int(self._dir("cpuacct") / "cpuacct.usage")
        peak = _read_int(self._dir("memory") / "memory.max_usage_in_bytes")
        return ResourceUsage(None if ns is None else ns / 1e6, peak)

    def remove(self) -> None:
        """Remove what is left of this sandbox's cgroups in every hierarchy. Idempotent."""
        for fd in (self._efd, self._gone):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._efd = self._gone = None
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
