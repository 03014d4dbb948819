"""What a driver enforces (:class:`DriverFeatures`), apart from the :mod:`.base` protocols so
that the one-shot path can stamp it without importing ``typing``."""

from __future__ import annotations

from closedpaw._record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

__all__ = ["DriverFeatures"]


class DriverFeatures(Record):
    """What a driver enforces, reported by ``closedpaw doctor`` and stamped on results."""

    name: str
    version: str
    platform: str                      # "gvisor-ptrace" or "native"
    seccomp: bool                      # OCI seccomp profile enforced
    pids_mode: Literal["cgroup", "rlimit"]
    memory_cgroup: bool = True
    cpu_cgroup: bool = True
    namespaces: tuple[str, ...] = ("pid", "network", "ipc", "uts", "mount", "cgroup")
