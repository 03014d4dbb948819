"""Named safety checks on a finished OCI config, run before any runtime sees it.

Each check returns ``None`` when the config passes or a reason when it does not. A config that
fails any check is refused (:class:`~closedpaw.errors.BundleRejected`), never weakened.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping

from closedpaw.errors import BundleRejected
from closedpaw.sandbox.bundle.mounts import (
    AGENT_MOUNT,
    MASKED_PATHS,
    READONLY_PATHS,
    RW_BINDS_ANNOTATION,
)
from closedpaw.sandbox.bundle.oci import (
    AGENT_CAPS,
    HOST_RLIMITS_ANNOTATION,
    INIT_ANNOTATION,
    NAMESPACES,
    SANDBOX_GID,
    SANDBOX_UID,
    USERNS_FILE,
)
from closedpaw.sandbox.bundle.resources import (
    MEMORY_ANNOTATION,
    MEMORY_BACKSTOP_BYTES,
    HostLimits,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeAlias

    Config: TypeAlias = Mapping[str, Any]
    Check: TypeAlias = Callable[[Config, HostLimits], "str | None"]

__all__ = ["CHECKS", "check_config", "failures"]

# Host variables that must never leak into a sandbox's environment.
_HOST_ONLY_ENV = ("SSH_AUTH_SOCK", "AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY",
                  "ANTHROPIC_API_KEY", "NODE_EXTRA_CA_CERTS", "LD_PRELOAD", "LD_LIBRARY_PATH")


def _agent_init(c: Config) -> bool:
    """The config starts the in-sandbox agent (declared by annotation, and really its file
    on the read-only agent mount): the one process allowed to start as uid 0 holding
    CAP_SETUID/CAP_SETGID, which it gives up before it reads any request."""
    args = c["process"].get("args", [])
    return (c.get("annotations", {}).get(INIT_ANNOTATION) == "agent" and len(args) >= 2
            and args[-1] == f"{AGENT_MOUNT}/cp_agent.py"
            and any(m["destination"] == AGENT_MOUNT and "ro" in m.get("options", [])
                    for m in c["mounts"]))


def user_is_nobody(c: Config, _: HostLimits) -> str | None:
    """Every sandbox process runs as 65534:65534; only the agent init starts as 0:0 (it
    leaves uid 0 for good before reading a request, and its commands run as 65534)."""
    u = c["process"]["user"]
    if _agent_init(c) and (u.get("uid"), u.get("gid"), u.get("additionalGids")) == (0, 0, [0]):
        return None
    if (u.get("uid"), u.get("gid")) != (SANDBOX_UID, SANDBOX_GID):
        return f"process runs as {u.get('uid')}:{u.get('gid')}, not 65534:65534"
    if any(g != SANDBOX_GID for g in u.get("additionalGids", [])):
        return "supplementary groups other than 65534"
    return None


def capabilities_empty(c: Config, _: HostLimits) -> str | None:
    """No capabilities, except the agent init's CAP_SETUID/CAP_SETGID (bounding, effective,
    permitted; never inheritable or ambient), which the kernel clears when it leaves uid 0."""
    caps = c["process"].get("capabilities")
    if caps is None:
        return "capabilities missing (the runtime would apply its defaults)"
    agent = _agent_init(c) and c["process"]["user"].get("uid") == 0
    for k in ("bounding", "effective", "inheritable", "permitted", "ambient"):
        allowed = sorted(AGENT_CAPS) if agent and k in ("bounding", "effective",
                                                          "permitted") else []
        if sorted(caps.get(k) or []) != allowed or caps.get(k) is None:
            return f"capability set {k} is not {allowed if allowed else 'empty'}"
    return None


def no_new_privileges(c: Config, _: HostLimits) -> str | None:
    return None if c["process"].get("noNewPrivileges") is True else "noNewPrivileges is off"


OVERLAY_ANNOTATION = "org.closedpaw.rootfs"
SANDBOX_ID_ANNOTATION = "org.closedpaw.sandbox-id"


def root_readonly(c: Config, _: HostLimits) -> str | None:
    """The root is read-only, or it is this sandbox's own disposable overlay: the directory
    ``<state>/sandboxes/<sandbox-id>/rootfs`` declared as ``overlay`` by annotation, which the
    state dir mounts (upper layer on a per-sandbox tmpfs) and removes with the sandbox."""
    if c["root"].get("readonly") is True:
        return None
    ann = c.get("annotations", {})
    sid = ann.get(SANDBOX_ID_ANNOTATION)
    path = os.path.normpath(str(c["root"].get("path", "")))
    parts = path.split("/")
    if (ann.get(OVERLAY_ANNOTATION) == "overlay" and sid and len(parts) >= 4
            and parts[-1] == "rootfs" and parts[-2] == sid and parts[-3] == "sandboxes"):
        return None
    return "root filesystem is writable and is not a per-sandbox disposable overlay"


def masked_and_readonly_paths(c: Config, _: HostLimits) -> str | None:
    missing = set(MASKED_PATHS) - set(c["linux"].get("maskedPaths", []))
    if missing:
        return f"masked paths missing: {sorted(missing)}"
    missing = set(READONLY_PATHS) - set(c["linux"].get("readonlyPaths", []))
    return f"read-only paths missing: {sorted(missing)}" if missing else None


def namespaces(c: Config, _: HostLimits) -> str | None:
    """Every namespace is new, except the sandbox's own user namespace, made for it and bound
    at ``<state>/sandboxes/<id>/userns``."""
    ns = c["linux"].get("namespaces", [])
    sid = c.get("annotations", {}).get(SANDBOX_ID_ANNOTATION)
    for n in ns:
        if "path" not in n:
            continue
        parts = os.path.normpath(str(n["path"])).split("/")
        if not (n["type"] == "user" and sid and len(parts) >= 4 and parts[-1] == USERNS_FILE
                and parts[-2] == sid and parts[-3] == "sandboxes"):
            return "joins an existing namespace by path"
    types = [n["type"] for n in ns]
    if len(types) != len(set(types)):
        return "a namespace is listed twice"
    missing = set(NAMESPACES) - set(types)
    return f"namespaces missing: {sorted(missing)}" if missing else None


USERNS_MIN_HOST_ID = 65536      # a sandbox's range never holds host root or system users
USERNS_SIZE = 65536


def user_namespace(c: Config, _: HostLimits) -> str | None:
    """With a user namespace: one mapping, the same for uids and gids, container ids
    0..65535 onto a host range above every system id; without one: no mappings."""
    lin = c["linux"]
    has = any(n["type"] == "user" for n in lin.get("namespaces", []))
    um, gm = lin.get("uidMappings"), lin.get("gidMappings")
    if not has:
        return "id mappings without a user namespace" if um or gm else None
    if not um or um != gm:
        return "a user namespace needs the same uid and gid mapping"
    if len(um) != 1:
        return "a user namespace must map one contiguous range"
    m = um[0]
    if m.get("containerID") != 0 or m.get("size") != USERNS_SIZE:
        return f"the mapping must cover container ids 0..{USERNS_SIZE - 1}"
    host = m.get("hostID")
    if not isinstance(host, int) or host < USERNS_MIN_HOST_ID or host + USERNS_SIZE > 2**32 - 1:
        return f"host ids {host}.. are not a range of their own above {USERNS_MIN_HOST_ID}"
    return None


def seccomp_default_deny(c: Config, _: HostLimits) -> str | None:
    s = c["linux"].get("seccomp")
    if not s:
        return "no seccomp profile"
    if s.get("defaultAction") not in ("SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS"):
        return f"seccomp default action {s.get('defaultAction')} is not a denial"
    allowed = {n for r in s.get("syscalls", []) if r["action"] == "SCMP_ACT_ALLOW"
               for n in r["names"]}
    bad = allowed & {"mount", "umount2", "unshare", "setns", "ptrace", "bpf", "kexec_load",
                     "init_module", "finit_module", "pivot_root", "keyctl", "io_uring_setup",
                     "process_vm_readv", "process_vm_writev", "kcmp",
                     "perf_event_open", "userfaultfd", "open_by_handle_at"}
    return f"seccomp allows {sorted(bad)}" if bad else None


#: the socket families a sandbox may create: AF_UNIX, AF_INET, AF_INET6, and AF_NETLINK
#: with protocol NETLINK_ROUTE (0) only; socketpair: AF_UNIX only
SOCKET_FAMILIES = {1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6", 16: "AF_NETLINK"}
_AF_NETLINK, _NETLINK_ROUTE = 16, 0


def _pinned(rule: Mapping[str, Any], index: int) -> int | None:
    """The value a rule's conditions pin argument ``index`` to (an int argument compared in
    its low 32 bits or whole), or None when it is not pinned."""
    for a in rule.get("args") or []:
        if a.get("index") != index:
            continue
        if a.get("op") == "SCMP_CMP_EQ":
            return int(a.get("value", -1))
        if a.get("op") == "SCMP_CMP_MASKED_EQ" and a.get("value") in (0xFFFFFFFF,
                                                                      0xFFFFFFFFFFFFFFFF):
            return int(a.get("valueTwo", -1))
    return None


def socket_families(c: Config, _: HostLimits) -> str | None:
    """``socket`` and ``socketpair`` are allowed only for pinned families: AF_UNIX, AF_INET,
    AF_INET6 (and AF_NETLINK with NETLINK_ROUTE for socket; AF_UNIX only for socketpair).
    AF_VSOCK (not namespaced under runc), AF_PACKET, AF_ALG and every other family are
    refused."""
    s = c["linux"].get("seccomp") or {}
    for r in s.get("syscalls", []):
        if r.get("action") != "SCMP_ACT_ALLOW":
            continue
        for name in set(r["names"]) & {"socket", "socketpair"}:
            fam = _pinned(r, 0)
            if fam is None:
                return f"seccomp allows {name} for every socket family"
            allowed = {1} if name == "socketpair" else set(SOCKET_FAMILIES)
            if fam not in allowed:
                return f"seccomp allows {name} for family {fam}"
            if fam == _AF_NETLINK and _pinned(r, 2) != _NETLINK_ROUTE:
                return "seccomp allows netlink sockets other than NETLINK_ROUTE"
    return None


def memory_limit(c: Config, _: HostLimits) -> str | None:
    m = c["linux"].get("resources", {}).get("memory", {})
    if not m.get("limit") or m["limit"] <= 0:
        return "no memory limit"
    if m.get("swap") != m["limit"]:
        return "memory+swap limit differs from memory limit"
    declared = str(c.get("annotations", {}).get(MEMORY_ANNOTATION, ""))
    if not declared.isdigit() or int(declared) <= 0:
        return f"the sandbox's memory limit is not declared ({MEMORY_ANNOTATION})"
    if m["limit"] > int(declared) + MEMORY_BACKSTOP_BYTES:
        return "the container's memory limit exceeds the sandbox's limit plus the backstop"
    return None


def cpu_quota(c: Config, _: HostLimits) -> str | None:
    cpu = c["linux"].get("resources", {}).get("cpu", {})
    return None if cpu.get("quota", 0) > 0 and cpu.get("period", 0) > 0 else "no CPU quota"


def process_limit(c: Config, _: HostLimits) -> str | None:
    pids = c["linux"].get("resources", {}).get("pids", {}).get("limit", 0)
    if pids <= 0:
        return "no pids limit"
    return None


def tmp_is_sized_tmpfs(c: Config, _: HostLimits) -> str | None:
    for m in c["mounts"]:
        if m["destination"] == "/tmp":
            ok = m["type"] == "tmpfs" and any(o.startswith("size=") for o in m["options"])
            return None if ok else "/tmp is not a sized tmpfs"
    return "/tmp is not mounted"


def mounts_are_safe(c: Config, _: HostLimits) -> str | None:
    declared_rw = {d for d in str(c.get("annotations", {}).get(RW_BINDS_ANNOTATION, ""))
                   .split(":") if d}
    for m in c["mounts"]:
        opts = set(m.get("options", []))
        if m["type"] == "bind" or "bind" in opts or "rbind" in opts:
            src = os.path.normpath(m["source"])
            if src in ("/", "/etc", "/root", "/home", "/proc", "/sys", "/dev", "/run", "/var"):
                return f"bind of host {src} is not allowed"
            if not {"nosuid", "nodev"} <= opts:
                return f"bind at {m['destination']} lacks nosuid,nodev"
            if "ro" not in opts and m["destination"] != "/output" \
                    and m["destination"] not in declared_rw:
                return f"writable bind at {m['destination']}"
    return None


def rlimits_within_host(c: Config, host: HostLimits) -> str | None:
    """The rlimits in force (in the config, or applied by the driver to the runtime when the
    sandbox has a user namespace) set the open-files and core limits, within the host's."""
    caps = {"RLIMIT_NOFILE": host.nofile_hard, "RLIMIT_NPROC": host.nproc_hard}
    rl = list(c["process"].get("rlimits", []))
    declared = c.get("annotations", {}).get(HOST_RLIMITS_ANNOTATION)
    if declared is not None:
        if rl:
            return "rlimits both in the config and applied by the host"
        try:
            rl = json.loads(declared)
        except ValueError:
            return "host-applied rlimits are not valid JSON"
    if not {"RLIMIT_NOFILE", "RLIMIT_CORE"} <= {r["type"] for r in rl}:
        return "RLIMIT_NOFILE or RLIMIT_CORE is not set"
    for r in rl:
        cap = caps.get(r["type"])
        if cap is not None and (r["hard"] > cap or r["soft"] > r["hard"]):
            return f"{r['type']} {r['soft']}/{r['hard']} exceeds host hard limit {cap}"
    return None


