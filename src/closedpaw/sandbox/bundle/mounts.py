"""Mounts of a sandbox: the kernel filesystems, the read-only host /usr (host image only), a
sized /tmp, extra sized tmpfs mounts, and optional /input and /code (read-only) and /output
(writable) binds. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["AGENT_MOUNT", "MASKED_PATHS", "READONLY_PATHS", "RW_BINDS_ANNOTATION",
           "base_mounts", "file_mounts", "host_bind_mounts", "tmpfs_mounts"]

# Paths hidden from the sandbox (the lists Docker uses).
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

_SAFE = ["nosuid", "nodev"]
AGENT_MOUNT = "/.closedpaw"


def base_mounts(*, disk_mb: int, usr_source: str | None = "/usr",
                usr_local: bool = False) -> list[dict[str, Any]]:
    """Mounts every sandbox gets. ``/usr`` is a read-only bind of the host's for the host
    image (``usr_source``); images of the store bring their own (``usr_source=None``).
    The host's ``/usr/local`` (cloud SDKs, docker, kubectl, ... installed by hand) is hidden
    under an empty read-only tmpfs unless ``usr_local`` (a policy's ``usr_local: true``)."""
    usr: list[dict[str, Any]] = []
    if usr_source is not None:
        usr.append({"destination": "/usr", "type": "bind", "source": usr_source,
                    "options": ["rbind", "ro", *_SAFE]})
        if not usr_local:
            usr.append({"destination": "/usr/local", "type": "tmpfs", "source": "tmpfs",
                        "options": ["ro", "noexec", *_SAFE, "mode=755", "size=4k"]})
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        *usr,
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": [*_SAFE, "mode=1777", f"size={disk_mb}m"]},
    ]


def tmpfs_mounts(sizes: Mapping[str, int]) -> list[dict[str, Any]]:
    """Extra sized tmpfs mounts asked for by a policy (path -> MiB)."""
    return [{"destination": path, "type": "tmpfs", "source": "tmpfs",
             "options": [*_SAFE, "mode=1777", f"size={mb}m"]} for path, mb in sorted(sizes.items())]


def file_mounts(*, input_dir: Path | None, output_dir: Path | None,
                code_dir: Path | None = None,
                agent_dir: Path | None = None,
                run_dir: Path | None = None) -> list[dict[str, Any]]:
    """Bind the staged input read-only at /input, the capped output dir at /output, the
    code files read-only at /code, the in-sandbox agent read-only at /.closedpaw and the
    sandbox's own run directory (secret files under secrets/) read-only at /run."""
    out: list[dict[str, Any]] = []
    if agent_dir is not None:
        out.append({"destination": AGENT_MOUNT, "type": "bind", "source": str(agent_dir),
                    "options": ["rbind", "ro", *_SAFE]})
    if code_dir is not None:
        out.append({"destination": "/code", "type": "bind", "source": str(code_dir),
                    "options": ["rbind", "ro", *_SAFE]})
    if run_dir is not None:
        out.append({"destination": "/run", "type": "bind", "source": str(run_dir),
                    "options": ["rbind", "ro", *_SAFE]})
    if input_dir is not None:
        out.append({"destination": "/input", "type": "bind", "source": str(input_dir),
                    "options": ["rbind", "ro", *_SAFE]})
    if output_dir is not None:
        out.append({"destination": "/output", "type": "bind", "source": str(output_dir),
                    "options": ["rbind", "rw", *_SAFE]})
    return out


#: destinations of the host binds declared writable (a skill's ``rw`` paths), ``:``-separated;
#: the ``mounts_are_safe`` check allows a writable bind only there (and at /output)
RW_BINDS_ANNOTATION = "org.closedpaw.rw-binds"


def host_bind_mounts(binds: Sequence[tuple[str, str, bool]]) -> list[dict[str, Any]]:
    """Declared host directories, (source, destination, writable): ``ro`` unless declared
    ``rw``; always nosuid, nodev."""
    return [{"destination": dst, "type": "bind", "source": src,
             "options": ["rbind", "rw" if rw else "ro", *_SAFE]}
            for src, dst, rw in binds]
