"""Reconciliation: find and remove what a crashed owner left behind (``closedpaw gc``).

Everything ClosedPaw creates for a sandbox is named by its id (``cp-`` + 12 hex digits): the
state directory ``<state_dir>/sandboxes/<id>`` (bundle, staged /input, the /output tmpfs),
the container in the runtime's root ``<state_dir>/<runtime>``, and the cgroups
``<cgroup_parent>/<id>``; a snapshot's image is ``<snapshots>/snap-<12 hex>``, locked the
same way. A sandbox is garbage when its owner is gone, which the owner's lock
on the state directory tells (:mod:`closedpaw.sandbox.host.ownership`; a lock that only a
process the dead owner forked still holds is waited for, within one allowance per run, and
what is left alone although its owner may be gone is reported under ``deferred`` with why);
containers and cgroups with
no state directory at all are garbage too, since the directory is made first and removed last.
What exists is read from :mod:`closedpaw.sandbox.host.inventory`.
Live sandboxes of other processes are never touched; nor are cgroups that have processes or
are younger than a minute, since another instance may share the cgroup parent.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from closedpaw.sandbox.drivers.base import Driver
from closedpaw.sandbox.host import ownership, userns
from closedpaw.sandbox.host.cgroups import CgroupAccounting
from closedpaw.sandbox.host.files import unmount_output
from closedpaw.sandbox.host.inventory import (
    cgroup_bases,
    cgroup_children,
    mounts_under,
    runtime_processes,
)
from closedpaw.sandbox.images.store import gc_staging
from closedpaw.settings import Settings

__all__ = ["GcReport", "collect_garbage"]

_ID = re.compile(r"^cp-[0-9a-f]{12}$")
_SNAP = re.compile(r"^snap-[0-9a-f]{12}$")


@dataclass(frozen=True)
class GcReport:
    removed: tuple[str, ...] = ()       # sandbox ids whose leftovers were removed
    live: tuple[str, ...] = ()          # ids left alone: a living process owns them
    errors: tuple[str, ...] = ()        # what could not be removed, and why
    details: tuple[str, ...] = field(default=())  # what was found, one line each
    # "<id>: why" of each one left alone although its owner may be gone (no lock file yet
    # and recently changed; a lock still held by what a dead owner forked, past the wait):
    # a later gc looks again
    deferred: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"removed": list(self.removed), "live": list(self.live),
                "errors": list(self.errors), "details": list(self.details),
                "deferred": list(self.deferred)}


def _scandir(d: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(d))
    except OSError:
        return []


def _cgroup_ids(parent: str) -> set[str]:
    return {k for kids in cgroup_children(parent).values() for k in kids if _ID.match(k)}


def _abandoned_cgroup(parent: str, sid: str, grace_s: float) -> bool:
    """No process in any of the sandbox's cgroups, and none created in the last ``grace_s``
    seconds. Another ClosedPaw instance may share the cgroup parent with a different state
    dir; its sandboxes' cgroups are busy or new, so they are never taken."""
    now = time.time()
    for base in (b / sid for b in cgroup_bases(parent)):
        if not base.is_dir():
            continue
        for dirpath, _, files in os.walk(base):
            try:
                if now - os.stat(dirpath).st_mtime < grace_s:
                    return False
                if "cgroup.procs" in files and Path(dirpath, "cgroup.procs").read_text().strip():
                    return False
            except OSError:
                continue
    return True


def _container_ids(drv: Driver) -> list[str]:
    """The runtime's container ids of ours. ``runc list`` fails when a container's state
    disappears while it lists (a normal delete racing gc): retry, then read the runtime's
    root directory, which holds one entry per container named by its id."""
    for attempt in range(3):
        try:
            return [c for c in drv.list_ids() if _ID.match(c)]
        except Exception:
            if attempt < 2:
                time.sleep(0.05 * (attempt + 1))
                continue
            root = getattr(drv, "root_dir", None)
            if root is None:
                raise
            return sorted({e.name[:len("cp-") + 12] for e in _scandir(Path(root))
                           if _ID.match(e.name[:len("cp-") + 12])})
    return []


