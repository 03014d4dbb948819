"""Seccomp: a default-deny allowlist kept in Docker's profile format, converted to OCI.

The profile lives in ``profiles/default.json``. :func:`to_oci` is pure: it picks the entries for
one architecture and returns the ``linux.seccomp`` section of an OCI config.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["DEFAULT_PROFILE_PATH", "allowed_syscalls", "load_profile", "oci_arch", "to_oci"]

DEFAULT_PROFILE_PATH = Path(__file__).with_name("profiles") / "default.json"

_OCI_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64",
             "arm64": "SCMP_ARCH_AARCH64"}

# Syscalls that exist on x86_64 but not on arm64's generic table; dropped for arm64.
_X86_ONLY = frozenset((
    "access", "alarm", "arch_prctl", "chmod", "chown", "creat", "dup2", "epoll_create",
    "epoll_wait", "eventfd", "fork", "get_thread_area", "getdents", "getpgrp", "inotify_init",
    "lchown", "link", "lstat", "mkdir", "open", "pause", "pipe", "poll", "readlink", "rename",
    "rmdir", "select", "set_thread_area", "stat", "symlink", "time", "unlink", "utime", "utimes",
    "vfork",
))


_ENOSYS = 38


def oci_arch(machine: str) -> str:
    """Map ``platform.machine()`` to the libseccomp architecture name."""
    try:
        return _OCI_ARCH[machine]
    except KeyError:
        raise ValueError(f"no seccomp profile for architecture {machine!r}") from None


@lru_cache(maxsize=4)
def load_profile(path: Path = DEFAULT_PROFILE_PATH) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def to_oci(profile: dict[str, Any], machine: str, *, gvisor: bool = False) -> dict[str, Any]:
    """Convert a Docker-format profile to the OCI ``linux.seccomp`` object for ``machine``.

    ``gvisor``: runsc (as of 2022-12) ignores ``errnoRet`` and answers EPERM, which stops libc
    from falling back from ``clone3`` to ``clone`` (threads fail). Under gVisor a rule that
    exists only to answer ENOSYS is therefore turned into an allow: the call then reaches the
    Sentry, the user-space kernel, never the host kernel.
    """
    arch = oci_arch(machine)
    arches = [m["architecture"] for m in profile.get("archMap", [])]
    if arch not in arches:
        raise ValueError(f"profile has no entry for {arch}")
    drop = _X86_ONLY if arch == "SCMP_ARCH_AARCH64" else frozenset()
    rules: list[dict[str, Any]] = []
    for entry in profile["syscalls"]:
        names = [n for n in entry["names"] if n not in drop]
        if not names:
            continue
        rule: dict[str, Any] = {"names": names, "action": entry["action"]}
        if gvisor and entry["action"] == "SCMP_ACT_ERRNO" and entry.get("errnoRet") == _ENOSYS:
            rules.append({"names": names, "action": "SCMP_ACT_ALLOW"})
            continue
        if "errnoRet" in entry:
            rule["errnoRet"] = entry["errnoRet"]
        if "args" in entry:
            rule["args"] = [dict(a) for a in entry["args"]]
        rules.append(rule)
    out: dict[str, Any] = {
        "defaultAction": profile["defaultAction"],
        "architectures": [arch],
        "syscalls": rules,
    }
    if "defaultErrnoRet" in profile:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return out


def allowed_syscalls(oci_seccomp: dict[str, Any]) -> frozenset[str]:
    """Names an OCI seccomp section admits (conditionally or not)."""
    return frozenset(
        n for r in oci_seccomp.get("syscalls", []) if r["action"] == "SCMP_ACT_ALLOW"
        for n in r["names"]
    )
