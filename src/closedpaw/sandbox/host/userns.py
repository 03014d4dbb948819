"""One host identity per sandbox (runc): its own user namespace and host uid/gid range.

Each runc sandbox gets a *slot*: host ids ``base + slot*65536 .. +65535``, mapped to the
sandbox's ids 0..65535 (its user 65534 is host ``base + slot*65536 + 65534``). Slots are
recorded as files ``<userns_dir>/<slot>`` created with ``O_EXCL`` and holding the sandbox's
state dir, so concurrent sandboxes and processes never share one; a slot is freed at
teardown (after the container is gone) and by ``gc`` when the state dir it names is gone.

The namespace is made *by* the range's first host id, not by runc (which runs as root):
per-user kernel counters (inotify instances, mqueue bytes, pending signals, user
namespaces) are charged to the namespace's creator in the parent namespace too, so a
namespace created by root would share root's budget with the host and every other sandbox.
A short-lived ``unshare --user`` process running as that host id creates it, root writes its
id maps, and the namespace is bound at ``<sandbox dir>/userns`` for runc to join by path.
``setpriv`` takes that id before ``unshare`` runs: a child of ours that changed its own ids
would have to be a ``fork`` of this (large, threaded) process, not a vfork, and under twenty
concurrent one-shots those forks cost more than the namespaces.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

from closedpaw._record import Record
from closedpaw.errors import SandboxError
from closedpaw.settings import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes

__all__ = [
    "SLOT_SIZE",
    "IdRange",
    "bind",
    "claim",
    "in_use",
    "make_namespace",
    "reachable",
    "release",
    "remove_namespace",
    "stale_slots",
    "unbind",
]

SLOT_SIZE = 65536
_SETPRIV = "/usr/bin/setpriv"
_UNSHARE = "/usr/bin/unshare"
_CAT = "/bin/cat"
_MS_BIND = 4096
_MS_RDONLY = 1
_MS_REMOUNT = 32
_MNT_DETACH = 2


class IdRange(Record):
    slot: int
    host_base: int
    record: Path

    @property
    def size(self) -> int:
        return SLOT_SIZE

    def host_id(self, inside: int) -> int:
        return self.host_base + inside

    def __str__(self) -> str:
        return f"{self.host_base}-{self.host_base + SLOT_SIZE - 1}"


def claim(settings: Settings, owner: Path) -> IdRange:
    """Take a free slot for the sandbox whose state dir is ``owner``."""
    s = settings.sandbox
    d = s.userns_dir
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    start = int.from_bytes(os.urandom(2), "big") % s.userns_slots
    for i in range(s.userns_slots):
        slot = (start + i) % s.userns_slots
        rec = d / str(slot)
        try:
            fd = os.open(rec, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{owner}\n")
        return IdRange(slot, s.userns_base + slot * SLOT_SIZE, rec)
    raise SandboxError(f"all {s.userns_slots} host uid ranges are in use "
                       f"({d}); raise CLOSEDPAW_USERNS_SLOTS or run 'closedpaw gc'")


def release(r: IdRange) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(r.record)


def in_use(settings: Settings) -> dict[int, str]:
    """slot -> the state dir that holds it."""
    out: dict[int, str] = {}
    try:
        entries = list(os.scandir(settings.sandbox.userns_dir))
    except FileNotFoundError:
        return out
    for e in entries:
        if e.name.isdigit():
            with contextlib.suppress(OSError):
                out[int(e.name)] = Path(e.path).read_text().strip()
    return out


def stale_slots(settings: Settings) -> list[Path]:
    """Records whose sandbox state dir is gone: the dir is made before the slot is taken
    and removed only after the container, so nothing runs with those ids any more."""
    out = []
    for slot, owner in in_use(settings).items():
        p = Path(owner)
        if not owner or not (p.exists() or p.with_name(".new-" + p.name).exists()):
            out.append(settings.sandbox.userns_dir / str(slot))
    return out


def _libc() -> ctypes.CDLL:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def make_namespace(r: IdRange, target: Path) -> None:
    """Create a user namespace owned by host id ``r.host_base``, map ids 0..65535 onto the
    range and bind it at ``target``."""
    host = r.host_base
    # setpriv sets real, effective and saved uid/gid to the range's first id and clears the
    # supplementary groups; no id is 0 after it, so unshare runs with no capability
    p = subprocess.Popen([_SETPRIV, f"--reuid={host}", f"--regid={host}", "--clear-groups",
                          "--", _UNSHARE, "--user", "--", _CAT],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env={}, close_fds=True)
    assert p.stdin is not None and p.stdout is not None
    try:
        p.stdin.write(b"x")
        p.stdin.flush()
        if p.stdout.read(1) != b"x":   # cat echoed it: unshare() is done
            raise SandboxError("could not create the sandbox's user namespace "
                               f"({_SETPRIV} or {_UNSHARE} --user failed; does the kernel "
                               "allow user "
                               "namespaces?). CLOSEDPAW_USERNS=0 runs runc sandboxes without "
                               "one (all as host uid 65534)")
        line = f"0 {host} {SLOT_SIZE}\n"
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{p.pid}/{name}", "w") as f:
                f.write(line)
        target.touch(mode=0o600, exist_ok=False)
        libc = _libc()
        src = f"/proc/{p.pid}/ns/user".encode()
        if libc.mount(src, str(target).encode(), None, _MS_BIND, None) != 0:
            err = _errno()
            raise SandboxError(f"could not bind the user namespace at {target}: "
                               f"{os.strerror(err)}")
    finally:
        with contextlib.suppress(OSError):
            p.stdin.close()
        p.stdout.close()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _errno() -> int:
    import ctypes

    return ctypes.get_errno() or errno.EIO


def reachable(path: Path) -> bool:
    """Can a user other than root (the namespace's root, host id ``base``) reach ``path``:
    search permission for others on every directory down to it?"""
    cur = Path("/")
    for part in [*path.resolve().parts[1:], ""]:
        try:
            if not os.stat(cur).st_mode & 0o001:
                return False
        except OSError:
            return False
        cur = cur / part
    return True


def bind(src: Path, target: Path) -> None:
    """Bind ``src`` read-only at ``target`` (a new empty directory). Read-only also guards
    the source: a removal of the state dir that meets a still-mounted bind fails (EROFS)
    instead of deleting through it."""
    target.mkdir(mode=0o755)
    libc = _libc()
    t = str(target).encode()
    if libc.mount(str(src).encode(), t, None, _MS_BIND, None) != 0:
        err = _errno()
        raise SandboxError(f"could not bind {src} at {target}: {os.strerror(err)}")
    if libc.mount(None, t, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY, None) != 0:
        err = _errno()
        libc.umount2(t, _MNT_DETACH)
        raise SandboxError(f"could not make the bind at {target} read-only: "
                           f"{os.strerror(err)}")


def unbind(target: Path) -> None:
    """Unmount a :func:`bind` (``os.path.ismount`` cannot tell a bind within one file
    system, so always try) and remove its directory."""
    if _libc().umount2(str(target).encode(), _MNT_DETACH) != 0:
        err = _errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point
            raise SandboxError(f"could not unbind {target}: {os.strerror(err)}")
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(target)


def remove_namespace(target: Path) -> None:
    """Unbind and remove the namespace file (the namespace dies with its last process)."""
    if os.path.ismount(target) and _libc().umount2(str(target).encode(), _MNT_DETACH) != 0:
        err = _errno()
        if err != errno.EINVAL:
            raise SandboxError(f"could not unbind {target}: {os.strerror(err)}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(target)