def _kill_and_wait(pid: int, bundle: Path, timeout_s: float = 5.0) -> None:
    """SIGKILL runtime process ``pid`` (through a pidfd, once its command line still names
    ``bundle``: never a reused pid) and wait until it has died: gc is done with it only when
    it is gone, not when the signal is on its way (a leak check right after gc saw one still
    exiting under load)."""
    import select

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if os.fsencode(str(bundle)) not in f.read():
                    return
        except OSError:
            return
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        p = select.poll()
        p.register(fd, select.POLLIN)  # readable once the process has exited
        if not p.poll(timeout_s * 1000):
            raise OSError(16, f"runtime process {pid} still runs {timeout_s:.0f} s after "
                          "SIGKILL")
    except ProcessLookupError:
        return
    finally:
        os.close(fd)


class _Collector:
    def __init__(self, settings: Settings, drivers: Mapping[str, Driver]) -> None:
        self.settings = settings
        self.drivers = drivers
        self.sandboxes = settings.state_dir / "sandboxes"
        self.removed: list[str] = []
        self.live: list[str] = []
        self.errors: list[str] = []
        self.details: list[str] = []
        self.deferred: list[str] = []
        # one allowance, for the whole run, to wait for locks a dead owner's children hold
        self.patience = ownership.Patience()

    def has_state(self, sid: str) -> bool:
        return any((self.sandboxes / n).exists() for n in (sid, ownership.NEW_PREFIX + sid))

    def stop_container(self, sid: str, *, force: bool = False) -> None:
        """Kill and delete ``sid`` in every runtime that knows it (with ``force``, in every
        runtime whose root has any trace of it: a half-created container has no loadable
        state, but ``delete --force`` still removes it)."""
        for name, drv in self.drivers.items():
            known = drv.state(sid) is not None
            root = getattr(drv, "root_dir", None)
            trace = root is not None and any(
                e.name.startswith(sid) for e in _scandir(Path(root)))
            if not known and not (force and trace):
                continue
            self.details.append(f"{sid}: {name} container")
            self.thaw(sid)
            with contextlib.suppress(Exception):
                drv.kill(sid, "KILL", all_processes=True)
            try:
                drv.delete(sid)
            except Exception:
                # runsc can fail a delete whose sandbox died meanwhile, yet the container
                # is gone afterwards: only a container still there is an error
                if drv.state(sid) is not None:
                    raise

    def thaw(self, sid: str) -> None:
        """Resume ``sid`` wherever it is paused: runsc panics deleting a paused container,
        and a paused runsc container whose foreground ``runsc run`` is killed loses its
        sandbox and can then be neither resumed nor deleted."""
        for drv in self.drivers.values():
            with contextlib.suppress(Exception):
                if drv.state(sid) == "paused":
                    drv.resume(sid)

    def reap(self, sid: str, path: Path, fd: int) -> None:
        try:
            # First stop any runtime process still at work on this bundle (it could finish
            # creating the container after us), then kill and delete the container by id
            # even when the runtime cannot load its state yet. A paused container is thawed
            # before its runtime process is killed.
            self.thaw(sid)
            for pid in runtime_processes(path):
                self.details.append(f"{sid}: runtime process {pid}")
                _kill_and_wait(pid, path)
            self.stop_container(sid, force=True)
            cg = CgroupAccounting(self.settings.sandbox.cgroup_parent, sid)
            for pid in cg.kill_all():  # what the runtime lost track of (its Sentry, gofer)
                self.details.append(f"{sid}: process {pid} left in its cgroups")
            for m in mounts_under(path):
                self.details.append(f"{sid}: mount {m}")
                if m.name.startswith("via-"):  # a read-only bind of a source (userns)
                    userns.unbind(m)
                else:
                    unmount_output(m)
            cg.remove()
            ownership.remove(path, fd)
        except BaseException:
            ownership.release(fd)
            raise

    def run(self) -> GcReport:
        try:
            entries = sorted(os.scandir(self.sandboxes), key=lambda e: e.name)
        except FileNotFoundError:
            entries = []
        known: set[str] = set()
        for e in entries:
            sid = e.name.removeprefix(ownership.NEW_PREFIX)
            if not _ID.match(sid) or not e.is_dir(follow_symlinks=False):
                continue
            known.add(sid)
            fd = self.examine(sid, Path(e.path))
            if fd is None:
                continue
            self.details.append(f"{sid}: state dir of a dead owner")
            self._try(sid, lambda sid=sid, p=Path(e.path), fd=fd: self.reap(sid, p, fd))
        # Containers and cgroups without a state dir. The dir is made before either and
        # removed after both, so one that appears meanwhile is re-checked, never taken.
        for name, drv in self.drivers.items():
            try:
                ids = [c for c in _container_ids(drv) if c not in known]
            except Exception as err:
                self.errors.append(f"{name}: cannot list containers: {err}")
                continue
            for sid in ids:
                if self.has_state(sid):
                    continue
                self._try(sid, lambda sid=sid: self.stop_container(sid))
        for sid in sorted(_cgroup_ids(self.settings.sandbox.cgroup_parent) - known):
            if self.has_state(sid) or not _abandoned_cgroup(
                    self.settings.sandbox.cgroup_parent, sid, ownership.CREATING_GRACE_S):
                continue
            self.details.append(f"{sid}: cgroups")
            self._try(sid, CgroupAccounting(self.settings.sandbox.cgroup_parent, sid).remove)
        self.snapshots()
        self.details.extend(gc_staging(self.settings.images))  # killed image builds/imports
        self.uid_ranges()
        return GcReport(tuple(dict.fromkeys(self.removed)), tuple(self.live),
                        tuple(self.errors), tuple(self.details), tuple(self.deferred))

    def examine(self, name: str, path: Path) -> int | None:
        """The lock of ``path`` if its owner is gone; else records it as live or deferred."""
        found = ownership.examine(path, self.patience)
        if found.fd is None and os.path.lexists(path):
            if found.why is None:
                self.live.append(name)
            else:
                self.deferred.append(f"{name}: {found.why}")
        return found.fd

    def snapshots(self) -> None:
        """Checkpoint images (they may hold secrets) whose owner is gone."""
        try:
            entries = sorted(os.scandir(self.settings.snapshots), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for e in entries:
            name = e.name.removeprefix(ownership.NEW_PREFIX)
            if not _SNAP.match(name) or not e.is_dir(follow_symlinks=False):
                continue
            fd = self.examine(name, Path(e.path))
            if fd is None:
                continue
            self.details.append(f"{name}: snapshot image of a dead owner")
            self._try(name, lambda p=Path(e.path), fd=fd: ownership.remove(p, fd))

    def uid_ranges(self) -> None:
        """Host uid ranges whose sandbox state dir is gone (any instance's: the record names
        its dir, made before the range is taken and removed after the container)."""
        for rec in userns.stale_slots(self.settings):
            self.details.append(f"host uid range {rec.name}: its sandbox is gone")
            try:
                rec.unlink(missing_ok=True)
            except OSError as err:
                self.errors.append(f"host uid range {rec.name}: {err}")

    def _try(self, sid: str, job: Any) -> None:
        try:
            job()
        except Exception as err:
            self.errors.append(f"{sid}: {err}")
        else:
            self.removed.append(sid)


def collect_garbage(settings: Settings, drivers: Mapping[str, Driver]) -> GcReport:
    """Remove every sandbox leftover under ``settings`` whose owner is gone."""
    return _Collector(settings, drivers).run()
