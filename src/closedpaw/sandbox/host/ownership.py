"""Who owns a sandbox's state: an ``flock`` on ``<state dir>/.lock``, held for its whole life.

:func:`claim` creates the state directory under a temporary name, locks its ``.lock`` file
and only then renames it into place, so a directory that can be seen under its real name is
always locked by a living owner - or its owner is dead. The lock belongs to the open file
description: a forked teardown child (the CLI's) keeps holding it after the parent exits, and
the kernel drops it when the last holder dies, however it died. :func:`orphaned` takes the
lock of a sandbox whose owner is gone, which is how ``closedpaw gc`` tells leftovers of a
killed process from live sandboxes of another one - no pid files, no pid reuse.

Every child the owner starts holds a copy of its lock descriptors from ``fork`` (or
``vfork``) until it execs or closes them (they are close-on-exec): an owner SIGKILLed while
it starts a ``runc``/``runsc`` command leaves such a child behind, holding every lock of the
owner for a moment after the owner is gone. A held lock whose taker (the pid the kernel shows
in ``/proc/locks``) is dead is therefore held by an inheritor; :func:`examine` waits for it
(up to :data:`INHERITED_WAIT_S` per gc run) instead of calling the sandbox live. A lock held
by a living taker is never waited for, and a held lock is never taken: a reused pid makes a
dead taker look alive (the sandbox is left alone, as before), and a taker in a pid namespace
gc cannot see looks dead (its lock is waited for, then reported as deferred).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path

from closedpaw._record import Record

__all__ = ["INHERITED_WAIT_S", "LOCK_NAME", "NEW_PREFIX", "Finding", "Patience", "claim",
           "examine", "orphaned", "release", "remove"]

LOCK_NAME = ".lock"
NEW_PREFIX = ".new-"
# A directory still under its temporary name is being created; after this long it is not.
CREATING_GRACE_S = 60.0
# How long one gc run waits, in all, for locks whose taker is dead but which a process it
# forked still holds (a child between fork and exec lets go within moments; the CLI's
# detached teardown child removes the directory when done).
INHERITED_WAIT_S = 10.0
_POLL_S = 0.01


def claim(path: Path) -> int:
    """Create ``path`` (mode 0711) owned by the caller; returns the lock's fd (close it with
    :func:`release` after the directory is gone)."""
    tmp = path.with_name(NEW_PREFIX + path.name)
    tmp.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    tmp.mkdir(mode=0o711)
    try:
        fd = _locked_lock(tmp)
        try:
            # rename() would replace an empty directory: never take over an existing one.
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, "sandbox state exists already", str(path))
            try:
                os.rename(tmp, path)
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise FileExistsError(e.errno, "sandbox state exists already",
                                          str(path)) from None
                raise
        except BaseException:
            os.close(fd)
            raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp / LOCK_NAME)
        with contextlib.suppress(OSError):
            os.rmdir(tmp)
        raise
    return fd


def _locked_lock(d: Path) -> int:
    """Create ``d/.lock`` already locked: an unnamed file (``O_TMPFILE``) is locked first, then
    linked into place. A directory still under its temporary name whose lock is there and free
    therefore belongs to a dead creator, however young it is (``orphaned``). Where the
    filesystem has no ``O_TMPFILE``, the file is created, then locked."""
    try:
        fd = os.open(d, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:
        fd = os.open(d / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # linkat(AT_SYMLINK_FOLLOW) through /proc: CPython calls plain link(), which does
        # not follow, unless a dir fd is given (ignored here: the path is absolute)
        os.link(f"/proc/self/fd/{fd}", d / LOCK_NAME, src_dir_fd=fd, follow_symlinks=True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def release(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


class Patience:
    """One gc run's allowance for waiting on inherited locks (:data:`INHERITED_WAIT_S`),
    counted from the first wait, shared by every directory it examines."""

    def __init__(self, seconds: float = INHERITED_WAIT_S) -> None:
        self.seconds = seconds
        self._deadline: float | None = None

    def left(self) -> float:
        if self._deadline is None:
            self._deadline = time.monotonic() + self.seconds
        return self._deadline - time.monotonic()


class Finding(Record):
    """What :func:`examine` found: ``fd``, the lock, taken (its owner is gone); or ``None``
    and ``why`` it was left alone although its owner may be gone (``None``: a living process
    took the lock and holds it, or the directory went away meanwhile)."""

    fd: int | None
    why: str | None = None


def orphaned(path: Path, patience: Patience | None = None) -> int | None:
    """Take over ``path`` if its owner is gone: returns a locked fd, or ``None`` while a
    living process owns it (or it is still being created, or is already gone)."""
    return examine(path, patience).fd


def examine(path: Path, patience: Patience | None = None) -> Finding:
    """:func:`orphaned`, saying why a directory is left alone when that is not plainly a
    living owner. A lock held after its taker died is waited for, within ``patience`` (a
    fresh :data:`INHERITED_WAIT_S` when not given), and taken once its last holder lets go."""
    try:
        age = time.time() - os.lstat(path).st_mtime
    except FileNotFoundError:
        return Finding(None)
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(path / LOCK_NAME, flags)
    except FileNotFoundError:
        # No lock: the directory is being created (its lock comes right after it, already
        # locked) or its creator died in between; or the owner is removing it right now (the
        # lock goes last); or it predates locks. Only time tells: a directory that has not
        # changed for a while is taken. One under its temporary name *with* a free lock is
        # taken at once: its creator is dead (see _locked_lock).
        if age < CREATING_GRACE_S:
            return Finding(None, f"no lock file and changed {max(age, 0.0):.1f} s ago: being "
                           "created or removed, or its creator died in between (taken once "
                           f"unchanged for {CREATING_GRACE_S:.0f} s)")
        try:
            fd = os.open(path / LOCK_NAME, flags | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return examine(path, patience)  # its lock appeared meanwhile
        except OSError as e:
            return Finding(None, f"cannot create its lock file: {e}")
    except OSError as e:
        return Finding(None, f"cannot open its lock file: {e}")
    try:
        return _take(path, fd, patience or Patience())
    except BaseException:
        os.close(fd)
        raise


def _take(path: Path, fd: int, patience: Patience) -> Finding:
    """Lock ``fd`` (``path``'s lock file), or leave it to a living taker, or wait (within
    ``patience``) for processes that only inherited it. Closes ``fd`` unless it returns it."""
    unseen = 0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            # free: a dead owner's, or a living owner's that just removed the directory (the
            # lock file is unlinked before the lock is let go): only the former is still the
            # lock file at its place
            try:
                here = os.lstat(path / LOCK_NAME)
            except FileNotFoundError:
                here = None
            st = os.fstat(fd)
            if here is None or (here.st_dev, here.st_ino) != (st.st_dev, st.st_ino):
                os.close(fd)
                return Finding(None)
            return Finding(fd)
        takers = _takers(fd)
        if takers is None or any(_alive(p) for p in takers):
            os.close(fd)
            return Finding(None)        # a living owner (or no way to tell: fail closed)
        if not takers:                  # let go between the two looks: try again (a lock
            unseen += 1                 # /proc/locks never shows counts as a living owner's)
            if unseen > 3:
                os.close(fd)
                return Finding(None)
            continue
        if not os.path.lexists(path):
            os.close(fd)
            return Finding(None)        # removed by whoever holds it (a teardown child)
        if patience.left() <= 0:
            holders = ", ".join(str(p) for p in _holders(fd)) or "unknown"
            os.close(fd)
            return Finding(None, f"its lock's taker (pid {', '.join(map(str, takers))}) is "
                           f"gone but pid(s) {holders} it forked still hold it")
        time.sleep(_POLL_S)


def _takers(fd: int) -> list[int] | None:
    """The pids that took the flocks on ``fd``'s file, as ``/proc/locks`` shows them (the
    process that called ``flock``, dead or alive; 0 when it is dead and invisible from this
    pid namespace), or ``None`` when that cannot be read."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    exact: list[int] = []
    same_inode: list[int] = []  # where the kernel's device number differs from stat's (btrfs)
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; waiters have "->" after "1:"
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            pid = int(fields[4])
        except ValueError:
            return None
        if fields[5] == key:
            exact.append(pid)
        elif fields[5].rsplit(":", 1)[-1] == str(st.st_ino):
            same_inode.append(pid)
    # a wrong match costs a wait or a skip, never a takeover: only a free lock is ever taken
    return exact or same_inode


def _alive(pid: int) -> bool:
    """Is ``pid`` a living process (not a zombie)? Unknown counts as alive."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X", b"x")


def other_pids() -> list[int]:
    """The pids in /proc, this process's left out."""
    me = os.getpid()
    return [int(n) for n in os.listdir("/proc") if n.isdigit() and int(n) != me]


def _holders(fd: int) -> list[int]:
    """Processes with ``fd``'s file open (a look through /proc/*/fd, for the report only)."""
    st = os.fstat(fd)
    out = []
    for name in other_pids():
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for n in fds:
            try:
                o = os.stat(f"/proc/{name}/fd/{n}")
            except OSError:
                continue
            if (o.st_dev, o.st_ino) == (st.st_dev, st.st_ino):
                out.append(name)
                break
    return out


def remove(path: Path, fd: int | None) -> None:
    """Remove an owned state directory: everything, then the lock file, then the lock."""
    import shutil  # lazy: off the run path's import cost

    try:
        try:
            entries = list(os.scandir(path))
        except FileNotFoundError:
            return
        for e in entries:
            if e.name == LOCK_NAME:
                continue
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path / LOCK_NAME)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(path)
    finally:
        release(fd)
