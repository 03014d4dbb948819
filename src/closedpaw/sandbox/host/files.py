"""Files in and out of a sandbox, never following links out of where they belong.

``/input`` is a read-only copy of a host file or directory (symlinks are copied as links, so
they can only resolve inside the sandbox). ``/output`` is a size- and inode-capped tmpfs on
the host; after a run its regular files and directories are copied into the destination
with ``openat``-style calls and ``O_NOFOLLOW``, so neither a link left by the sandbox nor a
link already in the destination can redirect a write elsewhere on the host.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from closedpaw.errors import FileTransferError
from closedpaw.sandbox.result import SkippedFile

if TYPE_CHECKING:
    import ctypes

__all__ = ["MAX_OUTPUT_ENTRIES", "collect_output", "mount_output", "stage_input",
           "unmount_output"]

MAX_OUTPUT_ENTRIES = 10_000
MAX_DEPTH = 64
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MNT_DETACH = 2
_libc = None


def _lib() -> ctypes.CDLL:
    """libc for mount(2)/umount2(2); ctypes loads only when /output is used."""
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


def stage_input(src: Path, dest: Path) -> None:
    """Copy ``src`` (file or directory) into ``dest`` (created), readable by the sandbox user."""
    import shutil  # lazy: only runs with --input

    try:
        st = os.lstat(src)
    except FileNotFoundError:
        raise FileTransferError(f"input {src} does not exist") from None
    except PermissionError:
        raise FileTransferError(f"input {src} is not readable") from None
    try:
        if stat.S_ISDIR(st.st_mode):
            shutil.copytree(src, dest, symlinks=True)
        elif stat.S_ISREG(st.st_mode):
            dest.mkdir(parents=True)
            shutil.copy2(src, dest / src.name, follow_symlinks=False)
        else:
            raise FileTransferError(f"input {src} is not a regular file or directory")
    except shutil.Error as e:
        raise FileTransferError(f"could not copy input {src}: {e}") from None
    except OSError as e:
        raise FileTransferError(f"could not copy input {src}: {e.strerror}") from None
    for root, dirs, files in os.walk(dest):
        os.chmod(root, 0o755)
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                mode = os.lstat(p).st_mode
                os.chmod(p, 0o755 if mode & 0o111 else 0o644)
        for d in dirs:
            p = os.path.join(root, d)
            if os.path.islink(p):
                continue


def mount_output(path: Path, size_mb: int, uid: int = 65534, gid: int = 65534) -> None:
    """Mount a fresh tmpfs at ``path`` capped at ``size_mb`` and 16k inodes, owned by uid."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size_mb}m,nr_inodes=16384,mode=0755,uid={uid},gid={gid}".encode()
    rc = _lib().mount(b"tmpfs", str(path).encode(), b"tmpfs",
                      _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, opts)
    if rc != 0:
        err = _errno()
        raise FileTransferError(f"could not mount the /output tmpfs at {path}: "
                                f"{os.strerror(err)} (needs root)")


def unmount_output(path: Path) -> None:
    if os.path.ismount(path):
        _lib().umount2(str(path).encode(), _MNT_DETACH)


def collect_output(src: Path, dest: Path) -> tuple[list[str], list[SkippedFile]]:
    """Copy regular files and directories from ``src`` into ``dest`` without following links."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        dfd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise FileTransferError(f"output directory {dest}: {e.strerror}") from None
    try:
        sfd = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        os.close(dfd)
        return [], []
    copied: list[str] = []
    skipped: list[SkippedFile] = []
    try:
        _copy_tree(sfd, dfd, "", copied, skipped, 0)
    finally:
        os.close(sfd)
        os.close(dfd)
    return copied, skipped


def _copy_tree(sfd: int, dfd: int, rel: str, copied: list[str], skipped: list[SkippedFile],
               depth: int) -> None:
    with os.scandir(sfd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        path = f"{rel}{e.name}"
        if len(copied) + len(skipped) >= MAX_OUTPUT_ENTRIES:
            skipped.append(SkippedFile(path, f"more than {MAX_OUTPUT_ENTRIES} entries"))
            return
        try:
            st = os.stat(e.name, dir_fd=sfd, follow_symlinks=False)
        except OSError:
            skipped.append(SkippedFile(path, "vanished"))
            continue
        if stat.S_ISLNK(st.st_mode):
            skipped.append(SkippedFile(path, "symbolic link (not copied)"))
        elif stat.S_ISDIR(st.st_mode):
            if depth >= MAX_DEPTH:
                skipped.append(SkippedFile(path, f"nested deeper than {MAX_DEPTH}"))
                continue
            _copy_dir(sfd, dfd, e.name, path, copied, skipped, depth)
        elif stat.S_ISREG(st.st_mode):
            why = _copy_file(sfd, dfd, e.name)
            if why:
                skipped.append(SkippedFile(path, why))
            else:
                copied.append(path)
        else:
            skipped.append(SkippedFile(path, "not a regular file or directory"))


def _copy_dir(sfd: int, dfd: int, name: str, path: str, copied: list[str],
              skipped: list[SkippedFile], depth: int) -> None:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        os.mkdir(name, 0o755, dir_fd=dfd)
    except FileExistsError:
        pass
    except OSError as e:
        skipped.append(SkippedFile(path + "/", f"cannot create directory: {e.strerror}"))
        return
    try:
        child_d = os.open(name, flags, dir_fd=dfd)
    except OSError:
        skipped.append(SkippedFile(path + "/", "destination exists and is not a directory "
                                               "(or is a symbolic link)"))
        return
    try:
        child_s = os.open(name, flags, dir_fd=sfd)
    except OSError:
        os.close(child_d)
        skipped.append(SkippedFile(path + "/", "vanished"))
        return
    try:
        _copy_tree(child_s, child_d, path + "/", copied, skipped, depth + 1)
    finally:
        os.close(child_s)
        os.close(child_d)


def _copy_file(sfd: int, dfd: int, name: str) -> str | None:
    try:
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                      dir_fd=sfd)
    except OSError:
        return "vanished or replaced by a link"
    try:
        if not stat.S_ISREG(os.fstat(src).st_mode):
            return "not a regular file"
        wflags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            dst = os.open(name, wflags, 0o644, dir_fd=dfd)
        except FileExistsError:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                return "destination is a directory"
            os.unlink(name, dir_fd=dfd)  # a file or a link: replace the entry, never write through
            dst = os.open(name, wflags, 0o644, dir_fd=dfd)
        try:
            while True:
                chunk = os.read(src, 1 << 20)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    n = os.write(dst, view)
                    view = view[n:]
        finally:
            os.close(dst)
    except OSError as e:
        return f"copy failed: {e.strerror}"
    finally:
        with contextlib.suppress(OSError):
            os.close(src)
    return None
