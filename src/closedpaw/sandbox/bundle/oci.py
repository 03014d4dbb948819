"""Spec -> OCI ``config.json``: pure functions, no I/O.

:func:`build_config` assembles the whole configuration; :mod:`.validate` then checks it by
name before any runtime sees it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from closedpaw.sandbox.bundle import mounts as _mounts
from closedpaw.sandbox.bundle import resources as _res
from closedpaw.sandbox.bundle import seccomp as _seccomp
from closedpaw.sandbox.spec import MIB, ResourceLimits

__all__ = ["BASE_ENV", "NAMESPACES", "SANDBOX_GID", "SANDBOX_UID", "BundleInputs",
           "build_config", "merge_env"]

SANDBOX_UID = 65534
SANDBOX_GID = 65534
NAMESPACES = ("pid", "network", "ipc", "uts", "mount", "cgroup")
BASE_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "TMPDIR": "/tmp",
}


def merge_env(*layers: Mapping[str, str]) -> list[str]:
    """The sandbox environment: BASE_ENV, then each layer on top. Never the host's."""
    env: dict[str, str] = dict(BASE_ENV)
    for layer in layers:
        env.update(layer)
    return [f"{k}={v}" for k, v in env.items()]


@dataclass(frozen=True)
class BundleInputs:
    """Everything :func:`build_config` needs, gathered by the caller."""

    argv: Sequence[str]
    env: Sequence[str]
    cwd: str
    limits: ResourceLimits
    rootfs: Path
    cgroups_path: str
    host: _res.HostLimits
    machine: str
    pids_mode: _res.PidsMode = "cgroup"
    gvisor: bool = False
    seccomp_profile: Mapping[str, Any] | None = None
    input_dir: Path | None = None
    output_dir: Path | None = None
    usr_source: str | None = "/usr"
    usr_local: bool = False   # the host's /usr/local too (host image; policy usr_local: true)
    readonly_root: bool = True
    tmpfs: Mapping[str, int] = field(default_factory=dict)
    code_dir: Path | None = None
    agent_dir: Path | None = None
    hostname: str = "sandbox"
    annotations: Mapping[str, str] = field(default_factory=dict)


def build_config(b: BundleInputs) -> dict[str, Any]:
    profile = b.seccomp_profile if b.seccomp_profile is not None else _seccomp.load_profile()
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": SANDBOX_UID, "gid": SANDBOX_GID, "additionalGids": [SANDBOX_GID]},
            "args": list(b.argv),
            "env": list(b.env),
            "cwd": b.cwd,
            "capabilities": {k: [] for k in
                             ("bounding", "effective", "inheritable", "permitted", "ambient")},
            "rlimits": _res.rlimits(b.limits, b.host, b.pids_mode),
            "noNewPrivileges": True,
        },
        "root": {"path": str(b.rootfs), "readonly": b.readonly_root},
        "hostname": b.hostname,
        "mounts": [*_mounts.base_mounts(disk_mb=b.limits.disk_mb, usr_source=b.usr_source,
                                       usr_local=b.usr_local),
                   *_mounts.tmpfs_mounts(b.tmpfs),
                   *_mounts.file_mounts(input_dir=b.input_dir, output_dir=b.output_dir,
                                        code_dir=b.code_dir, agent_dir=b.agent_dir)],
        "annotations": {**b.annotations,
                        _res.MEMORY_ANNOTATION: str(b.limits.memory_mb * MIB)},
        "linux": {
            "namespaces": [{"type": t} for t in NAMESPACES],
            "cgroupsPath": b.cgroups_path,
            "resources": _res.cgroup_resources(b.limits, b.pids_mode),
            "seccomp": _seccomp.to_oci(dict(profile), b.machine, gvisor=b.gvisor),
            "maskedPaths": list(_mounts.MASKED_PATHS),
            "readonlyPaths": list(_mounts.READONLY_PATHS),
        },
    }
