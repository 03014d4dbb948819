"""A skill package as a tree of files: checked, copied and hashed without ever following a
link out of it or trusting what a tarball says about itself.

Refused (nothing is installed): absolute or ``..`` members, symbolic links whose target is
absolute or leads out of the tree, hard links (a hard link may be another name of a file
outside the package, e.g. ``/etc/shadow``), device nodes, FIFOs and sockets, setuid/setgid
bits, more than :data:`MAX_ENTRIES` entries or :data:`MAX_BYTES` bytes.

The digest is SHA-256 over, for every entry in sorted path order, its path, type, permission
bits and its contents (files) or target (links): the same tree always hashes the same, and a
changed byte, mode, name or link changes it.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import tarfile
from pathlib import Path

from closedpaw.errors import SkillRejected

__all__ = ["MAX_BYTES", "MAX_ENTRIES", "copy_tree", "hash_tree", "unpack_tarball"]

MAX_ENTRIES = 10_000
MAX_BYTES = 64 * 1024 * 1024
_CHUNK = 1024 * 1024


def _check_link(rel: str, target: str) -> None:
    if not target or target.startswith("/") or "\0" in target:
        raise SkillRejected(f"{rel}: a symbolic link to {target!r} (absolute links are "
                            "refused: they lead out of the package)")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        raise SkillRejected(f"{rel}: a symbolic link to {target!r} leads out of the package")


def _check_mode(rel: str, mode: int) -> None:
    if mode & (stat.S_ISUID | stat.S_ISGID):
        raise SkillRejected(f"{rel}: setuid/setgid bits are refused")


def _check_name(rel: str) -> str:
    if not rel or "\0" in rel or rel.startswith("/"):
        raise SkillRejected(f"{rel!r}: an absolute member is refused")
    parts = rel.split("/")
    if ".." in parts:
        raise SkillRejected(f"{rel!r}: a member climbing out with '..' is refused")
    norm = posixpath.normpath(rel)
    if norm in (".", "") or norm.startswith("../"):
        raise SkillRejected(f"{rel!r}: not a member inside the package")
    return norm


class _Budget:
    def __init__(self) -> None:
        self.entries = 0
        self.bytes = 0

    def take(self, rel: str, size: int) -> None:
        self.entries += 1
        self.bytes += size
        if self.entries > MAX_ENTRIES:
            raise SkillRejected(f"more than {MAX_ENTRIES} entries")
        if self.bytes > MAX_BYTES:
            raise SkillRejected(f"{rel}: the package is larger than {MAX_BYTES} bytes")


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the directory ``src`` into the new directory ``dst`` after checking every entry.
    Each file is opened with ``O_NOFOLLOW`` and must still be the entry that was checked (same
    device and inode), so a swap during the copy fails rather than copying something else."""
    st = os.lstat(src)
    if not stat.S_ISDIR(st.st_mode):
        raise SkillRejected(f"{src}: not a directory")
    dst.mkdir(mode=0o755)
    budget = _Budget()
    root_fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for dirpath, dirnames, filenames, dfd in os.fwalk(dir_fd=root_fd, follow_symlinks=False):
            rel_dir = "" if dirpath == "." else posixpath.normpath(dirpath)
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                rel = posixpath.join(rel_dir, name) if rel_dir else name
                est = os.lstat(name, dir_fd=dfd)
                m = est.st_mode
                _check_mode(rel, m)
                out = dst / rel
                if stat.S_ISLNK(m):
                    target = os.readlink(name, dir_fd=dfd)
                    _check_link(rel, target)
                    budget.take(rel, len(target))
                    os.symlink(target, out)
                elif stat.S_ISDIR(m):
                    budget.take(rel, 0)
                    out.mkdir(mode=0o755)
                    os.chmod(out, stat.S_IMODE(m) & 0o755 | 0o700)
                elif stat.S_ISREG(m):
                    if est.st_nlink > 1:
                        raise SkillRejected(f"{rel}: a hard link (it may be another name of a "
                                            "file outside the package) is refused")
                    budget.take(rel, est.st_size)
                    _copy_file(name, dfd, est, out, rel)
                else:
                    raise SkillRejected(f"{rel}: a {_kind(m)} is refused (only files, "
                                        "directories and links inside the package)")
    finally:
        os.close(root_fd)


def _kind(m: int) -> str:
    if stat.S_ISCHR(m) or stat.S_ISBLK(m):
        return "device node"
    if stat.S_ISFIFO(m):
        return "FIFO"
    if stat.S_ISSOCK(m):
        return "socket"
    return "special file"


