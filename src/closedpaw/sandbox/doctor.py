"""``closedpaw doctor``: what is installed, what passed a live probe, and what is enforced."""

from __future__ import annotations

import os
import platform
from typing import Any

from closedpaw.errors import ClosedPawError
from closedpaw.sandbox.bundle.seccomp import allowed_syscalls, load_profile, to_oci
from closedpaw.sandbox.drivers.detect import PREFERENCE
from closedpaw.sandbox.host.cgroups import CGROUP_ROOT, is_v2
from closedpaw.sandbox.images.store import ImageStore
from closedpaw.settings import Settings

__all__ = ["diagnose", "render"]


def _cgroup_controllers() -> dict[str, bool]:
    if is_v2():
        try:
            have = set((CGROUP_ROOT / "cgroup.controllers").read_text().split())
        except OSError:
            have = set()
        return {c: c in have for c in ("memory", "cpu", "pids")}
    return {c: (CGROUP_ROOT / c).is_dir() for c in ("memory", "cpu", "cpuacct", "pids")}


def _overlayfs() -> bool:
    """Per-sandbox writable roots need overlayfs (loaded on first mount if it is a module)."""
    try:
        with open("/proc/filesystems") as f:
            if any(line.split()[-1] == "overlay" for line in f if line.strip()):
                return True
    except OSError:
        return False
    return os.path.exists(f"/lib/modules/{platform.release()}/kernel/fs/overlayfs")


def diagnose(settings: Settings | None = None, *, fresh: bool = False) -> dict[str, Any]:
    from closedpaw.sandbox.lifecycle.manager import SandboxManager

    settings = settings or Settings.from_env()
    root = os.geteuid() == 0
    syscalls = len(allowed_syscalls(to_oci(load_profile(), platform.machine())))
    report: dict[str, Any] = {
        "root": root,
        "kernel": platform.release(),
        "cgroup": "v2" if is_v2() else "v1",
        "cgroup_controllers": _cgroup_controllers(),
        "state_dir": str(settings.state_dir),
        "data_dir": str(settings.data_dir),
        "seccomp_profile_syscalls": syscalls,
        "image_dir": str(settings.images),
        "images": ["host", *(i.name for i in ImageStore(settings.images).list())],
        "overlayfs": _overlayfs(),
        "policy_file": str(settings.sandbox.policy_file),
        "policy_file_exists": settings.sandbox.policy_file.exists(),
        "runtimes": [],
        "selected": None,
        "usable": False,
    }
    mgr = SandboxManager(settings)
    for name in PREFERENCE:
        entry: dict[str, Any] = {"name": name, "installed": False, "probe_ok": False}
        try:
            drv = mgr.registry.driver(name)
        except ClosedPawError as e:
            entry["detail"] = str(e)
            report["runtimes"].append(entry)
            continue
        f = drv.features()
        entry.update(installed=True, binary=getattr(drv, "binary", ""), version=f.version,
                     platform=f.platform)
        if not root:
            entry["detail"] = "not probed: sandboxes need root"
        else:
            res = mgr.registry.probe(name, fresh=fresh)
            entry.update(probe_ok=res.ok, detail=res.detail)
        entry["enforced"] = {
            "seccomp_allowlist": f.seccomp and entry["probe_ok"],
            "no_capabilities": entry["probe_ok"], "no_new_privileges": entry["probe_ok"],
            "read_only_root": entry["probe_ok"], "user": "65534:65534",
            "namespaces": list(f.namespaces), "network": "none (loopback only)",
            "memory_limit": "cgroup", "cpu_limit": "cgroup cpu quota",
            "process_limit": ("pids cgroup" if f.pids_mode == "cgroup"
                              else "RLIMIT_NPROC inside the sandbox kernel"),
            "user_space_kernel": f.platform.startswith("gvisor"),
        }
        report["runtimes"].append(entry)
        if entry["probe_ok"] and report["selected"] is None:
            report["selected"] = name
    report["usable"] = report["selected"] is not None
    return report


def render(r: dict[str, Any]) -> str:
    out = [f"root: {'yes' if r['root'] else 'NO - sandboxes need root'}",
           f"kernel: {r['kernel']}, cgroup {r['cgroup']} "
           + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in r["cgroup_controllers"].items()),
           f"seccomp allowlist: {r['seccomp_profile_syscalls']} syscalls, default deny",
           f"images ({r['image_dir']}): {', '.join(r['images'])}; overlayfs "
           f"{'yes' if r['overlayfs'] else 'NO - store images cannot run'}",
           f"policies: built-in + {r['policy_file']} "
           f"({'present' if r['policy_file_exists'] else 'absent'})", ""]
    for e in r["runtimes"]:
        if not e["installed"]:
            out.append(f"{e['name']:6} not installed: {e.get('detail', '')}")
            continue
        mark = "PASS" if e["probe_ok"] else "FAIL"
        out.append(f"{e['name']:6} {e['version']} ({e['platform']}) probe {mark}: "
                   f"{e.get('detail', '')}")
        if e["probe_ok"]:
            enf = e["enforced"]
            out.append(f"       enforced: seccomp, no caps, no-new-privs, read-only root, "
                       f"user {enf['user']}, network {enf['network']}, "
                       f"namespaces {'/'.join(enf['namespaces'])}, processes via "
                       f"{enf['process_limit']}")
    out.append("")
    if r["usable"]:
        out.append(f"sandboxes will use: {r['selected']}")
    else:
        out.append("no runtime passed its probe: execution is refused (fail closed). "
                   "Install with 'apt-get install runsc runc' and run as root.")
    return "\n".join(out) + "\n"
