"""cgroup resources and rlimits from ResourceLimits. Pure functions.

Process counts are enforced differently per runtime (measured on this project's hosts):
under runc the pids cgroup is exact per container, while RLIMIT_NPROC would count every process
of uid 65534 on the host; under runsc the sandbox's own kernel applies RLIMIT_NPROC to the
sandbox alone, and the host pids cgroup must stay generous (the Sentry needs threads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from closedpaw.sandbox.spec import MIB, ResourceLimits

__all__ = ["CPU_PERIOD_US", "MEMORY_ANNOTATION", "MEMORY_BACKSTOP_BYTES", "RUNSC_MIN_PIDS",
           "HostLimits", "cgroup_resources", "rlimits"]

CPU_PERIOD_US = 100_000
RUNSC_MIN_PIDS = 1024
NOFILE = 1024
# The sandbox's memory limit is held by the engine's own cgroup, the parent of the runtime's
# (see closedpaw.sandbox.host.cgroups); the container's cgroup gets it plus this backstop, so the
# parent is the one that reaches its limit and counts the OOM kills. The annotation records
# the sandbox's limit in the bundle.
MEMORY_BACKSTOP_BYTES = 1024 * 1024
MEMORY_ANNOTATION = "org.closedpaw.memory-limit-bytes"

PidsMode = Literal["cgroup", "rlimit"]


@dataclass(frozen=True)
class HostLimits:
    """Hard rlimits of the host process; a sandbox may not ask for more (no CAP_SYS_RESOURCE)."""

    nofile_hard: int
    nproc_hard: int


def cgroup_resources(limits: ResourceLimits, pids_mode: PidsMode) -> dict[str, Any]:
    mem = limits.memory_mb * MIB + MEMORY_BACKSTOP_BYTES
    pids = limits.max_processes if pids_mode == "cgroup" else max(RUNSC_MIN_PIDS,
                                                                   limits.max_processes)
    return {
        # memory+swap == memory: no swap, the limit is the limit.
        "memory": {"limit": mem, "swap": mem},
        "cpu": {"quota": max(1000, round(limits.cpu_cores * CPU_PERIOD_US)),
                "period": CPU_PERIOD_US},
        "pids": {"limit": pids},
        "devices": [{"allow": False, "access": "rwm"}],
    }


def rlimits(limits: ResourceLimits, host: HostLimits, pids_mode: PidsMode) -> list[dict[str, Any]]:
    nofile = min(NOFILE, host.nofile_hard)
    out: list[dict[str, Any]] = [
        {"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile},
        {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
    ]
    if pids_mode == "rlimit":
        n = min(limits.max_processes, host.nproc_hard)
        out.append({"type": "RLIMIT_NPROC", "hard": n, "soft": n})
    return out
