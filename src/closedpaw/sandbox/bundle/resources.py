"""cgroup resources and rlimits from ResourceLimits. Pure functions.

Process counts are enforced differently per runtime (measured on this project's hosts):
under runc the pids cgroup is exact per container, while RLIMIT_NPROC would count every process
of uid 65534 on the host; under runsc the sandbox's own kernel applies RLIMIT_NPROC to the
sandbox alone, and the host pids cgroup is derived from it (:func:`runsc_host_pids`): under the
ptrace platform every process in the sandbox costs the host a stub process with about one
thread per Sentry thread that ran in it, and the Sentry needs its own threads, so the host
task count grows a little faster than linearly (docs/sandbox-hardening.md has the numbers).
"""

from __future__ import annotations

from closedpaw._record import Record
from closedpaw.sandbox.spec import MIB, ResourceLimits

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Literal, TypeAlias

    PidsMode: TypeAlias = Literal["cgroup", "rlimit"]

__all__ = ["CPU_PERIOD_US", "MEMORY_ANNOTATION", "MEMORY_BACKSTOP_BYTES", "RUNSC_BASE_PIDS",
           "HostLimits", "cgroup_resources", "host_pids", "rlimits", "runsc_host_pids"]

CPU_PERIOD_US = 100_000
#: host tasks of an idle runsc sandbox (Sentry, gofer, their Go threads: 33-37 measured),
#: with headroom
RUNSC_BASE_PIDS = 64
NOFILE = 1024
# The sandbox's memory limit is held by the engine's own cgroup, the parent of the runtime's
# (see closedpaw.sandbox.host.cgroups); the container's cgroup gets it plus this backstop, so the
# parent is the one that reaches its limit and counts the OOM kills. The annotation records
# the sandbox's limit in the bundle.
MEMORY_BACKSTOP_BYTES = 1024 * 1024
MEMORY_ANNOTATION = "org.closedpaw.memory-limit-bytes"


class HostLimits(Record):
    """Hard rlimits of the host process; a sandbox may not ask for more (no CAP_SYS_RESOURCE)."""

    nofile_hard: int
    nproc_hard: int


def runsc_host_pids(max_processes: int) -> int:
    """The host pids limit of a runsc (ptrace) sandbox allowed ``max_processes`` processes:
    ``64 + 16 n + n^2 / 2``. Measured (runsc 2022-12-19, ptrace, a loaded 2-core host) with
    the sandbox full of sleeping processes, the host held 329 tasks at n=16, 462-516 at n=32,
    1151-1761 at n=64 and 3268 at n=128: each address space gets a stub thread per Sentry
    thread that ever ran in it, so the count grows faster than linearly and varies with load.
    This is 1.4-2x the worst seen. A sandbox that exceeds it anyway loses its Sentry (runsc
    dies: that sandbox ends, nothing else does). Threads cost the host almost nothing (62
    sleeping or busy threads: +25-35 tasks)."""
    n = max_processes
    return RUNSC_BASE_PIDS + 16 * n + n * n // 2


def host_pids(limits: ResourceLimits, pids_mode: PidsMode) -> int:
    """The host pids cgroup limit of a sandbox: its process limit under runc, derived from
    it under runsc."""
    if pids_mode == "cgroup":
        return limits.max_processes
    return runsc_host_pids(limits.max_processes)


def cgroup_resources(limits: ResourceLimits, pids_mode: PidsMode) -> dict[str, Any]:
    mem = limits.memory_mb * MIB + MEMORY_BACKSTOP_BYTES
    pids = host_pids(limits, pids_mode)
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
