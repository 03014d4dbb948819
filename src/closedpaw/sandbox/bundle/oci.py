"""Spec -> OCI ``config.json``: pure functions, no I/O.

:func:`build_config` assembles the whole configuration; :mod:`.validate` then checks it by
name before any runtime sees it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from closedpaw._record import Record, field
from closedpaw.sandbox.bundle import mounts as _mounts
from closedpaw.sandbox.bundle import resources as _res
from closedpaw.sandbox.bundle import seccomp as _seccomp
from closedpaw.sandbox.spec import MIB, ResourceLimits

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["AGENT_CAPS", "AGENT_GID", "AGENT_UID", "BASE_ENV", "HOST_RLIMITS_ANNOTATION",
           "INIT_ANNOTATION", "NAMESPACES", "SANDBOX_GID", "SANDBOX_UID", "USERNS_FILE",
           "BundleInputs", "IdMap", "build_config", "merge_env"]

SANDBOX_UID = 65534
SANDBOX_GID = 65534
# The in-sandbox agent's own identity. It starts as uid 0 of the sandbox holding only
# AGENT_CAPS, switches to real 65534 / effective+saved AGENT_UID (which clears every
# capability, since no id stays 0) before it reads any request, and starts commands while
# it holds effective ids 65534 (or with posix_spawn's RESETIDS), so they run as 65534 in all
# ids: never as the agent.
AGENT_UID = 65533
AGENT_GID = 65533
AGENT_CAPS = ("CAP_SETGID", "CAP_SETUID")
INIT_ANNOTATION = "org.closedpaw.init"          # "agent" for the agent init
# With a user namespace, runc sets rlimits from its parent with prlimit(), which needs
# CAP_SYS_RESOURCE over the sandbox (not every host root has it): the limits are then applied
# by the driver to the runtime process itself (inherited by the container) and listed here.
HOST_RLIMITS_ANNOTATION = "org.closedpaw.host-rlimits"
USERNS_FILE = "userns"                           # <sandbox dir>/userns: the bound namespace
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


class IdMap(Record):
    """A sandbox's own user namespace: container ids 0..size-1 are host ids
    host_base..host_base+size-1 (uids and gids alike); ``path`` is the namespace's file."""

    path: str
    host_base: int
    size: int


class BundleInputs(Record):
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
    run_dir: Path | None = None
    hostname: str = "sandbox"
    annotations: Mapping[str, str] = field(default_factory=dict)
    binds: Sequence[tuple[str, str, bool]] = ()
    agent_init: bool = False
    userns: IdMap | None = None


def _user(b: BundleInputs) -> dict[str, Any]:
    if b.agent_init:
        return {"uid": 0, "gid": 0, "additionalGids": [0]}
    return {"uid": SANDBOX_UID, "gid": SANDBOX_GID, "additionalGids": [SANDBOX_GID]}


def _caps(b: BundleInputs) -> dict[str, list[str]]:
    held = list(AGENT_CAPS) if b.agent_init else []
    return {"bounding": held, "effective": held, "permitted": held, "inheritable": [],
            "ambient": []}


def build_config(b: BundleInputs) -> dict[str, Any]:
    profile = b.seccomp_profile if b.seccomp_profile is not None else _seccomp.load_profile()
    rlimits = _res.rlimits(b.limits, b.host, b.pids_mode)
    annotations = {**b.annotations, _res.MEMORY_ANNOTATION: str(b.limits.memory_mb * MIB)}
    if any(rw for *_, rw in b.binds):   # the writable binds a skill declared, for the checks
        annotations[_mounts.RW_BINDS_ANNOTATION] = ":".join(d for _, d, rw in b.binds if rw)
    if b.agent_init:
        annotations[INIT_ANNOTATION] = "agent"
    namespaces: list[dict[str, str]] = [{"type": t} for t in NAMESPACES]
    idmaps: dict[str, Any] = {}
    if b.userns is not None:
        namespaces.append({"type": "user", "path": b.userns.path})
        m = [{"containerID": 0, "hostID": b.userns.host_base, "size": b.userns.size}]
        idmaps = {"uidMappings": m, "gidMappings": [dict(x) for x in m]}
        annotations[HOST_RLIMITS_ANNOTATION] = json.dumps(rlimits, sort_keys=True)
        rlimits = []
    config: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": _user(b),
            "args": list(b.argv),
            "env": list(b.env),
            "cwd": b.cwd,
            "capabilities": _caps(b),
            "rlimits": rlimits,
            "noNewPrivileges": True,
        },
        "root": {"path": str(b.rootfs), "readonly": b.readonly_root},
        "hostname": b.hostname,
        "mounts": [*_mounts.base_mounts(disk_mb=b.limits.disk_mb, usr_source=b.usr_source,
                                       usr_local=b.usr_local),
                   *_mounts.tmpfs_mounts(b.tmpfs),
                   *_mounts.file_mounts(input_dir=b.input_dir, output_dir=b.output_dir,
                                        code_dir=b.code_dir, agent_dir=b.agent_dir,
                                        run_dir=b.run_dir),
                   *_mounts.host_bind_mounts(b.binds)],
        "annotations": annotations,
        "linux": {
            **idmaps,
            "namespaces": namespaces,
            "cgroupsPath": b.cgroups_path,
            "resources": _res.cgroup_resources(b.limits, b.pids_mode),
            "seccomp": _seccomp.to_oci(dict(profile), b.machine, gvisor=b.gvisor),
            "maskedPaths": list(_mounts.MASKED_PATHS),
            "readonlyPaths": list(_mounts.READONLY_PATHS),
        },
    }
    return config