def _copy_file(name: str, dfd: int, est: os.stat_result, out: Path, rel: str) -> None:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
    try:
        fst = os.fstat(fd)
        if (fst.st_dev, fst.st_ino) != (est.st_dev, est.st_ino) or not stat.S_ISREG(
                fst.st_mode):
            raise SkillRejected(f"{rel}: changed while being copied")
        ofd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600)
        with os.fdopen(ofd, "wb") as f:
            left = est.st_size
            while True:
                chunk = os.read(fd, _CHUNK)
                if not chunk:
                    break
                left -= len(chunk)
                if left < 0:
                    raise SkillRejected(f"{rel}: grew while being copied")
                f.write(chunk)
        os.chmod(out, stat.S_IMODE(est.st_mode) & 0o755 | 0o400)
    finally:
        os.close(fd)


def unpack_tarball(tar_path: Path, dst: Path) -> None:
    """Unpack a (gzip/bz2/xz or plain) tarball into the new directory ``dst`` with our own
    writer: each member is checked first; nothing from it is ever extracted by tarfile."""
    dst.mkdir(mode=0o755)
    budget = _Budget()
    try:
        tf = tarfile.open(tar_path, "r:*")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError) as e:
        raise SkillRejected(f"{tar_path}: not a readable tarball ({e})") from None
    with tf:
        seen: set[str] = set()
        try:
            members = tf.getmembers()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise SkillRejected(f"{tar_path}: a corrupt tarball ({e})") from None
        for mem in members:
            if mem.isdir() and posixpath.normpath(mem.name) == ".":
                continue   # the package's own top directory ("./")
            rel = _check_name(mem.name)
            if rel in seen:
                raise SkillRejected(f"{rel}: appears twice in the tarball")
            seen.add(rel)
            _check_mode(rel, mem.mode)
            parent = posixpath.dirname(rel)
            if parent:
                # never write through a link the tarball made earlier
                cur = dst
                for part in parent.split("/"):
                    cur = cur / part
                    if cur.is_symlink():
                        raise SkillRejected(f"{rel}: would be written through a link")
                    if not cur.exists():
                        cur.mkdir(mode=0o755)
            out = dst / rel
            if mem.issym():
                _check_link(rel, mem.linkname)
                budget.take(rel, len(mem.linkname))
                os.symlink(mem.linkname, out)
            elif mem.islnk():
                raise SkillRejected(f"{rel}: hard links are refused")
            elif mem.isdir():
                budget.take(rel, 0)
                if not out.is_dir():
                    out.mkdir(mode=0o755)
                os.chmod(out, mem.mode & 0o755 | 0o700)
            elif mem.isreg():
                budget.take(rel, mem.size)
                src = tf.extractfile(mem)
                assert src is not None
                fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as f, src:
                    while chunk := src.read(_CHUNK):
                        f.write(chunk)
                os.chmod(out, mem.mode & 0o755 | 0o400)
            else:
                kind = ("device node" if mem.ischr() or mem.isblk() else
                        "FIFO" if mem.isfifo() else "special member")
                raise SkillRejected(f"{rel}: a {kind} is refused")


def hash_tree(root: Path) -> str:
    """SHA-256 over every entry's path, type, permission bits and contents or link target."""
    h = hashlib.sha256()
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        entries: list[tuple[str, int, str]] = []
        for dirpath, dirnames, filenames, dfd in os.fwalk(dir_fd=root_fd, follow_symlinks=False):
            rel_dir = "" if dirpath == "." else posixpath.normpath(dirpath)
            for name in dirnames + filenames:
                rel = posixpath.join(rel_dir, name) if rel_dir else name
                st = os.lstat(name, dir_fd=dfd)
                if stat.S_ISLNK(st.st_mode):
                    body = "L:" + os.readlink(name, dir_fd=dfd)
                elif stat.S_ISDIR(st.st_mode):
                    body = "D"
                elif stat.S_ISREG(st.st_mode):
                    body = "F:" + _file_sha(name, dfd)
                else:
                    body = f"X:{stat.S_IFMT(st.st_mode):o}"  # anything else: changes the hash
                entries.append((rel, stat.S_IMODE(st.st_mode), body))
        for rel, mode, body in sorted(entries):
            h.update(f"{rel}\0{mode:o}\0{body}\n".encode("utf-8", "surrogateescape"))
    finally:
        os.close(root_fd)
    return h.hexdigest()


def _file_sha(name: str, dfd: int) -> str:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
    h = hashlib.sha256()
    try:
        while chunk := os.read(fd, _CHUNK):
            h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()
