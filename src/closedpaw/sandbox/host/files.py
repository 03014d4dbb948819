"""Files in and out of a sandbox, never following links out of where they belong.

``/input`` is a read-only copy of a host file or directory (symlinks are copied as links, so
they can only resolve inside the sandbox). ``/output`` is a size- and inode-capped tmpfs on
the host; after a run its regular files and directories are copied into the destination
with ``openat``-style calls and ``O_NOFOLLOW``, so neither a link left by the sandbox nor a
link already in the destination can redirect a write elsewhere on the host.

The copy is bounded by what the sandbox really stored, never by what a file claims:

- at most ``max_bytes`` (the /output cap) are written in all, counted as data written, so a
  file growing or being replaced during a live :func:`collect_output` cannot push more;
- a file whose apparent size exceeds the cap is refused (a sparse 3 GiB or 8 EiB file), and
  holes are never written as data: only the data segments (``SEEK_DATA``/``SEEK_HOLE``) are
  copied and the destination gets the same holes;
- each inode is copied once: further hard links to it are reported, not multiplied;
- the copy stops at ``deadline`` (a ``time.monotonic()`` value) and reports what it left;
- a file that changed while it was copied is dropped and reported;
- an existing entry of the destination (file, link or directory) is never replaced or merged
  into unless ``overwrite``; conflicts are reported like skipped links. Files are written
  under a temporary name beside their final one and linked (or, with ``overwrite``, renamed)
  into place, so the destination never shows a half-written file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from pathlib import Path

from closedpaw.errors import FileTransferError, ImageError
from closedpaw.sandbox.result import SkippedFile

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes

__all__ = ["COLLECT_GRACE_S", "MAX_OUTPUT_ENTRIES", "collect_output", "mount_output",
           "mount_root_view", "mount_staging", "stage_input", "staged_size", "unmount_output"]

MAX_OUTPUT_ENTRIES = 10_000
#: a run's /output copy ends at the run's deadline, but gets at least this long after the
#: program ended (so a program that finishes just before its timeout still gets its files)
COLLECT_GRACE_S = 10.0
MAX_DEPTH = 64
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
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


def staged_size(src: Path) -> tuple[int, int]:
    """Bytes and entries ``stage_input(src)`` will copy (an ``lstat`` walk, links not
    followed), to size the tmpfs it is staged on."""
    st = os.lstat(src)
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size, 1
    size, n = 0, 1
    for root, dirs, files in os.walk(src):
        for name in (*dirs, *files):
            size += os.lstat(os.path.join(root, name)).st_size
            n += 1
    return size, n


def mount_staging(path: Path, size_bytes: int, entries: int) -> None:
    """A private tmpfs for what the host stages for a sandbox (``/input``, ``/code``): its
    binds then show paths inside this tmpfs in the sandbox's ``/proc/self/mountinfo``, not
    where the state directory lives on the host. Sized to what is staged, plus room for
    directory blocks; read-only for the sandbox either way (the binds are ``ro``)."""
    path.mkdir(mode=0o755, exist_ok=True)
    size_kb = size_bytes // 1024 + 8 * entries + 1024
    opts = f"size={size_kb}k,nr_inodes={entries + 64},mode=0755".encode()
    rc = _lib().mount(b"tmpfs", str(path).encode(), b"tmpfs",
                      _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, opts)
    if rc != 0:
        err = _errno()
        raise FileTransferError(f"could not mount a tmpfs at {path} for the sandbox's files: "
                                f"{os.strerror(err)} (needs root)")


def mount_root_view(skeleton: Path, empty: Path, target: Path) -> None:
    """Show the host image's shared skeleton at ``target`` (a new directory) through a
    read-only overlay whose layers are named to the kernel as ``/proc/self/fd/N`` of
    descriptors opened for the call: a bind of the skeleton would show its path on the host
    (under the data dir) as the root's line in the sandbox's ``/proc/self/mountinfo``
    (runc), while this one shows ``/`` and those fd paths. ``empty`` (a new empty directory)
    is the bottom layer: an overlay without an upper layer needs two."""
    target.mkdir(mode=0o755)
    empty.mkdir(mode=0o755)
    fds: list[int] = []
    try:
        for d in (skeleton, empty):
            fds.append(os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
        data = f"lowerdir=/proc/self/fd/{fds[0]}:/proc/self/fd/{fds[1]}".encode()
        rc = _lib().mount(b"overlay", str(target).encode(), b"overlay",
                          _MS_RDONLY | _MS_NOSUID | _MS_NODEV, data)
        err = _errno() if rc != 0 else 0
    finally:
        for fd in fds:
            os.close(fd)
    if rc != 0:
        raise ImageError(f"could not show the host image at {target}: {os.strerror(err)} "
                         f"({errno.errorcode.get(err, err)}; needs root and overlayfs)")


def unmount_output(path: Path) -> None:
    if os.path.ismount(path):
        _lib().umount2(str(path).encode(), _MNT_DETACH)


def collect_output(src: Path, dest: Path, *, max_bytes: int | None = None,
                   deadline: float | None = None,
                   overwrite: bool = False) -> tuple[list[str], list[SkippedFile]]:
    """Copy regular files and directories from ``src`` into ``dest`` without following links.

    ``max_bytes`` caps the bytes written in all (default: the size of the filesystem at
    ``src``, i.e. the /output tmpfs); ``deadline`` is a ``time.monotonic()`` value after which
    the copy stops; ``overwrite`` lets files replace existing ones and directories merge into
    existing ones. Returns the copied paths and the skipped ones with why.
    """
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
    if max_bytes is None:
        vfs = os.fstatvfs(sfd)
        max_bytes = vfs.f_blocks * vfs.f_frsize
    job = _Copy(cap=max_bytes, left=max_bytes, deadline=deadline, overwrite=overwrite)
    try:
        _copy_tree(job, sfd, dfd, "", 0)
    except _Stop:
        pass
    finally:
        os.close(sfd)
        os.close(dfd)
    return job.copied, job.skipped


class _Stop(Exception):
    """The copy as a whole ends here (deadline or cap); the reason is already recorded."""


class _Copy:
    __slots__ = ("cap", "copied", "deadline", "inodes", "left", "overwrite", "skipped")

    def __init__(self, *, cap: int, left: int, deadline: float | None,
                 overwrite: bool) -> None:
        self.cap = cap
        self.left = left
        self.deadline = deadline
        self.overwrite = overwrite
        self.copied: list[str] = []
        self.skipped: list[SkippedFile] = []
        self.inodes: dict[tuple[int, int], str] = {}

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append(SkippedFile(path, reason))

    def check_time(self, path: str) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.skip(path, "the copy's deadline passed: this and the rest of /output "
                            "were not copied")
            raise _Stop


def _copy_tree(job: _Copy, sfd: int, dfd: int, rel: str, depth: int) -> None:
    with os.scandir(sfd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        path = f"{rel}{e.name}"
        if len(job.copied) + len(job.skipped) >= MAX_OUTPUT_ENTRIES:
            job.skip(path, f"more than {MAX_OUTPUT_ENTRIES} entries")
            raise _Stop
        job.check_time(path)
        try:
            st = os.stat(e.name, dir_fd=sfd, follow_symlinks=False)
        except OSError:
            job.skip(path, "vanished")
            continue
        if stat.S_ISLNK(st.st_mode):
            job.skip(path, "symbolic link (not copied)")
        elif stat.S_ISDIR(st.st_mode):
            if depth >= MAX_DEPTH:
                job.skip(path, f"nested deeper than {MAX_DEPTH}")
                continue
            _copy_dir(job, sfd, dfd, e.name, path, depth)
        elif stat.S_ISREG(st.st_mode):
            why = _copy_file(job, sfd, dfd, e.name, path)
            if why:
                job.skip(path, why)
            else:
                job.copied.append(path)
        else:
            job.skip(path, "not a regular file or directory")


def _copy_dir(job: _Copy, sfd: int, dfd: int, name: str, path: str, depth: int) -> None:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        os.mkdir(name, 0o755, dir_fd=dfd)
    except FileExistsError:
        if not job.overwrite:
            job.skip(path + "/", "exists on the host: not merged into (allow with overwrite)")
            return
    except OSError as e:
        job.skip(path + "/", f"cannot create directory: {e.strerror}")
        return
    try:
        child_d = os.open(name, flags, dir_fd=dfd)
    except OSError:
        job.skip(path + "/", "destination exists and is not a directory (or is a symbolic "
                             "link)")
        return
    try:
        child_s = os.open(name, flags, dir_fd=sfd)
    except OSError:
        os.close(child_d)
        job.skip(path + "/", "vanished")
        return
    try:
        _copy_tree(job, child_s, child_d, path + "/", depth + 1)
    finally:
        os.close(child_s)
        os.close(child_d)


_CHUNK = 1 << 20


def _copy_file(job: _Copy, sfd: int, dfd: int, name: str, path: str) -> str | None:
    try:
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                      dir_fd=sfd)
    except OSError:
        return "vanished or replaced by a link"
    tmp: str | None = None
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        first = job.inodes.setdefault((st.st_dev, st.st_ino), path)
        if first != path:
            return f"hard link to {first} (copied once)"
        if st.st_size > job.cap:
            return (f"apparent size {st.st_size} bytes exceeds the output cap of {job.cap} "
                    f"bytes ({st.st_blocks * 512} bytes stored: a sparse file)")
        if min(st.st_size, st.st_blocks * 512) > job.left:
            return f"the output cap of {job.cap} bytes was reached"
        if not job.overwrite and _exists(dfd, name):
            return "exists on the host: not replaced (allow with overwrite)"
        tmp = f".closedpaw-{os.urandom(6).hex()}.part"
        dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o644, dir_fd=dfd)
        try:
            why = _copy_data(job, src, dst, st.st_size, path)
        finally:
            os.close(dst)
        if why:
            return why
        after = os.fstat(src)
        if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            return "changed while it was copied (not copied)"
        why = _land(dfd, tmp, name, job.overwrite)
        if why is None:
            tmp = None
        return why
    except OSError as e:
        return f"copy failed: {e.strerror}"
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
        with contextlib.suppress(OSError):
            os.close(src)


def _exists(dfd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _copy_data(job: _Copy, src: int, dst: int, size: int, path: str) -> str | None:
    """Copy the data segments of ``src`` below ``size`` to the same offsets of ``dst``; holes
    stay holes. Every byte written is charged to the job's budget."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(src, pos, os.SEEK_DATA)
            end = min(os.lseek(src, start, os.SEEK_HOLE), size)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no data past pos: the rest is a hole
                break
            if e.errno != errno.EINVAL:  # EINVAL: no SEEK_DATA here; copy as data
                raise
            start, end = pos, size
        if start >= size:
            break
        while start < end:
            job.check_time(path)
            want = min(_CHUNK, end - start)
            if want > job.left:
                return f"the output cap of {job.cap} bytes was reached during the copy"
            chunk = os.pread(src, want, start)
            if not chunk:
                return "changed while it was copied (not copied)"
            view = memoryview(chunk)
            off = start
            while view:
                n = os.pwrite(dst, view, off)
                view, off = view[n:], off + n
            job.left -= len(chunk)
            start += len(chunk)
        pos = end
    os.ftruncate(dst, size)
    return None


def _land(dfd: int, tmp: str, name: str, overwrite: bool) -> str | None:
    """Give the finished file ``tmp`` its name. Without ``overwrite`` an entry that appeared
    meanwhile is kept (``link`` never replaces); with it, ``rename`` replaces a file or link
    atomically (never writing through it) and fails on a directory."""
    if overwrite:
        try:
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except (IsADirectoryError, NotADirectoryError):
            return "destination is a directory"
        return None
    try:
        os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
    except FileExistsError:
        return "exists on the host: not replaced (allow with overwrite)"
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP):
            raise
        if _exists(dfd, name):  # no hard links on this filesystem
            return "exists on the host: not replaced (allow with overwrite)"
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        return None
    os.unlink(tmp, dir_fd=dfd)
    return None
