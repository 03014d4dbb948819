"""``closedpaw demo`` (what ``make run`` shows): Python, node and shell snippets in sandboxes,
with the isolation that protected each run."""

from __future__ import annotations

import os
import sys

from closedpaw.errors import ClosedPawError

SNIPPETS: tuple[tuple[str, list[str]], ...] = (
    ("python", ["python3", "-c",
                "import os, sys; print('hello from python', sys.version.split()[0], "
                "'as uid', os.getuid())"]),
    ("node", ["node", "-e", "console.log('hello from node', process.version, "
              "'as uid', process.getuid())"]),
    ("shell", ["/bin/sh", "-c", "echo hello from sh as uid $(id -u); "
               "touch /etc/x 2>/dev/null || echo 'root filesystem: read-only'"]),
    ("attack", ["python3", "-c",
                "import socket\n"
                "try:\n socket.create_connection(('127.0.0.1', 22), 1); print('reached host')\n"
                "except OSError as e: print('network to host refused:', e.strerror)\n"
                "print('interfaces:', sorted(n for _, n in socket.if_nameindex()))"]),
)


def main() -> int:
    from closedpaw.sandbox.lifecycle.manager import SandboxManager
    from closedpaw.sandbox.spec import ResourceLimits, SandboxSpec

    spec = SandboxSpec(limits=ResourceLimits(memory_mb=256, timeout_s=30, max_processes=32))
    try:
        with SandboxManager() as mgr:
            for label, argv in SNIPPETS:
                if label == "node" and not os.path.exists("/usr/bin/node"):
                    print("[node] skipped: node is not installed on the host "
                          "(apt-get install nodejs)\n")
                    continue
                r = mgr.run(argv, spec)
                iso = r.isolation
                print(f"[{label}] exit {r.exit_code} in {r.duration_ms:.0f} ms")
                for line in (r.stdout_text + r.stderr_text).splitlines():
                    print(f"    {line}")
                print(f"    protected by: {iso.runtime} {iso.runtime_version} ({iso.platform}), "
                      f"seccomp {'on' if iso.seccomp else 'OFF'} ({iso.seccomp_syscalls} "
                      f"syscalls), network {iso.network}, user {iso.user}, caps "
                      f"{list(iso.capabilities) or 'none'}, rootfs {iso.rootfs}, "
                      f"memory {iso.memory_limit_mb} MiB, cpus {iso.cpu_cores:g}, "
                      f"pids {iso.pids_limit}\n")
    except ClosedPawError as e:
        sys.stderr.write(f"closedpaw: error: {e}\n")
        return 2
    return 0
