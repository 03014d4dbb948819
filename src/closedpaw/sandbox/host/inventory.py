"""The one inventory of what ClosedPaw has on the host under one set of settings: state dirs,
snapshot images, runtime containers, cgroups, mounts and processes.

``closedpaw gc`` (:mod:`closedpaw.sandbox.host.reconcile`) finds its candidates with these
functions; the test fixtures (``leftovers()``) and the benchmarks' leak checks call
:func:`take` and expect an empty :class:`Inventory` after cleanup. Reading only: nothing here
changes the host.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from closedpaw.sandbox.host.cgroups import CGROUP_ROOT, is_v2
from closedpaw.sandbox.host.ownership import other_pids
from closedpaw.sandbox.host.userns import in_use
from closedpaw.settings import Settings

__all__ = [
    "RUNTIMES",
    "Inventory",
    "cgroup_bases",
    "cgroup_children",
    "container_ids",
    "mounts_under",
    "processes_mentioning",
    "runtime_processes",
    "take",
]

RUNTIMES = ("runc", "runsc")
_SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_OCTAL = re.compile(r"\\([0-7]{3})")
# Our container ids (every entry of a runtime root we use starts with one: runc's directory
# per container, runsc's state and lock files).
_CONTAINER = re.compile(r"^cp-[0-9a-f]{12}")


def cgroup_bases(parent: str) -> list[Path]:
    """``<parent>`` in every cgroup hierarchy (one on v2; one per controller on v1, symlinked
    aliases such as ``cpu`` -> ``cpu,cpuacct`` left out)."""
    if is_v2():
        return [CGROUP_ROOT / parent]
    try:
        return sorted(d / parent for d in CGROUP_ROOT.iterdir()
                      if d.is_dir() and not d.is_symlink())
    except OSError:
        return []


def cgroup_children(parent: str) -> dict[Path, list[str]]:
    """Child cgroups (names) under ``<parent>`` per hierarchy, hierarchies without any left
    out."""
    out: dict[Path, list[str]] = {}
    for base in cgroup_bases(parent):
        try:
            kids = sorted(e.name for e in os.scandir(base) if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
        if kids:
            out[base] = kids
    return out


def mounts_under(path: Path | str) -> list[Path]:
    """Mount points of this mount namespace strictly under ``path``, deepest first (the order
    to unmount them in)."""
    prefix = str(path).rstrip("/") + "/"
    out = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                mnt = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), line.split()[1])
                if mnt.startswith(prefix):
                    out.append(Path(mnt))
    except OSError:
        pass
    return sorted(out, key=lambda p: len(str(p)), reverse=True)


def _cmdlines() -> list[tuple[int, list[bytes]]]:
    out = []
    for name in other_pids():
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and argv[-1] == b"":
            argv.pop()
        if argv:
            out.append((name, argv))
    return out


def processes_mentioning(*needles: str) -> list[str]:
    """Live processes (not this one) whose command line mentions any needle, as
    ``"<pid>: <command line>"``."""
    raw = [os.fsencode(n) for n in needles]
    hits = []
    for pid, argv in _cmdlines():
        cmd = b" ".join(argv)
        if any(n in cmd for n in raw):
            hits.append(f"{pid}: {cmd.decode(errors='replace')[:160]}")
    return hits


def runtime_processes(bundle: Path) -> list[int]:
    """Runtime processes (``runc``/``runsc``) still working on ``bundle``: a foreground
    ``run`` whose owner died keeps going in its own session, and may still be creating the
    container."""
    needle = os.fsencode(str(bundle))
    return [pid for pid, argv in _cmdlines()
            if os.path.basename(argv[0]) in (b"runc", b"runsc") and needle in argv]


def container_ids(runtime: str, root: Path) -> list[str]:
    """Containers the ``runtime`` binary lists under its state ``root`` (none when the root
    or the binary does not exist).

    ``runc list`` fails with "no such file or directory" when a container's state vanishes
    while it lists (any delete racing the look, e.g. a foreground runtime removing its own
    container). That is not "no containers": the listing is retried, and if it keeps failing
    the root's entries (each named by its container's id) are read instead, so a
    live container is never left out."""
    binary = shutil.which(runtime, path=_SYSTEM_PATH)
    if binary is None or not root.exists():
        return []
    quiet = "-quiet" if runtime == "runsc" else "--quiet"
    err = ""
    for attempt in range(3):
        p = subprocess.run([binary, "--root", str(root), "list", quiet], capture_output=True,
                           text=True, timeout=30, check=False)
        if p.returncode == 0:
            return [ln.strip() for ln in p.stdout.splitlines() if ln.strip()]
        if not root.exists():
            return []
        err = p.stderr.strip()
        time.sleep(0.05 * (attempt + 1))
    low = err.lower()
    if "no such file" in low or "not exist" in low:
        return sorted({m.group(0) for e in _entries(root) if (m := _CONTAINER.match(e))})
    raise RuntimeError(f"{runtime} list failed ({p.returncode}): {err}")


def _entries(d: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(d))
    except OSError:
        return []


@dataclass(frozen=True)
class Inventory:
    """What exists on the host under one state dir and cgroup parent."""

    state_dirs: tuple[Path, ...] = ()          # <state_dir>/sandboxes/*
    snapshots: tuple[Path, ...] = ()           # <snapshots>/*
    containers: tuple[tuple[str, str], ...] = ()  # (runtime, id) in <state_dir>/<runtime>
    cgroups: tuple[Path, ...] = ()             # children of <cgroup_parent>, every hierarchy
    mounts: tuple[Path, ...] = ()              # mount points under <state_dir>
    processes: tuple[str, ...] = ()            # "<pid>: <cmdline>" mentioning <state_dir>
    uid_ranges: tuple[str, ...] = ()           # "<slot>: <owner>" host uid ranges held

    def lines(self) -> list[str]:
        """One line per item, e.g. ``state dir /run/closedpaw/sandboxes/cp-...``."""
        return ([f"state dir {p}" for p in self.state_dirs]
                + [f"snapshot image {p}" for p in self.snapshots]
                + [f"{rt} container {c}" for rt, c in self.containers]
                + [f"cgroup {p}" for p in self.cgroups]
                + [f"mount {p}" for p in self.mounts]
                + [f"process {p}" for p in self.processes]
                + [f"host uid range {r}" for r in self.uid_ranges])

    def __bool__(self) -> bool:
        return bool(self.lines())


def take(settings: Settings) -> Inventory:
    """The inventory under ``settings``; containers are listed with the ``runc``/``runsc``
    binaries on the system path under the roots ClosedPaw uses (``<state_dir>/<runtime>``)."""
    sandboxes = settings.state_dir / "sandboxes"
    containers = [(rt, c) for rt in RUNTIMES
                  for c in container_ids(rt, settings.state_dir / rt)]
    cgroups = [base / kid for base, kids in cgroup_children(settings.sandbox.cgroup_parent).items()
               for kid in kids]
    return Inventory(
        state_dirs=tuple(sandboxes / n for n in _entries(sandboxes)),
        snapshots=tuple(settings.snapshots / n for n in _entries(settings.snapshots)),
        containers=tuple(containers),
        cgroups=tuple(cgroups),
        mounts=tuple(sorted(mounts_under(settings.state_dir))),
        processes=tuple(processes_mentioning(str(settings.state_dir).rstrip("/") + "/")),
        uid_ranges=tuple(f"{slot}: {owner}" for slot, owner in sorted(in_use(settings).items())
                         if owner.startswith(str(settings.state_dir).rstrip("/") + "/")),
    )