def environment_clean(c: Config, _: HostLimits) -> str | None:
    keys = [e.split("=", 1)[0] for e in c["process"].get("env", [])]
    if len(keys) != len(set(keys)):
        return "duplicate environment variables"
    leaked = [k for k in keys if k in _HOST_ONLY_ENV]
    return f"host-only variables in environment: {leaked}" if leaked else None


def working_dir_absolute(c: Config, _: HostLimits) -> str | None:
    cwd = c["process"].get("cwd", "")
    return None if cwd.startswith("/") and ".." not in cwd.split("/") else "bad working dir"


CHECKS: tuple[tuple[str, Check], ...] = tuple(
    (f.__name__, f) for f in (
        user_is_nobody, capabilities_empty, no_new_privileges, root_readonly,
        masked_and_readonly_paths, namespaces, user_namespace, seccomp_default_deny,
        socket_families, memory_limit, cpu_quota, process_limit, tmp_is_sized_tmpfs,
        mounts_are_safe, rlimits_within_host, environment_clean, working_dir_absolute,
    )
)


def failures(config: Config, host: HostLimits) -> list[tuple[str, str]]:
    """Every failed check as ``(name, reason)``; empty when the config is acceptable."""
    out = []
    for name, check in CHECKS:
        try:
            why = check(config, host)
        except (KeyError, TypeError, AttributeError) as e:
            why = f"malformed config ({type(e).__name__}: {e})"
        if why:
            out.append((name, why))
    return out


def check_config(config: Config, host: HostLimits) -> None:
    """Raise :class:`BundleRejected` naming every failed check."""
    bad = failures(config, host)
    if bad:
        raise BundleRejected(bad)
