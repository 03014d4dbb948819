"""Who owns a sandbox's state: an ``flock`` on ``<state dir>/.lock``, held for its whole life.

:func:`claim` creates the state directory under a temporary name, locks its ``.lock`` file
and only then renames it into place, so a directory that can be seen under its real name is
always locked by a living owner - or its owner is dead. The lock belongs to the open file
description: a forked teardown child (the CLI's) keeps holding it after the parent exits, and
the kernel drops it when the last holder dies, however it died. :func:`orphaned` takes the
lock of a sandbox whose owner is gone, which is how ``closedpaw gc`` tells leftovers of a
killed process from live sandboxes of another one - no pid files, no pid reuse.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path

__all__ = ["LOCK_NAME", "NEW_PREFIX", "claim", "orphaned", "release", "remove"]

LOCK_NAME = ".lock"
NEW_PREFIX = ".new-"
# A directory still under its temporary name is being created; after this long it is not.
CREATING_GRACE_S = 60.0


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


def orphaned(path: Path) -> int | None:
    """Take over ``path`` if its owner is gone: returns a locked fd, or ``None`` while a
    living process owns it (or it is still being created, or is already gone)."""
    try:
        age = time.time() - os.lstat(path).st_mtime
    except FileNotFoundError:
        return None
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
            return None
        try:
            fd = os.open(path / LOCK_NAME, flags | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            return None
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


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
