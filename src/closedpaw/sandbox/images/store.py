"""The image store: named, read-only root filesystems, each with a small manifest.

Layout under the store root (default ``/var/lib/closedpaw/images``)::

    <name>/manifest.json             name, digest, created, size, source, rootfs
    <name>/rootfs-<digest>-<nonce>/  the root filesystem, never written once installed
    .base/                           build caches (the debootstrap base of built images)
    .tmp-*                           images being built or imported (removed on failure)

An image is installed atomically: it is built in a ``.tmp-*`` directory, its digest is
computed over the whole tree (paths, types, modes, owners, file contents, link targets), the
tree is renamed into place under a name of its own digest, and only then does the manifest
switch to it. Sandboxes never write to a root filesystem: they see it as the lower layer of a
per-sandbox overlay. A root filesystem that a rebuild or ``rm`` replaced is deleted as soon as
no overlay uses it any more (at once, or at the next install or removal), so running
sandboxes never lose files under them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from closedpaw.errors import ImageError, ImageNotFound, ImageRejected, SpecError

__all__ = ["HOST_IMAGE", "IMAGE_NAME", "Image", "ImageStore", "prepare_rootfs", "tree_digest",
           "validate_name"]

HOST_IMAGE = "host"
IMAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_FORMAT = 2
_ROOTFS_DIR = re.compile(r"rootfs-[0-9a-f]{16}-[0-9a-f]{8}")

# Directories every image root gets so runtimes never need to create mount points in it.
_MOUNT_POINTS = ("proc", "dev", "sys", "run", "input", "output", "code")
_ETC = {
    "etc/hosts": "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost\n",
    "etc/hostname": "sandbox\n",
    "etc/resolv.conf": "",
}


def validate_name(name: object, field_name: str = "image") -> str:
    """Return ``name`` if it is a valid image name, else raise :class:`SpecError`."""
    if not isinstance(name, str) or not IMAGE_NAME.match(name):
        raise SpecError(field_name, f"{name!r} is not an image name (lower-case letters, "
                        "digits, '.', '_', '-'; at most 63 characters)")
    return name


@dataclass(frozen=True)
class Image:
    """One installed image. ``rootfs`` is read-only by convention and by overlay."""

    name: str
    digest: str
    created: str
    size: int
    source: dict[str, Any] = field(default_factory=dict)
    rootfs: Path = Path("/")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rootfs"] = str(self.rootfs)
        return d


def tree_digest(root: Path) -> tuple[str, int]:
    """``("sha256:<hex>", total bytes)`` of a whole tree; links are never followed."""
    h = hashlib.sha256(b"closedpaw-tree-v1\n")
    total = 0

    def walk(d: str, rel: str) -> None:
        nonlocal total
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            st = e.stat(follow_symlinks=False)
            r = f"{rel}/{e.name}"
            kind = stat.S_IFMT(st.st_mode)
            h.update(f"{r}\0{kind:o}\0{stat.S_IMODE(st.st_mode):o}\0{st.st_uid}\0{st.st_gid}\0"
                     .encode("utf-8", "surrogateescape"))
            if stat.S_ISLNK(st.st_mode):
                h.update(os.fsencode(os.readlink(e.path)) + b"\0")
            elif stat.S_ISREG(st.st_mode):
                total += st.st_size
                fh = hashlib.sha256()
                with open(e.path, "rb") as f:
                    while chunk := f.read(1 << 20):
                        fh.update(chunk)
                h.update(fh.digest())
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                h.update(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}\0".encode())
            if stat.S_ISDIR(st.st_mode):
                walk(e.path, r)

    walk(str(root), "")
    return "sha256:" + h.hexdigest(), total


def prepare_rootfs(rootfs: Path) -> None:
    """Make a root filesystem fit to run sandboxes: mount points, ``/tmp`` 1777, and a
    neutral ``/etc/hosts``, hostname and empty resolv.conf (nothing of the build host).

    Every step works relative to directory descriptors and never follows a link: the tree
    may come from an untrusted image whose ``/etc`` or ``/tmp`` is a link to the host's.
    """
    os.chmod(rootfs, 0o755)
    root_fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for d in _MOUNT_POINTS:
            os.close(_real_dir(root_fd, d, 0o755, replace=True))
        tmp_fd = _real_dir(root_fd, "tmp", 0o1777, replace=True)
        try:
            os.fchmod(tmp_fd, 0o1777)  # runc gives a tmpfs the mode of its mount point
        finally:
            os.close(tmp_fd)
        etc_fd = _real_dir(root_fd, "etc", 0o755, replace=False)
        try:
            for rel, text in _ETC.items():
                name = rel.split("/", 1)[1]
                try:
                    st = os.stat(name, dir_fd=etc_fd, follow_symlinks=False)
                except FileNotFoundError:
                    pass
                else:
                    if stat.S_ISDIR(st.st_mode):
                        raise ImageRejected(f"/{rel} is a directory in this image")
                    os.unlink(name, dir_fd=etc_fd)
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o644, dir_fd=etc_fd)
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                    os.fchmod(f.fileno(), 0o644)
        finally:
            os.close(etc_fd)
    finally:
        os.close(root_fd)


def _real_dir(parent_fd: int, name: str, mode: int, *, replace: bool) -> int:
    """Open ``name`` under ``parent_fd`` as a real directory, creating it if missing. Anything
    else there (a link, a file) is replaced when ``replace``, else the image is refused."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.mkdir(name, mode, dir_fd=parent_fd)
    else:
        if not stat.S_ISDIR(st.st_mode):
            if not replace:
                raise ImageRejected(f"/{name} is not a directory in this image (a link or a "
                                    "file); refusing to write through it")
            os.unlink(name, dir_fd=parent_fd)
            os.mkdir(name, mode, dir_fd=parent_fd)
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                   dir_fd=parent_fd)


