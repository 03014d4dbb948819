"""Named safety checks on a finished OCI config, run before any runtime sees it.

Each check returns ``None`` when the config passes or a reason when it does not. A config that
fails any check is refused (:class:`~closedpaw.errors.BundleRejected`), never weakened.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from closedpaw.errors import BundleRejected
from closedpaw.sandbox.bundle.mounts import MASKED_PATHS, READONLY_PATHS
from closedpaw.sandbox.bundle.oci import NAMESPACES, SANDBOX_GID, SANDBOX_UID
from closedpaw.sandbox.bundle.resources import (
    MEMORY_ANNOTATION,
    MEMORY_BACKSTOP_BYTES,
    HostLimits,
)

__all__ = ["CHECKS", "check_config", "failures"]

Config = Mapping[str, Any]
Check = Callable[[Config, HostLimits], "str | None"]

# Host variables that must never leak into a sandbox's environment.
_HOST_ONLY_ENV = ("SSH_AUTH_SOCK", "AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY",
                  "ANTHROPIC_API_KEY", "NODE_EXTRA_CA_CERTS", "LD_PRELOAD", "LD_LIBRARY_PATH")


def user_is_nobody(c: Config, _: HostLimits) -> str | None:
    u = c["process"]["user"]
    if (u.get("uid"), u.get("gid")) != (SANDBOX_UID, SANDBOX_GID):
        return f"process runs as {u.get('uid')}:{u.get('gid')}, not 65534:65534"
    if any(g != SANDBOX_GID for g in u.get("additionalGids", [])):
        return "supplementary groups other than 65534"
    return None


def capabilities_empty(c: Config, _: HostLimits) -> str | None:
    caps = c["process"].get("capabilities")
    if caps is None:
        return "capabilities missing (the runtime would apply its defaults)"
    for k in ("bounding", "effective", "inheritable", "permitted", "ambient"):
        if caps.get(k) != []:
            return f"capability set {k} is not empty"
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
    ns = c["linux"].get("namespaces", [])
    if any("path" in n for n in ns):
        return "joins an existing namespace by path"
    missing = set(NAMESPACES) - {n["type"] for n in ns}
    return f"namespaces missing: {sorted(missing)}" if missing else None


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
    for m in c["mounts"]:
        opts = set(m.get("options", []))
        if m["type"] == "bind" or "bind" in opts or "rbind" in opts:
            src = os.path.normpath(m["source"])
            if src in ("/", "/etc", "/root", "/home", "/proc", "/sys", "/dev", "/run", "/var"):
                return f"bind of host {src} is not allowed"
            if not {"nosuid", "nodev"} <= opts:
                return f"bind at {m['destination']} lacks nosuid,nodev"
            if "ro" not in opts and m["destination"] != "/output":
                return f"writable bind at {m['destination']}"
    return None


def rlimits_within_host(c: Config, host: HostLimits) -> str | None:
    caps = {"RLIMIT_NOFILE": host.nofile_hard, "RLIMIT_NPROC": host.nproc_hard}
    for r in c["process"].get("rlimits", []):
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
        masked_and_readonly_paths, namespaces, seccomp_default_deny, memory_limit, cpu_quota,
        process_limit, tmp_is_sized_tmpfs, mounts_are_safe, rlimits_within_host,
        environment_clean, working_dir_absolute,
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