class ImageStore:
    """Images on disk under ``root``. Safe to share between processes (a file lock guards
    installs and removals)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()

    # -- reading ---------------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        return self.root / validate_name(name)

    def exists(self, name: str) -> bool:
        return (self._dir(name) / "manifest.json").is_file()

    def get(self, name: str) -> Image:
        d = self._dir(name)
        try:
            data = json.loads((d / "manifest.json").read_text())
        except FileNotFoundError:
            known = ", ".join(["host", *(i.name for i in self.list())])
            hint = (f"; build it with 'closedpaw image build {name}'"
                    if name in ("python", "node", "shell", "multi") else "")
            raise ImageNotFound(f"image {name!r} is not in the store {self.root} "
                                f"(available: {known}){hint}") from None
        except (OSError, ValueError) as e:
            raise ImageError(f"image {name!r}: unreadable manifest ({e})") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ImageError(f"image {name!r}: manifest of an unknown format; rebuild it")
        if data.get("name") != name:
            raise ImageError(f"image {name!r}: its manifest names {data.get('name')!r}")
        rootfs = data.get("rootfs", "")
        if not isinstance(rootfs, str) or not _ROOTFS_DIR.fullmatch(rootfs):
            raise ImageError(f"image {name!r}: manifest names no valid root; rebuild it")
        return Image(name=data["name"], digest=data["digest"], created=data["created"],
                     size=int(data["size"]), source=dict(data.get("source", {})),
                     rootfs=d / rootfs)

    def list(self) -> list[Image]:
        if not self.root.is_dir():
            return []
        out = []
        for d in sorted(self.root.iterdir()):
            if IMAGE_NAME.match(d.name) and (d / "manifest.json").is_file():
                with contextlib.suppress(ImageError):
                    out.append(self.get(d.name))
        return out

    def verify(self, name: str) -> bool:
        """Recompute the digest of an installed image and compare it with its manifest."""
        img = self.get(name)
        return tree_digest(img.rootfs)[0] == img.digest

    # -- writing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock on the whole store (builds, installs, removals)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o755)
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except PermissionError:
            raise ImageError(f"the image store {self.root} is not writable by this user; "
                             "changing images needs root") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        """A fresh build directory; it is removed unless :meth:`install` consumed it."""
        validate_name(name)
        if name == HOST_IMAGE:
            raise ImageError("'host' is the built-in host-bind image; choose another name")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=self.root))
        try:
            yield tmp
        finally:
            if tmp.exists():
                remove_tree(tmp)

    def install(self, name: str, staged: Path, source: dict[str, Any]) -> Image:
        """Digest ``staged/rootfs``, write the manifest and move it into place atomically,
        replacing an image of the same name. Call with :meth:`lock` held."""
        rootfs = staged / "rootfs"
        prepare_rootfs(rootfs)
        digest, size = tree_digest(rootfs)
        # Unique per install: a reinstall never reuses (or trusts) an existing directory.
        version = f"rootfs-{digest.split(':', 1)[1][:16]}-{secrets.token_hex(4)}"
        manifest = {"format": _FORMAT, "name": name, "digest": digest,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "size": size, "source": source, "rootfs": version}
        final = self._dir(name)
        final.mkdir(mode=0o755, exist_ok=True)
        os.rename(rootfs, final / version)
        tmp = final / ".manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, final / "manifest.json")
        self._sweep(name, keep=version)
        return self.get(name)

    def remove(self, name: str) -> None:
        """Remove an image. Root filesystems still under a running sandbox's overlay stay
        until it ends (they are swept at the next install or removal)."""
        if name == HOST_IMAGE:
            raise ImageError("'host' is built in and cannot be removed")
        self.get(name)  # raises ImageNotFound
        with self.lock():
            os.unlink(self._dir(name) / "manifest.json")
            self._sweep(name, keep=None)

    def _sweep(self, name: str, keep: str | None) -> None:
        """Delete everything of ``name`` but its manifest and ``keep`` that no overlay uses
        (replaced roots, and leftovers of older store formats)."""
        d = self._dir(name)
        used = overlay_lower_dirs()
        for p in d.iterdir():
            if p.name not in ("manifest.json", keep) and str(p) not in used:
                if p.is_dir() and not p.is_symlink():
                    with contextlib.suppress(ImageError):  # mounted inside: next sweep
                        remove_tree(p)
                else:
                    p.unlink()
        if keep is None and not any(d.iterdir()):
            d.rmdir()


def overlay_lower_dirs(mountinfo: Path = Path("/proc/self/mountinfo")) -> set[str]:
    """Every lower directory of every overlay mounted on this host."""
    out: set[str] = set()
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        if " - overlay " not in line:
            continue
        for opt in line.rsplit(" ", 1)[-1].split(","):
            if opt.startswith("lowerdir="):
                for p in opt[len("lowerdir="):].split(":"):
                    out.add(p.replace("\\040", " ").replace("\\011", "\t"))
    return out


def mounts_under(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str]:
    """Mount points at or below ``path``."""
    base = os.path.abspath(path)
    out: list[str] = []
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 4:
            mp = fields[4].replace("\\040", " ").replace("\\011", "\t")
            if mp == base or mp.startswith(base + "/"):
                out.append(mp)
    return out


def remove_tree(path: Path) -> None:
    """Remove a tree that may hold read-only directories (as image trees do). Refuses when
    anything is mounted inside it: deleting through a mount would delete what it shows."""
    mounted = mounts_under(path)
    if mounted:
        raise ImageError(f"refusing to remove {path}: still mounted there: {mounted}")

    def onerror(func: Any, p: str, exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            func(p)
    shutil.rmtree(path, onerror=onerror)
